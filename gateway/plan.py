"""What the gateway does with a request, decided from its facts alone: the one pipeline that
``gateway run`` serves by and ``gateway explain`` reports, so the two can never disagree.

Two pure steps, with authentication (which needs the session store) between them:

1. :func:`locate`: the Host is well-formed, the path normalises, then either the gateway's own
   prefix (:class:`Own`) or the first route that matches (:class:`Routed`); else a
   :class:`Refusal` (400, 404).
2. :func:`decide`: for the caller found, the route's access rule (403), the WebSocket origin
   check, then :class:`Login` for an anonymous caller on a protected route (or, for
   ``/favicon.ico`` and ``/robots.txt``, the gateway's own file: :class:`Own`) or
   :class:`Forward` with the path the upstream receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from gateway.access import Decision, decide_access
from gateway.config.settings import RouteSettings
from gateway.errors import AccessDenied, BadRequest, Forbidden, GatewayError, NotFound
from gateway.hosts import valid_host
from gateway.http import Incoming, is_websocket_upgrade, wants_html
from gateway.paths import matching_path, normalise_path, strip_route_prefix
from gateway.routing import RouteTable

__all__ = [
    "RESERVED_PREFIX",
    "STAND_INS",
    "Caller",
    "Facts",
    "Forward",
    "Login",
    "Own",
    "Refusal",
    "Routed",
    "decide",
    "is_reserved",
    "locate",
    "login_location",
]

RESERVED_PREFIX = "/.gateway/"

STAND_INS = {
    "/favicon.ico": RESERVED_PREFIX + "static/favicon.ico",
    "/robots.txt": RESERVED_PREFIX + "static/robots.txt",
}
"""Paths that browsers and crawlers fetch on their own, and the gateway's file that answers an
anonymous GET or HEAD of one on a protected route, in place of a login redirect or 401 that no
one reads. A route that makes them public lets the upstream's own files through."""


# Facts, Routed, Caller and Forward are made for every request: plain classes whose read-only
# (``Final``) attributes are set by an ``__init__`` of their own, which mypyc compiles (a frozen
# dataclass's generated ``__init__`` stays interpreted and costs over twenty times as much).


