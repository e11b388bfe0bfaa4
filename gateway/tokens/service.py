"""The one object the app holds for tokens: keys, minter, cache, metrics and verification."""

from __future__ import annotations

import time
from collections.abc import Hashable

from gateway import metrics
from gateway.config.settings import TokenSettings
from gateway.identity.users import User
from gateway.tokens.cache import TokenCache
from gateway.tokens.keys import KeySet
from gateway.tokens.mint import SessionRef, TokenMinter
from gateway.tokens.verify import ApiClaims, VerifiedBearers, verify_api_token


class Tokens:
    """Mints upstream tokens through a :class:`TokenCache`, API tokens, and verifies bearers.

    Not thread-safe: use it from the event loop. :meth:`successor` builds the reloaded one in
    place on reload (SIGHUP) and empties the cache when they changed.
    """

    def __init__(
        self,
        keyset: KeySet,
        settings: TokenSettings,
        cache: TokenCache | None = None,
        bearers: VerifiedBearers | None = None,
    ) -> None:
        self.cache = cache if cache is not None else TokenCache()
        self.bearers = bearers if bearers is not None else VerifiedBearers()
        self._minter = TokenMinter(keyset, settings)

    @property
    def keyset(self) -> KeySet:
        return self._minter.keyset

    @property
    def settings(self) -> TokenSettings:
        return self._minter.settings

    @property
    def jwks_json(self) -> bytes:
        """Body of ``GET /.gateway/jwks.json`` (``application/json``)."""
        return self._minter.keyset.jwks_json

    def upstream_token(
        self, user: User, session: SessionRef, *, audience: str, ttl_s: float, now: float
    ) -> str:
        """The token for ``(session, audience)``: cached while more than a fifth of its lifetime
        remains and the user's claims are unchanged, else freshly minted."""
        key = (session.sid_hash, audience)
        stamp = _stamp(user, ttl_s)
        token = self.cache.get(key, now, stamp=stamp)
        if token is not None:
            metrics.TOKEN_CACHE_HITS.inc()
            return token
        minted = self._minter.issue_upstream(user, session, audience=audience, ttl_s=ttl_s, now=now)
        metrics.TOKENS_MINTED.inc()
        self.cache.put(
            key,
            minted.token,
            issued_at=minted.issued_at,
            expires_at=minted.expires_at,
            stamp=stamp,
        )
        return minted.token

    def api_token(self, user: User, *, now: float) -> tuple[str, int]:
        """``(access_token, expires_in)`` for ``POST /.gateway/token`` (never cached)."""
        token = self._minter.mint_api(user, now=now)
        metrics.TOKENS_MINTED.inc()
        return token

    def verify_bearer(self, token: str) -> ApiClaims:
        """Verify an API client's bearer token against our keys and issuer, valid now (see
        :func:`~gateway.tokens.verify.verify_api_token`; a token verified before is taken from
        :class:`~gateway.tokens.verify.VerifiedBearers` until it expires); raises
        ``InvalidBearer``."""
        key = self.bearers.key(token)
        claims = self.bearers.get(key, now=time.time())
        if claims is None:
            claims = verify_api_token(token, self.keyset, issuer=self.settings.issuer)
            self.bearers.put(key, claims)
        return claims

    def drop_session(self, sid_hash: str) -> int:
        """Forget the cached tokens of a session (logout); returns how many."""
        return self.cache.drop_session(sid_hash)

    def successor(self, keyset: KeySet, settings: TokenSettings) -> Tokens:
        """The :class:`Tokens` for a reload: a new object (this one is left untouched, since a
        reload is built off the event loop while requests still use it) that keeps the token
        cache only when the signing key (:attr:`KeySet.fingerprint`) and the ``tokens:``
        settings are unchanged, so no token signed by a retired key or with old claims is
        served after the reload (and the verified bearer tokens likewise)."""
        same = self.keyset.fingerprint == keyset.fingerprint and self.settings == settings
        if not same:
            return Tokens(keyset, settings)
        return Tokens(keyset, settings, self.cache, self.bearers)


def _stamp(user: User, ttl_s: float) -> Hashable:
    # What the cached token was minted from: a change (e.g. roles after a users reload) misses.
    return (user.username, user.name, user.email, user.roles, user.idp, ttl_s)
