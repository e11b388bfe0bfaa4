"""Minting JWTs: for upstreams (per session and audience) and for API clients (bearer tokens).

pyjwt encodes and signs, with the key objects parsed once at load (never a PEM parse per token).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from typing import Any, NamedTuple, Protocol

import jwt

from gateway.config.settings import TokenSettings
from gateway.identity.users import User
from gateway.tokens.keys import KeySet, SigningKey, b64url

_SID_DOMAIN = b"gateway/jwt-sid/v1\x00"
CREDENTIAL_STAMP_CLAIM = "cst"
"""API tokens: the user's credential stamp when the token was issued."""


class SessionRef(Protocol):
    """What a token is minted for: a session (:class:`~gateway.identity.sessions.base.Session`),
    or a verified API bearer token (:class:`~gateway.tokens.verify.ApiClaims`)."""

    @property
    def sid_hash(self) -> str: ...


def session_claim(sid_hash: str) -> str:
    """The ``sid`` claim: a domain-separated SHA-256 of the store's ``sid_hash``, base64url.

    One-way twice over: neither the session id (the cookie) nor the store's key can be
    recovered from it, yet it is stable for the session so upstreams can correlate requests.
    """
    return b64url(hashlib.sha256(_SID_DOMAIN + sid_hash.encode("utf-8")).digest())


def lifetime_s(ttl_s: float) -> int:
    """A configured TTL as whole seconds (times in JWTs are integers): rounded up, at least 1."""
    return max(1, math.ceil(ttl_s))


class Minted(NamedTuple):
    token: str
    issued_at: int
    expires_at: int


class TokenMinter:
    """Signs tokens with a :class:`KeySet` under one ``tokens:`` configuration; immutable.

    Upstream tokens are signed by :attr:`KeySet.signing` (the first key); API tokens by
    :attr:`KeySet.api_signing` (the first asymmetric key, see there).
    """

    def __init__(self, keyset: KeySet, tokens: TokenSettings) -> None:
        self.keyset = keyset
        self.settings = tokens
        self._upstream = keyset.signing
        self._api = keyset.api_signing
        self._claims = frozenset(tokens.claims)

    def mint_upstream(
        self, user: User, session: SessionRef, *, audience: str, ttl_s: float, now: float
    ) -> str:
        """A token for one upstream: claims of CONTRACT section 4, ``exp = iat + ttl``.

        ``audience`` is the route's ``token.audience`` (default the upstream's name); it may not
        be the gateway's issuer, which only API tokens carry (:class:`ValueError`).
        ``iat = nbf = floor(now)``; the TTL is rounded up to whole seconds (:func:`lifetime_s`).
        """
        return self.issue_upstream(user, session, audience=audience, ttl_s=ttl_s, now=now).token

    def issue_upstream(
        self, user: User, session: SessionRef, *, audience: str, ttl_s: float, now: float
    ) -> Minted:
        """:meth:`mint_upstream` with the token's ``iat`` and ``exp`` (for caching)."""
        if audience == self.settings.issuer:
            # SECURITY: a token with aud = issuer would be accepted back as an API bearer token,
            # so an upstream could replay it against other routes. Config refuses this too.
            raise ValueError("an upstream token's audience must differ from the issuer")
        claims = self._registered(user, audience=audience, ttl_s=ttl_s, now=now)
        claims["sid"] = session_claim(session.sid_hash)
        if user.idp is not None:
            claims["idp"] = user.idp  # signed in at this OpenID Connect provider
        claims.update(self._identity(user))
        return Minted(_sign(claims, self._upstream), claims["iat"], claims["exp"])

    def mint_api(self, user: User, *, now: float) -> tuple[str, int]:
        """A bearer token for an API client and its ``expires_in`` (seconds).

        ``aud`` is the gateway's own issuer: the only audience :func:`verify_api_token` accepts.
        It carries registered claims only (no ``sid``: it belongs to no session; no identity
        claims: they are looked up afresh from ``sub`` whenever the token is used), plus
        ``cst``, the user's credential stamp: the token dies with a change of password.
        Raises :class:`RuntimeError` when the key set has no asymmetric key.
        """
        if self._api is None:
            raise RuntimeError("API tokens need an asymmetric signing key")
        ttl = lifetime_s(self.settings.api_tokens.ttl_s)
        claims = self._registered(user, audience=self.settings.issuer, ttl_s=ttl, now=now)
        claims[CREDENTIAL_STAMP_CLAIM] = user.stamp
        return _sign(claims, self._api), ttl

    def _registered(self, user: User, *, audience: str, ttl_s: float, now: float) -> dict[str, Any]:
        issued_at = int(now)
        return {
            "iss": self.settings.issuer,
            "sub": user.username,
            "aud": audience,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + lifetime_s(ttl_s),
            "jti": secrets.token_urlsafe(16),  # 128 random bits
        }

    def _identity(self, user: User) -> dict[str, Any]:
        claims: dict[str, Any] = {}
        if "name" in self._claims and user.name is not None:
            claims["name"] = user.name
        if "email" in self._claims and user.email is not None:
            claims["email"] = user.email
        if "roles" in self._claims:
            claims["roles"] = sorted(user.roles)
        return claims


def _sign(claims: dict[str, Any], key: SigningKey) -> str:
    """The compact JWS of ``claims``; header ``{"alg", "kid", "typ": "JWT"}``."""
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid})
