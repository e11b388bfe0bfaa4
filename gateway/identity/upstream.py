"""What the upstream learns about the caller: the signed JWT and, optionally, X-Auth-* headers."""

from __future__ import annotations

from gateway.config.settings import RouteSettings
from gateway.identity.resolve import Identity
from gateway.runtime import Runtime


def identity_headers(
    runtime: Runtime, route: RouteSettings, identity: Identity, *, now: float
) -> dict[str, str]:
    """Headers to add for ``identity`` on ``route`` (the proxy has already removed every
    client-sent ``Authorization`` and ``X-Auth-*``, so these cannot be spoofed)."""
    settings = runtime.settings
    tokens = settings.tokens
    token = runtime.tokens.upstream_token(
        identity.user,
        identity,
        audience=route.token.audience or route.upstream,
        ttl_s=route.token.ttl_s or tokens.ttl_s,
        now=now,
    )
    is_authorization = tokens.header.lower() == "authorization"
    headers = {tokens.header: f"Bearer {token}" if is_authorization else token}
    if route.identity_headers:
        user = identity.user
        headers["X-Auth-User"] = user.username
        if user.email:
            headers["X-Auth-Email"] = user.email
        headers["X-Auth-Roles"] = ",".join(sorted(user.roles))
    return headers
