"""Per-request state that flows through the pipeline stages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.config.settings import RouteSettings, UpstreamSettings
from gateway.errors import GatewayError
from gateway.forwarded import ClientInfo
from gateway.websockets import OpenWebSockets


@dataclass(slots=True)
class Trace:
    """What the access log and the metrics learn about one request as it goes through."""

    route: str = "-"
    upstream: str = "-"
    user: str = "-"
    status: int = 0
    """The status of the response head the client was sent (0: none went out)."""
    sent: int = 0
    """Response body bytes the client was sent."""
    outcome: str = "ok"
    """How the exchange ended: ``ok``, or ``upstream_aborted`` / ``upstream_timeout`` (the
    upstream failed mid-body), ``client_aborted`` (the client went away), ``client_stalled``
    (it read nothing for ``server.timeouts.send``), ``drain_cut`` (shutdown_grace ran out)."""
    error: GatewayError | None = None
    """Why the request failed: the error it was answered with, or the one that cut its response
    short after the head was sent."""
    set_cookie: str | None = None
    """A ``Set-Cookie`` value the identity stage wants on whatever answer goes out."""


@dataclass(slots=True, kw_only=True)
class RequestContext:
    client: ClientInfo
    trace: Trace
    upstream_path: str
    """The path the upstream receives: the normalised path that routing matched, the route's
    ``strip_prefix`` removed (:class:`gateway.plan.Forward`)."""
    prefix: str
    """What ``strip_prefix`` removed (``X-Forwarded-Prefix``), or ``""``."""
    query: str
    """The raw query string, without the ``?`` (never part of matching)."""
    route: RouteSettings
    upstream: UpstreamSettings
    add_headers: dict[str, str] = field(default_factory=dict)
    """Headers the identity stage wants the upstream to receive (e.g. ``Authorization``)."""
    strip_headers: frozenset[str] = frozenset()
    """Normalised header names (lower case, ``_`` as ``-``) never forwarded from the client,
    whether or not the gateway sets them itself (the configured token header)."""
    strip_cookies: frozenset[str] = frozenset()
    """Cookie names removed from the ``Cookie`` header before forwarding (the session cookie)."""
    user: str | None = None
    """Username for logs once identity is resolved."""
    roles: frozenset[str] = frozenset()
    """The identified user's roles (a WebSocket keeps them for the checks of later reloads)."""
    sockets: OpenWebSockets
    """Where a relayed WebSocket of a signed-in user is registered while it is open."""
    sid_hash: str | None = None
    """The session (or API token) the identity came from: a WebSocket is registered under it."""
    still_valid: Callable[[], Awaitable[bool]] | None = None
    """For a WebSocket: checked every ``recheck_s``; the socket is closed when it says no."""
    recheck_s: float = 60.0
    close_connection: bool = False
    """Draining: the response says ``Connection: close``."""
    body_timeout_s: float = 60.0
    """``server.timeouts.body``: how long the client may send no request-body bytes."""
    send_timeout_s: float = 60.0
    """``server.timeouts.send``: how long the client may accept no response bytes."""
    set_cookie: str | None = None
    """A ``Set-Cookie`` value the identity stage wants on the response (a re-sealed session)."""
