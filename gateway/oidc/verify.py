"""Verifying what a provider signs: ID tokens (OpenID Connect Core 3.1.3.7) and logout tokens
(OpenID Connect Back-Channel Logout 1.0, section 2.6), with pyjwt against the provider's keys.

One check per small function, each raising :class:`TokenRejected` with a stable ``reason``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import jwt

from gateway.oidc.provider import Provider, ProviderError

LEEWAY_S = 60
"""Clock skew tolerated between the provider and us."""
LOGOUT_TOKEN_MAX_AGE_S = 300
"""A logout token issued longer ago than this is refused (its ``jti`` is remembered longer)."""
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class TokenRejected(Exception):
    """A token failed verification; ``reason`` for the log (never the token itself)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


async def verify_id_token(
    provider: Provider, token: str, *, nonce: str, now: float
) -> dict[str, Any]:
    """The claims of a valid ID token for our client: signed by the provider's key with an
    allowed algorithm, ``iss`` the provider, ``aud`` our client (``azp`` ours too when present
    or needed), within ``exp`` and ``iat``, ``nonce`` the one this browser was given."""
    claims = await _decode(provider, token, now=now, require=["exp", "iat", "iss", "aud", "sub"])
    _check_azp(claims, provider.settings.client_id)
    _check_nonce(claims, nonce)
    return claims


async def verify_logout_token(provider: Provider, token: str, *, now: float) -> dict[str, Any]:
    """The claims of a valid logout token: signature, ``iss``, ``aud``, a recent ``iat``, a
    ``jti``, the back-channel logout event, no ``nonce``, and ``sid`` or ``sub``. (Whether its
    ``jti`` was seen before is the caller's to check.)"""
    claims = await _decode(provider, token, now=now, require=["iat", "iss", "aud", "jti"])
    if now - claims["iat"] > LOGOUT_TOKEN_MAX_AGE_S + LEEWAY_S:
        raise TokenRejected("logout token too old", reason="oidc_logout_token_old")
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise TokenRejected("logout token without a jti", reason="oidc_logout_token_invalid")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
        raise TokenRejected("not a back-channel logout event", reason="oidc_logout_token_invalid")
    # SECURITY: a logout token must never carry a nonce, so that an ID token can never be
    # replayed as one (Back-Channel Logout 2.4).
    if "nonce" in claims:
        raise TokenRejected("logout token with a nonce", reason="oidc_logout_token_invalid")
    sid, sub = claims.get("sid"), claims.get("sub")
    if not (isinstance(sid, str) and sid) and not (isinstance(sub, str) and sub):
        raise TokenRejected("logout token without sid or sub", reason="oidc_logout_token_invalid")
    _check_azp(claims, provider.settings.client_id)
    return claims


async def _decode(
    provider: Provider, token: str, *, now: float, require: list[str]
) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRejected("not a JWT", reason="oidc_token_malformed") from None
    try:
        key = await provider.signing_key(header)
    except ProviderError as exc:
        raise TokenRejected(str(exc), reason=exc.reason) from None
    settings = provider.settings
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key.key,
            # SECURITY: exactly the algorithm the key is for (checked against the allow-list in
            # signing_key): never "none", never HS* with a public key as the secret.
            algorithms=[key.algorithm_name],
            audience=settings.client_id,
            issuer=settings.issuer,
            leeway=LEEWAY_S,
            options={"require": require, "verify_iat": True},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("token expired", reason="oidc_token_expired") from None
    except jwt.InvalidAudienceError:
        raise TokenRejected("token for another client", reason="oidc_token_audience") from None
    except jwt.InvalidIssuerError:
        raise TokenRejected("token from another issuer", reason="oidc_token_issuer") from None
    except jwt.InvalidSignatureError:
        raise TokenRejected("bad token signature", reason="oidc_token_signature") from None
    except jwt.PyJWTError as exc:
        raise TokenRejected(
            f"invalid token ({type(exc).__name__})", reason="oidc_token_invalid"
        ) from None
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or iat > now + LEEWAY_S:
        raise TokenRejected("token issued in the future", reason="oidc_token_invalid")
    return claims


def _check_azp(claims: Mapping[str, Any], client_id: str) -> None:
    # OpenID Connect Core 3.1.3.7 (4, 5): with several audiences the authorized party must be
    # present, and whenever it is present it must be us.
    audience = claims.get("aud")
    azp = claims.get("azp")
    several = isinstance(audience, list) and len(audience) > 1
    if (several and azp is None) or (azp is not None and azp != client_id):
        raise TokenRejected("token authorized for another party", reason="oidc_token_azp")


def _check_nonce(claims: Mapping[str, Any], expected: str) -> None:
    nonce = claims.get("nonce")
    # SECURITY: constant time; the nonce binds the token to the browser that started sign-in.
    if not isinstance(nonce, str) or not hmac.compare_digest(
        nonce.encode("utf-8", "surrogatepass"), expected.encode()
    ):
        raise TokenRejected("token nonce does not match", reason="oidc_token_nonce")
