"""Per-request state that flows through the pipeline stages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.config.settings import RouteSettings, UpstreamSettings
from gateway.errors import GatewayError
from gateway.forwarded import ClientInfo
from gateway.websockets import OpenWebSockets

# Plain classes with their own ``__init__``, not dataclasses: several are made per request, and
# mypyc compiles a hand-written ``__init__`` (a dataclass's generated one stays interpreted and
# costs over ten times as much).


class Trace:
    """What the access log and the metrics learn about one request as it goes through."""

    __slots__ = ("error", "outcome", "route", "sent", "set_cookie", "status", "upstream", "user")

    def __init__(self) -> None:
        self.route = "-"
        self.upstream = "-"
        self.user = "-"
        self.status = 0
        """The status of the response head the client was sent (0: none went out)."""
        self.sent = 0
        """Response body bytes the client was sent."""
        self.outcome = "ok"
        """How the exchange ended: ``ok``, or ``upstream_aborted`` / ``upstream_timeout`` (the
        upstream failed mid-body), ``client_aborted`` (the client went away), ``client_stalled``
        (it read nothing for ``server.timeouts.send``), ``drain_cut`` (shutdown_grace ran out)."""
        self.error: GatewayError | None = None
        """Why the request failed: the error it was answered with, or the one that cut its
        response short after the head was sent."""
        self.set_cookie: str | None = None
        """A ``Set-Cookie`` value the identity stage wants on whatever answer goes out."""


class RequestContext:
    """What the proxy stage needs of one request that goes upstream."""

    __slots__ = (
        "add_headers",
        "body_timeout_s",
        "client",
        "close_connection",
        "prefix",
        "query",
        "recheck_s",
        "roles",
        "route",
        "send_timeout_s",
        "set_cookie",
        "sid_hash",
        "sockets",
        "still_valid",
        "strip_cookies",
        "strip_headers",
        "trace",
        "upstream",
        "upstream_path",
        "user",
    )

    def __init__(
        self,
        *,
        client: ClientInfo,
        trace: Trace,
        upstream_path: str,
        prefix: str,
        query: str,
        route: RouteSettings,
        upstream: UpstreamSettings,
        sockets: OpenWebSockets,
        add_headers: dict[str, str] | None = None,
        strip_headers: frozenset[str] = frozenset(),
        strip_cookies: frozenset[str] = frozenset(),
        user: str | None = None,
        set_cookie: str | None = None,
        close_connection: bool = False,
        body_timeout_s: float = 60.0,
        send_timeout_s: float = 60.0,
    ) -> None:
        self.client = client
        self.trace = trace
        self.upstream_path = upstream_path
        """The path the upstream receives: the normalised path that routing matched, the
        route's ``strip_prefix`` removed (:class:`gateway.plan.Forward`)."""
        self.prefix = prefix
        """What ``strip_prefix`` removed (``X-Forwarded-Prefix``), or ``""``."""
        self.query = query
        """The raw query string, without the ``?`` (never part of matching)."""
        self.route = route
        self.upstream = upstream
        self.add_headers: dict[str, str] = {} if add_headers is None else add_headers
        """Headers the identity stage wants the upstream to receive (e.g. ``Authorization``)."""
        self.strip_headers = strip_headers
        """Normalised header names (lower case, ``_`` as ``-``) never forwarded from the
        client, whether or not the gateway sets them itself (the configured token header)."""
        self.strip_cookies = strip_cookies
        """Cookie names removed from the ``Cookie`` header before forwarding (the session
        cookie)."""
        self.user = user
        """Username for logs once identity is resolved."""
        self.roles: frozenset[str] = frozenset()
        """The identified user's roles (a WebSocket keeps them for the checks of later
        reloads)."""
        self.sockets = sockets
        """Where a relayed WebSocket of a signed-in user is registered while it is open."""
        self.sid_hash: str | None = None
        """The session (or API token) the identity came from: a WebSocket is registered under
        it."""
        self.still_valid: Callable[[], Awaitable[bool]] | None = None
        """For a WebSocket: checked every ``recheck_s``; the socket is closed when it says no."""
        self.recheck_s = 60.0
        self.close_connection = close_connection
        """Draining: the response says ``Connection: close``."""
        self.body_timeout_s = body_timeout_s
        """``server.timeouts.body``: how long the client may send no request-body bytes."""
        self.send_timeout_s = send_timeout_s
        """``server.timeouts.send``: how long the client may accept no response bytes."""
        self.set_cookie = set_cookie
        """A ``Set-Cookie`` value the identity stage wants on the response (a re-sealed
        session)."""
