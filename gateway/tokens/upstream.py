"""What the upstream learns about the caller: the signed JWT and, per route, identity headers."""

from __future__ import annotations

from gateway.config.settings import RouteSettings, TokenSettings
from gateway.identity.users import User
from gateway.tokens.mint import SessionRef
from gateway.tokens.service import Tokens


def token_audience_ttl(tokens: TokenSettings, route: RouteSettings) -> tuple[str, float]:
    """The upstream token's audience (route ``token.audience``, default the upstream's name) and
    lifetime (route ``token.ttl``, default ``tokens.ttl``)."""
    return route.token.audience or route.upstream, route.token.ttl_s or tokens.ttl_s


def x_auth_headers(route: RouteSettings, user: User) -> dict[str, str]:
    """The identity headers of the route's ``identity_headers`` (``X-Auth-*`` with ``true``, or
    the headers of its mapping) for ``user``: a header whose claim the user lacks is left out;
    roles are joined by ","."""
    headers: dict[str, str] = {}
    for header, claim in route.identity_headers:
        value = _claim(user, claim)
        if value is not None:
            headers[header] = value
    return headers


def _claim(user: User, claim: str) -> str | None:
    if claim == "sub":
        return user.username
    if claim == "email":
        return user.email
    if claim == "name":
        return user.name
    return ",".join(sorted(user.roles))


class UpstreamHeaders:
    """The headers a route's upstream receives for a signed-in caller (the proxy has already
    removed every client-sent copy of them, so they cannot be spoofed)."""

    __slots__ = ("_bearer", "_header", "_tokens")

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens
        self._header = tokens.settings.header
        self._bearer = self._header.lower() == "authorization"

    def for_caller(
        self, route: RouteSettings, user: User, session: SessionRef, *, now: float
    ) -> dict[str, str]:
        """The JWT for ``(session, route's audience)`` and the route's identity headers."""
        audience, ttl_s = token_audience_ttl(self._tokens.settings, route)
        token = self._tokens.upstream_token(user, session, audience=audience, ttl_s=ttl_s, now=now)
        headers = {self._header: f"Bearer {token}" if self._bearer else token}
        if route.identity_headers:
            headers.update(x_auth_headers(route, user))
        return headers
