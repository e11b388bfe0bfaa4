"""Login throttling: lock a key (``"user:alice"``, ``"ip:192.0.2.1"``) after repeated failures.

Per key, attempts are counted in a fixed window that opens at the first one and lasts
``login.throttle.window``. An attempt is counted BEFORE its password is verified
(:meth:`Throttle.reserve`): checking the lock and counting are one atomic step, so however many
guesses arrive at once, at however many replicas, no more than ``max_failures`` of them are ever
verified within a window. A failed attempt stays counted (:meth:`Throttle.failure`); the one that
brings a key to ``max_failures`` failures locks it for ``lockout`` and clears its count. A
successful attempt clears the username's count and gives the address its attempt back
(:meth:`Throttle.success`). A refused reservation is answered exactly like a wrong password
(CONTRACT section 3: one generic 401).

Two implementations: :class:`MemoryThrottle` (per process) and :class:`RedisThrottle` (shared by
every replica using the same Redis and key prefix; each step is one Lua script). Redis failures
raise :class:`SessionStoreUnavailable`: a login cannot proceed without its throttle (fail
closed).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from gateway.config.settings import SessionSettings, ThrottleSettings
from gateway.identity.redis_client import redis_errors

MAX_KEY_CHARS = 128


def _bounded(key: str) -> str:
    # SECURITY: keys carry attacker-chosen text (the username typed); hash long ones so a huge
    # username costs neither memory nor a huge Redis key.
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class Throttle(Protocol):
    """Attempt counting and lockout for login keys: a username key first, an address key next."""

    async def reserve(self, keys: Sequence[str], *, now: float) -> bool:
        """Count one attempt against every key, atomically, unless ANY key is locked or already
        has ``max_failures`` attempts counted: then count nothing and return False."""
        ...

    async def failure(self, keys: Sequence[str], *, now: float) -> None:
        """The reserved attempt failed: lock the keys whose count reached ``max_failures``."""
        ...

    async def success(self, keys: Sequence[str]) -> None:
        """The reserved attempt succeeded: forget the first key's count (the username's); give
        the others their attempt back (a running lockout is kept).

        Resetting the address's count would let anyone holding one valid account clear their
        address between guesses at other users."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Counter:
    attempts: int = 0
    window_ends_at: float = float("-inf")
    locked_until: float = float("-inf")


class MemoryThrottle:
    """Per-process throttle in a bounded dict (each process counts separately). Every step runs
    without an await, hence atomically in this process."""

    def __init__(self, settings: ThrottleSettings, *, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._settings = settings
        self._max_keys = max_keys
        # Insertion order: the first key is the one that started counting longest ago.
        self._counters: dict[str, _Counter] = {}

    async def reserve(self, keys: Sequence[str], *, now: float) -> bool:
        limit = self._settings.max_failures
        counters = [self._counter(_bounded(key), now) for key in keys]
        for counter in counters:
            if now >= counter.window_ends_at:
                counter.attempts = 0
            if counter.locked_until > now or counter.attempts >= limit:
                return False
        for counter in counters:
            if counter.attempts == 0:
                counter.window_ends_at = now + self._settings.window_s
            counter.attempts += 1
        return True

    async def failure(self, keys: Sequence[str], *, now: float) -> None:
        for key in keys:
            counter = self._counters.get(_bounded(key))
            if counter is not None and counter.attempts >= self._settings.max_failures:
                counter.locked_until = now + self._settings.lockout_s
                counter.attempts = 0
                counter.window_ends_at = float("-inf")

    async def success(self, keys: Sequence[str]) -> None:
        for index, key in enumerate(keys):
            counter = self._counters.get(_bounded(key))
            if counter is None:
                continue
            if index == 0:
                counter.attempts = 0
                counter.window_ends_at = float("-inf")
            elif counter.attempts > 0:
                counter.attempts -= 1

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
            if c.locked_until <= now and (c.window_ends_at <= now or c.attempts == 0)
        ]
        for key in idle:
            del self._counters[key]


# KEYS: the lock keys, then the counter keys; ARGV: number of keys, max_failures, window (ms).
_RESERVE = """
local n = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
  if tonumber(redis.call('GET', KEYS[n + i]) or '0') >= limit then return 0 end
end
for i = 1, n do
  if redis.call('INCR', KEYS[n + i]) == 1 then
    redis.call('PEXPIRE', KEYS[n + i], ARGV[3])
  end
end
return 1
"""

# KEYS: as for _RESERVE; ARGV: number of keys, max_failures, lockout (ms).
_FAILURE = """
local n = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
for i = 1, n do
  if tonumber(redis.call('GET', KEYS[n + i]) or '0') >= limit then
    redis.call('SET', KEYS[i], 1, 'PX', ARGV[3])
    redis.call('DEL', KEYS[n + i])
  end
end
return 1
"""

# KEYS: the counter keys, the username's first.
_SUCCESS = """
redis.call('DEL', KEYS[1])
for i = 2, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
return 1
"""


class RedisThrottle:
    """Throttle counters in Redis, shared by replicas.

    Keys: ``P t:c:<key>`` (attempt counter, expires with its window) and ``P t:l:<key>`` (lock,
    expires with the lockout). Redis keeps the time: ``now`` is accepted for the Protocol and
    ignored. The client belongs to the caller.
    """

    def __init__(self, settings: ThrottleSettings, *, key_prefix: str, client: Redis) -> None:
        self._settings = settings
        self._prefix = key_prefix
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._failure = client.register_script(_FAILURE)
        self._success = client.register_script(_SUCCESS)

    def counter_key(self, key: str) -> str:
        return f"{self._prefix}t:c:{_bounded(key)}"

    def lock_key(self, key: str) -> str:
        return f"{self._prefix}t:l:{_bounded(key)}"

    async def reserve(self, keys: Sequence[str], *, now: float) -> bool:
        if not keys:
            return True
        window_ms = max(1, math.ceil(self._settings.window_s * 1000))
        with redis_errors(self._client):
            reserved = await self._reserve(
                keys=self._keys(keys), args=[len(keys), self._settings.max_failures, window_ms]
            )
        return bool(reserved)

    async def failure(self, keys: Sequence[str], *, now: float) -> None:
        if not keys:
            return
        lockout_ms = max(1, math.ceil(self._settings.lockout_s * 1000))
        with redis_errors(self._client):
            await self._failure(
                keys=self._keys(keys), args=[len(keys), self._settings.max_failures, lockout_ms]
            )

    async def success(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        with redis_errors(self._client):
            await self._success(keys=[self.counter_key(key) for key in keys])

    async def close(self) -> None:
        """Nothing to close: the client belongs to whoever created it."""

    def _keys(self, keys: Sequence[str]) -> list[str]:
        return [*(self.lock_key(key) for key in keys), *(self.counter_key(key) for key in keys)]


def create_throttle(
    session: SessionSettings, throttle: ThrottleSettings, redis_client: Redis | None = None
) -> Throttle:
    """The login throttle matching the session backend: a :class:`RedisThrottle` under
    ``session.redis.key_prefix`` on ``redis_client`` (shared with the session store, closed by
    the caller) for the ``redis`` backend; else a :class:`MemoryThrottle` (per process; with
    several workers or replicas each counts on its own)."""
    if session.backend != "redis":
        return MemoryThrottle(throttle)
    if redis_client is None:
        raise ValueError("the redis throttle needs a Redis client")
    return RedisThrottle(throttle, key_prefix=session.redis.key_prefix, client=redis_client)