class Facts:
    """What planning reads of a request."""

    __slots__ = ("browser", "host", "method", "origin", "query", "raw_path", "websocket")

    def __init__(
        self,
        *,
        method: str,
        raw_path: str,
        query: str,
        host: str,
        browser: bool = False,
        websocket: bool = False,
        origin: str | None = None,
    ) -> None:
        self.method: Final = method
        self.raw_path: Final = raw_path
        """The path of the request target exactly as received, without the query."""
        self.query: Final = query
        """The raw query, without ``?`` (never part of matching)."""
        self.host: Final = host
        """The Host the client asked for (``X-Forwarded-Host`` from a trusted proxy)."""
        self.browser: Final = browser
        """A browser navigation: ``text/html`` in ``Accept``."""
        self.websocket: Final = websocket
        """A WebSocket handshake (``Upgrade: websocket``)."""
        self.origin: Final = origin
        """The ``Origin`` header, when the client sent one."""

    @classmethod
    def of(cls, request: Incoming, host: str) -> Facts:
        raw_path, _, query = request.raw_path.partition("?")
        return cls(
            method=request.method,
            raw_path=raw_path,
            query=query,
            host=host,
            browser=wants_html(request),
            websocket=is_websocket_upgrade(request),
            origin=request.headers.get("Origin"),
        )

    def navigating(self, browser: bool) -> Facts:
        """These facts as a browser navigation (``browser``) or as another client's request."""
        return Facts(
            method=self.method,
            raw_path=self.raw_path,
            query=self.query,
            host=self.host,
            browser=browser,
            websocket=self.websocket,
            origin=self.origin,
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """The request is answered with ``error`` (400, 403, 404), never forwarded."""

    error: GatewayError


@dataclass(frozen=True, slots=True)
class Own:
    """Served by the gateway itself, never proxied: a path under the reserved prefix, or the
    stand-in (:data:`STAND_INS`) for an anonymous fetch of ``/favicon.ico`` or ``/robots.txt``."""

    path: str


class Routed:
    __slots__ = ("path", "route")

    def __init__(self, route: RouteSettings, path: str) -> None:
        self.route: Final = route
        self.path: Final = path
        """The normalised path: what access is decided on and what the upstream receives."""


class Caller:
    """Who authentication found: a user, and whether by the session cookie (which a browser
    sends with any page's requests) or by a credential the client chose to send."""

    __slots__ = ("by_session", "roles", "username")

    def __init__(self, username: str, roles: frozenset[str], by_session: bool) -> None:
        self.username: Final = username
        self.roles: Final = roles
        self.by_session: Final = by_session


@dataclass(frozen=True, slots=True)
class Login:
    """An anonymous caller on a protected route: redirected to the login page (a browser
    navigation, or ``unauthenticated: redirect``), else 401."""

    redirect: str | None
    """The ``Location`` of the 302, or ``None`` for the 401 JSON answer."""


class Forward:
    __slots__ = ("prefix", "route", "upstream_path")

    def __init__(self, route: RouteSettings, upstream_path: str, prefix: str) -> None:
        self.route: Final = route
        self.upstream_path: Final = upstream_path
        """The path the upstream receives: ``strip_prefix`` removed, segment-wise."""
        self.prefix: Final = prefix
        """What ``strip_prefix`` removed (sent as ``X-Forwarded-Prefix``), or ``""``."""


def is_reserved(path: str) -> bool:
    """True for the gateway's own prefix, in any letter case."""
    lowered = path[: len(RESERVED_PREFIX)].lower()
    return lowered == RESERVED_PREFIX or path.lower() == RESERVED_PREFIX[:-1]


def login_location(path: str, query: str) -> str:
    """Where an anonymous browser is sent: the login page, returning to the original request."""
    return f"{RESERVED_PREFIX}login?rd={quote(_return_to(path, query), safe='')}"


def _return_to(path: str, query: str) -> str:
    return path + ("?" + query if query else "")


def locate(facts: Facts, routes: RouteTable) -> Refusal | Own | Routed:
    """Step 1: where the request goes, before anyone is asked who is calling."""
    if not valid_host(facts.host):
        # SECURITY: a malformed Host (admin.example.com:abc, a..b, "a, b") would skip a
        # host-restricted route here yet be read as that host by the upstream or a vhost.
        return Refusal(BadRequest("malformed Host header", reason="bad_host"))
    try:
        path = normalise_path(facts.raw_path)
    except BadRequest as exc:
        return Refusal(exc)
    match_path = matching_path(path)
    if is_reserved(match_path):
        # SECURITY: the reserved prefix is matched after normalisation (and without case or
        # ;parameters) so that /%2egateway/, //.gateway/ or /.gateway;/ never reach an upstream.
        return Own(path)
    route = routes.match(facts.method, facts.host, match_path)
    if route is None:
        return Refusal(NotFound(f"no route for {facts.method} {facts.host} {path[:200]!r}"))
    return Routed(route, path)


def decide(
    routed: Routed, facts: Facts, caller: Caller | None, *, public_url: str
) -> Refusal | Login | Own | Forward:
    """Step 2: for ``caller`` (``None``: anonymous), refused, sent to sign in (or answered with
    a stand-in), or forwarded."""
    route = routed.route
    decision = decide_access(
        route.access,
        caller.username if caller is not None else None,
        caller.roles if caller is not None else frozenset(),
    )
    if decision is Decision.DENY:
        detail = f"route {route.name} denies access"
        if caller is None:
            return Refusal(Forbidden(detail))
        return Refusal(
            AccessDenied(
                detail,
                username=caller.username,
                by_session=caller.by_session,
                rd=_return_to(routed.path, facts.query),
            )
        )
    # SECURITY: cross-site WebSocket hijacking: a browser sends the session cookie with a
    # handshake any page starts (SameSite=None), and the same-origin policy does not apply.
    by_session = caller is not None and caller.by_session
    if by_session and facts.websocket and facts.origin not in (None, public_url):
        origin = str(facts.origin)
        return Refusal(
            Forbidden(f"WebSocket from foreign origin {origin[:100]!r}", reason="websocket_origin")
        )
    if decision is Decision.LOGIN:
        stand_in = STAND_INS.get(routed.path)
        if stand_in is not None and facts.method in ("GET", "HEAD"):
            return Own(stand_in)
        browser = facts.method in ("GET", "HEAD") and facts.browser
        if route.unauthenticated == "redirect" or (route.unauthenticated == "auto" and browser):
            return Login(redirect=login_location(routed.path, facts.query))
        # The contract: whoever is not redirected gets the JSON answer, browsers included.
        return Login(redirect=None)
    upstream_path, prefix = strip_route_prefix(
        routed.path, route.strip_prefix, route.match.ignore_case
    )
    return Forward(route, upstream_path, prefix)
