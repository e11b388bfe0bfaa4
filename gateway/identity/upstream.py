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
    """The ``X-Auth-*`` headers a route with ``identity_headers: true`` sends; else none."""
    if not route.identity_headers:
        return {}
    headers = {"X-Auth-User": user.username}
    if user.email:
        headers["X-Auth-Email"] = user.email
    headers["X-Auth-Roles"] = ",".join(sorted(user.roles))
    return headers


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
