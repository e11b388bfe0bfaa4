"""Per-request state that flows through the pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config.settings import RouteSettings, UpstreamSettings
from gateway.websockets import OpenWebSockets


@dataclass(slots=True, kw_only=True)
class ClientInfo:
    """Who is on the other end, as far as the trusted-proxy chain lets us believe."""

    ip: str
    """The client address: the peer, or the first untrusted X-Forwarded-For hop."""
    proto: str
    """``http`` or ``https`` as the client used it."""
    host: str
    """The Host the client asked for (before any ``preserve_host`` decision)."""
    request_id: str
    forwarded_for: str
    """The X-Forwarded-For value to send upstream (existing trusted chain + the peer)."""


@dataclass(slots=True, kw_only=True)
class RequestContext:
    client: ClientInfo
    path: str
    """The normalised path (what routing matched and what the upstream receives)."""
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
    sockets: OpenWebSockets
    """Where a relayed WebSocket of a signed-in user is registered while it is open."""
    send_timeout_s: float = 60.0
    """``server.timeouts.send``: how long the client may accept no response bytes."""
    set_cookie: str | None = None
    """A ``Set-Cookie`` value the identity stage wants on the response (a re-sealed session)."""
