"""What the upstream learns about the caller: the signed JWT and, optionally, X-Auth-* headers."""

from __future__ import annotations

from gateway.config.settings import RouteSettings, TokenSettings
from gateway.identity.resolve import Identity
from gateway.identity.users import User
from gateway.runtime import Runtime


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


def identity_headers(
    runtime: Runtime, route: RouteSettings, identity: Identity, *, now: float
) -> dict[str, str]:
    """Headers to add for ``identity`` on ``route`` (the proxy has already removed every
    client-sent ``Authorization`` and ``X-Auth-*``, so these cannot be spoofed)."""
    tokens = runtime.settings.tokens
    audience, ttl_s = token_audience_ttl(tokens, route)
    token = runtime.tokens.upstream_token(
        identity.user, identity, audience=audience, ttl_s=ttl_s, now=now
    )
    is_authorization = tokens.header.lower() == "authorization"
    headers = {tokens.header: f"Bearer {token}" if is_authorization else token}
    headers.update(x_auth_headers(route, identity.user))
    return headers
