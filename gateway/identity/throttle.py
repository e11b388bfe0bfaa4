"""Login throttling: lock a key (``"user:alice"``, ``"ip:192.0.2.1"``) after repeated failures.

Per key, failures are counted in a fixed window that opens at the first failure and lasts
``login.throttle.window``; the failure that brings the count to ``max_failures`` locks the key for
``lockout`` and clears its counter. The caller checks :meth:`Throttle.locked` BEFORE verifying a
password, so a locked key stays locked for the whole lockout whatever is typed, and answers a
locked attempt exactly like a wrong password (CONTRACT section 3: one generic 401).

Two implementations: :class:`MemoryThrottle` (per process) and :class:`RedisThrottle` (shared by
every replica using the same Redis and key prefix). Redis failures raise
:class:`SessionStoreUnavailable`: a login cannot proceed without its throttle (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from gateway.config.settings import SessionSettings, ThrottleSettings
from gateway.identity.redis_client import create_redis_client, redis_errors

MAX_KEY_CHARS = 128


def _bounded(key: str) -> str:
    # SECURITY: keys carry attacker-chosen text (the username typed); hash long ones so a huge
    # username costs neither memory nor a huge Redis key.
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class Throttle(Protocol):
    """Failure counting and lockout for login keys."""

    async def locked(self, keys: Sequence[str], *, now: float) -> bool:
        """True when ANY of ``keys`` is locked out."""
        ...

    async def failure(self, keys: Sequence[str], *, now: float) -> None:
        """Count one failed attempt against each key; locks those that reach the limit."""
        ...

    async def success(self, keys: Sequence[str]) -> None:
        """Forget the failures counted against ``keys`` (a running lockout is kept).

        Resetting the IP key lets anyone holding one valid account clear their address's count
        between guesses at other users; those users' own keys still lock. Pass only the user key
        to keep counting per address.
        """
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Counter:
    failures: int = 0
    window_ends_at: float = float("-inf")
    locked_until: float = float("-inf")


class MemoryThrottle:
    """Per-process throttle in a bounded dict (each process counts separately)."""

    def __init__(self, settings: ThrottleSettings, *, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._settings = settings
        self._max_keys = max_keys
        # Insertion order: the first key is the one that started counting longest ago.
        self._counters: dict[str, _Counter] = {}

    async def locked(self, keys: Sequence[str], *, now: float) -> bool:
        for key in keys:
            counter = self._counters.get(_bounded(key))
            if counter is not None and counter.locked_until > now:
                return True
        return False

    async def failure(self, keys: Sequence[str], *, now: float) -> None:
        for key in keys:
            counter = self._counter(_bounded(key), now)
            if now >= counter.window_ends_at:
                counter.failures = 0
                counter.window_ends_at = now + self._settings.window_s
            counter.failures += 1
            if counter.failures >= self._settings.max_failures:
                counter.locked_until = now + self._settings.lockout_s
                counter.failures = 0
                counter.window_ends_at = float("-inf")

    async def success(self, keys: Sequence[str]) -> None:
        for key in keys:
            counter = self._counters.get(_bounded(key))
            if counter is not None:
                counter.failures = 0
                counter.window_ends_at = float("-inf")

    async def close(self) -> None:
        self._counters.clear()

    def _counter(self, key: str, now: float) -> _Counter:
        counter = self._counters.get(key)
        if counter is not None:
            return counter
        if len(self._counters) >= self._max_keys:
            self._sweep(now)
        while len(self._counters) >= self._max_keys:
            # SECURITY: bounded memory; an attacker able to fill the table with fresh keys can
            # push out the oldest counters, which is why the bound is generous and Redis is
            # recommended for exposed deployments.
            del self._counters[next(iter(self._counters))]
        counter = self._counters[key] = _Counter()
        return counter

    def _sweep(self, now: float) -> None:
        idle = [
            key
            for key, c in self._counters.items()
            if c.locked_until <= now and (c.window_ends_at <= now or c.failures == 0)
        ]
        for key in idle:
            del self._counters[key]


class RedisThrottle:
    """Throttle counters in Redis, shared by replicas.

    Keys: ``P t:c:<key>`` (failure counter, expires with its window) and ``P t:l:<key>`` (lock,
    expires with the lockout). Redis keeps the time: ``now`` is accepted for the Protocol and
    ignored.
    """

    def __init__(
        self,
        settings: ThrottleSettings,
        *,
        key_prefix: str,
        client: Redis,
        owns_client: bool = False,
    ) -> None:
        """:meth:`close` closes ``client`` only when ``owns_client`` is true."""
        self._settings = settings
        self._prefix = key_prefix
        self._client = client
        self._owns_client = owns_client

    def counter_key(self, key: str) -> str:
        return f"{self._prefix}t:c:{_bounded(key)}"

    def lock_key(self, key: str) -> str:
        return f"{self._prefix}t:l:{_bounded(key)}"

    async def locked(self, keys: Sequence[str], *, now: float) -> bool:
        if not keys:
            return False
        with redis_errors():
            found: int = await self._client.exists(*(self.lock_key(k) for k in keys))
        return found > 0

    async def failure(self, keys: Sequence[str], *, now: float) -> None:
        if not keys:
            return
        window_ms = max(1, math.ceil(self._settings.window_s * 1000))
        with redis_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                for key in keys:
                    # SET NX opens the window with its expiry; INCR keeps that TTL (no EXPIRE NX,
                    # so Redis 6 works too).
                    pipe.set(self.counter_key(key), 0, px=window_ms, nx=True)
                    pipe.incr(self.counter_key(key))
                replies = await pipe.execute()
            counts = [int(count) for count in replies[1::2]]
            limit = self._settings.max_failures
            reached = [k for k, n in zip(keys, counts, strict=True) if n >= limit]
            if not reached:
                return
            lockout_ms = max(1, math.ceil(self._settings.lockout_s * 1000))
            async with self._client.pipeline(transaction=True) as pipe:
                for key in reached:
                    pipe.set(self.lock_key(key), 1, px=lockout_ms)
                    pipe.delete(self.counter_key(key))
                await pipe.execute()

    async def success(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        with redis_errors():
            await self._client.delete(*(self.counter_key(k) for k in keys))

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def create_throttle(
    session: SessionSettings, throttle: ThrottleSettings, redis_client: Redis | None = None
) -> Throttle:
    """The login throttle matching the session backend.

    ``redis`` backend: a :class:`RedisThrottle` under ``session.redis.key_prefix``, on
    ``redis_client`` when given (shared with the session store, closed by the caller), else on a
    client of its own that :meth:`Throttle.close` closes. Other backends: a :class:`MemoryThrottle`
    (per process; with several workers or replicas each counts on its own).
    """
    if session.backend != "redis":
        return MemoryThrottle(throttle)
    prefix = session.redis.key_prefix
    if redis_client is not None:
        return RedisThrottle(throttle, key_prefix=prefix, client=redis_client)
    return RedisThrottle(
        throttle, key_prefix=prefix, client=create_redis_client(session.redis), owns_client=True
    )


class AttemptGate:
    """Runs the login attempts that share a throttle key one at a time, in this process.

    Without it a burst of concurrent guesses would all pass :meth:`Throttle.locked` before the
    first failure is recorded, and every one of them would be verified.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, keys: Sequence[str]) -> AsyncIterator[None]:
        held: list[str] = []
        try:
            # Sorted, so two attempts sharing two keys cannot wait on each other.
            for key in sorted(set(keys)):
                lock = self._take(key)
                try:
                    await lock.acquire()
                except BaseException:
                    self._give(key, release=False)
                    raise
                held.append(key)
            yield
        finally:
            for key in reversed(held):
                self._give(key, release=True)

    def _take(self, key: str) -> asyncio.Lock:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        return lock

    def _give(self, key: str, *, release: bool) -> None:
        lock, users = self._locks[key]
        if release:
            lock.release()
        if users == 1:
            del self._locks[key]  # bounded: only keys with an attempt running or waiting
        else:
            self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
