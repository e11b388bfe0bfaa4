"""Things that may be used once: a logout token's ``jti``, a sign-in's ``state``.

In this process (bounded, oldest forgotten first) or, with the redis session backend, in Redis
(``SET NX`` with a TTL), so that every replica sees a use made at any other.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from redis.asyncio import Redis

from gateway.identity.redis_client import redis_errors

MAX_REMEMBERED = 100_000


class ReplayGuard:
    """Remembers what was used, until it could no longer be presented anyway."""

    def __init__(
        self,
        redis_client: Redis | None = None,
        *,
        key_prefix: str = "gw:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis_client
        self._prefix = f"{key_prefix}once:"
        self._clock = clock
        self._seen: dict[str, float] = {}

    async def first_use(self, kind: str, value: str, *, ttl_s: float) -> bool:
        """``True`` the first time ``(kind, value)`` is presented within ``ttl_s``, ``False``
        after. Raises :class:`~gateway.errors.SessionStoreUnavailable` when Redis cannot say
        (fail closed)."""
        digest = hashlib.sha256(f"{kind}\x00{value}".encode("utf-8", "surrogatepass")).hexdigest()
        if self._redis is not None:
            with redis_errors(self._redis):
                fresh = await self._redis.set(
                    self._prefix + digest, "1", nx=True, px=max(1, int(ttl_s * 1000))
                )
            return bool(fresh)
        now = self._clock()
        expires = self._seen.get(digest)
        if expires is not None and expires > now:
            return False
        self._seen.pop(digest, None)
        while len(self._seen) >= MAX_REMEMBERED:
            del self._seen[next(iter(self._seen))]
        self._seen[digest] = now + ttl_s
        return True
