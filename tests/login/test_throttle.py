"""Login throttle: the same behaviour from MemoryThrottle and RedisThrottle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.config.settings import RedisSettings, SessionSettings, ThrottleSettings
from gateway.identity.redis_client import create_redis_client
from gateway.identity.sessions import SessionStoreUnavailable
from gateway.login.throttle import (
    MAX_KEY_CHARS,
    MemoryThrottle,
    RedisThrottle,
    Throttle,
    create_throttle,
)
from tests.redis_support import closed_port_url

# Redis keeps real time, so windows are short: every Redis test sleeps at most ~1 s.
SETTINGS = ThrottleSettings(max_failures=3, window_s=1.0, lockout_s=1.0)
ALICE = ["user:alice", "ip:192.0.2.1"]


class Clock:
    """Synthetic time for the memory throttle; real time and sleeps for Redis, whose TTLs are
    real."""

    def __init__(self, *, real: bool) -> None:
        self.real = real
        self._now = 1_000_000.0

    @property
    def now(self) -> float:
        return time.time() if self.real else self._now

    async def advance(self, seconds: float) -> None:
        if self.real:
            await asyncio.sleep(seconds)
        else:
            self._now += seconds


@pytest.fixture(params=["memory", "redis"])
async def throttle_and_clock(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Throttle, Clock]]:
    if request.param == "memory":
        yield MemoryThrottle(SETTINGS), Clock(real=False)
        return
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    client = create_redis_client(RedisSettings(url=url))
    try:
        yield RedisThrottle(SETTINGS, key_prefix=prefix, client=client), Clock(real=True)
    finally:
        await client.aclose()


@pytest.fixture
def throttle(throttle_and_clock: tuple[Throttle, Clock]) -> Throttle:
    return throttle_and_clock[0]


@pytest.fixture
def clock(throttle_and_clock: tuple[Throttle, Clock]) -> Clock:
    return throttle_and_clock[1]


async def fail(throttle: Throttle, keys: list[str], clock: Clock, times: int) -> None:
    """``times`` attempts that each got through the throttle and then failed."""
    for _ in range(times):
        assert await throttle.reserve(keys, now=clock.now)
        await throttle.failure(keys, now=clock.now)


async def allowed(throttle: Throttle, keys: list[str], clock: Clock) -> bool:
    """Whether an attempt on ``keys`` would get through now (then counted as a success)."""
    if not await throttle.reserve(keys, now=clock.now):
        return False
    await throttle.success(keys)
    return True


async def test_locks_after_max_failures_within_window(throttle: Throttle, clock: Clock) -> None:
    await fail(throttle, ALICE, clock, 2)
    await fail(throttle, ALICE, clock, 1)

    assert not await throttle.reserve(ALICE, now=clock.now)
    assert not await throttle.reserve(["user:alice"], now=clock.now)
    assert not await throttle.reserve(["user:bob", "ip:192.0.2.1"], now=clock.now)
    assert await throttle.reserve(["user:bob"], now=clock.now)
    assert await throttle.reserve([], now=clock.now)


async def test_concurrent_attempts_never_exceed_the_limit(throttle: Throttle, clock: Clock) -> None:
    # Ten guesses at once: only max_failures of them get to have their password checked.
    results = await asyncio.gather(*(throttle.reserve(ALICE, now=clock.now) for _ in range(10)))
    assert results.count(True) == SETTINGS.max_failures
    for _ in range(SETTINGS.max_failures):
        await throttle.failure(ALICE, now=clock.now)
    assert not await throttle.reserve(ALICE, now=clock.now)


async def test_a_refused_attempt_counts_nothing(throttle: Throttle, clock: Clock) -> None:
    await fail(throttle, ["user:carol", "ip:198.51.100.9"], clock, 3)  # the address locks
    for _ in range(5):
        assert not await throttle.reserve(["user:dave", "ip:198.51.100.9"], now=clock.now)
    # dave's own count was not touched by those refused attempts.
    await fail(throttle, ["user:dave", "ip:198.51.100.10"], clock, 2)
    assert await allowed(throttle, ["user:dave", "ip:198.51.100.11"], clock)


async def test_lock_lasts_the_whole_lockout_even_after_success(
    throttle: Throttle, clock: Clock
) -> None:
    await fail(throttle, ALICE, clock, 3)
    locked_at = clock.now  # the lock was set before: its real age is at least now - locked_at

    await throttle.success(ALICE)  # the right password does not lift a running lockout
    assert not await throttle.reserve(ALICE, now=clock.now)
    await clock.advance(0.5)
    still_locked = not await throttle.reserve(ALICE, now=clock.now)
    # Halfway through, still locked; only a machine that stalled past the whole lockout (Redis
    # keeps real time) may find it over.
    assert still_locked or clock.now - locked_at >= SETTINGS.lockout_s

    await clock.advance(0.6)
    assert await allowed(throttle, ALICE, clock)


async def test_counting_starts_afresh_after_a_lockout(throttle: Throttle, clock: Clock) -> None:
    await fail(throttle, ALICE, clock, 3)
    await clock.advance(1.1)

    await fail(throttle, ALICE, clock, 2)

    assert await allowed(throttle, ALICE, clock)


async def test_success_resets_the_users_failures_not_the_addresses(
    throttle: Throttle, clock: Clock
) -> None:
    await fail(throttle, ALICE, clock, 2)

    assert await allowed(throttle, ALICE, clock)  # the username's count is reset...
    await fail(throttle, ["user:alice", "ip:192.0.2.77"], clock, 2)
    assert await allowed(throttle, ["user:alice", "ip:192.0.2.78"], clock)
    # ...the address's is not: two failures before, one more locks it.
    await fail(throttle, ["user:bob", "ip:192.0.2.1"], clock, 1)
    assert not await throttle.reserve(["user:carol", "ip:192.0.2.1"], now=clock.now)


async def test_user_and_ip_keys_are_independent(throttle: Throttle, clock: Clock) -> None:
    # One user guessed from three addresses: the user locks, no address does.
    for ip in ("ip:198.51.100.1", "ip:198.51.100.2", "ip:198.51.100.3"):
        await fail(throttle, ["user:bob", ip], clock, 1)
    assert not await throttle.reserve(["user:bob"], now=clock.now)
    assert await allowed(throttle, ["ip:198.51.100.1"], clock)

    # One address guessing three users: the address locks, no user does.
    for user in ("user:carol", "user:dave", "user:erin"):
        await fail(throttle, [user, "ip:203.0.113.9"], clock, 1)
    assert not await throttle.reserve(["ip:203.0.113.9"], now=clock.now)
    assert await allowed(throttle, ["user:carol"], clock)
    assert await allowed(throttle, ["user:alice", "ip:192.0.2.1"], clock)


async def test_window_expiry_resets_counters(throttle: Throttle, clock: Clock) -> None:
    await fail(throttle, ALICE, clock, 2)

    await clock.advance(1.1)
    await fail(throttle, ALICE, clock, 2)

    assert await allowed(throttle, ALICE, clock)


async def test_long_keys_are_throttled_too(throttle: Throttle, clock: Clock) -> None:
    huge = "user:" + "x" * 10_000

    await fail(throttle, [huge], clock, 3)

    assert not await throttle.reserve([huge], now=clock.now)
    assert await allowed(throttle, [huge + "y"], clock)


# --- memory ------------------------------------------------------------------------------------


async def test_memory_throttle_is_bounded() -> None:
    throttle = MemoryThrottle(SETTINGS, max_keys=2)

    for i in range(10):
        assert await throttle.reserve([f"ip:10.0.0.{i}"], now=0.0)
        await throttle.failure([f"ip:10.0.0.{i}"], now=0.0)

    assert len(throttle._counters) == 2


# --- redis -------------------------------------------------------------------------------------


async def test_redis_replicas_share_counters_and_locks(redis_url: str, redis_prefix: str) -> None:
    one = create_redis_client(RedisSettings(url=redis_url))
    two = create_redis_client(RedisSettings(url=redis_url))
    try:
        replica_a = RedisThrottle(SETTINGS, key_prefix=redis_prefix, client=one)
        replica_b = RedisThrottle(SETTINGS, key_prefix=redis_prefix, client=two)
        # Guesses at both replicas at once: together they get max_failures attempts, no more.
        results = await asyncio.gather(
            *(replica.reserve(ALICE, now=0.0) for replica in (replica_a, replica_b) * 5)
        )
        assert results.count(True) == SETTINGS.max_failures
        for _ in range(SETTINGS.max_failures):
            await replica_a.failure(ALICE, now=0.0)

        assert not await replica_a.reserve(ALICE, now=0.0)
        assert not await replica_b.reserve(ALICE, now=0.0)
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_keys_expire_and_stay_short(redis_url: str, redis_prefix: str) -> None:
    client = create_redis_client(RedisSettings(url=redis_url))
    try:
        throttle = RedisThrottle(SETTINGS, key_prefix=redis_prefix, client=client)
        keys = ["user:alice", "user:" + "x" * 10_000]
        assert await throttle.reserve(keys, now=0.0)
        await throttle.failure(keys, now=0.0)

        found = [key async for key in client.scan_iter(match=redis_prefix + "*")]

        assert len(found) == 2
        for key in found:
            assert len(key) <= len(redis_prefix) + 4 + MAX_KEY_CHARS
            assert 0 < await client.pttl(key) <= 1000
    finally:
        await client.aclose()


async def test_redis_throttle_unreachable_fails_closed() -> None:
    client = create_redis_client(RedisSettings(url=closed_port_url()))
    throttle = RedisThrottle(SETTINGS, key_prefix="gw:", client=client)
    try:
        with pytest.raises(SessionStoreUnavailable):
            await throttle.reserve(ALICE, now=0.0)
        with pytest.raises(SessionStoreUnavailable):
            await throttle.failure(ALICE, now=0.0)
        with pytest.raises(SessionStoreUnavailable):
            await throttle.success(ALICE)
    finally:
        await client.aclose()


# --- factory -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "cookie"])
async def test_factory_counts_in_process_without_redis(backend: str) -> None:
    throttle = create_throttle(SessionSettings(backend=backend), SETTINGS)  # type: ignore[arg-type]

    assert isinstance(throttle, MemoryThrottle)
    await throttle.close()


async def test_factory_shares_the_given_redis_client(redis_url: str, redis_prefix: str) -> None:
    session = SessionSettings(
        backend="redis", redis=RedisSettings(url=redis_url, key_prefix=redis_prefix)
    )
    client = create_redis_client(session.redis)
    try:
        throttle = create_throttle(session, SETTINGS, redis_client=client)
        assert isinstance(throttle, RedisThrottle)
        assert await throttle.reserve(ALICE, now=0.0)
        await throttle.close()

        assert await client.exists(f"{redis_prefix}t:c:user:alice") == 1  # still open: shared
    finally:
        await client.aclose()
