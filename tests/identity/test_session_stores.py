"""One conformance suite for every session backend, then what is specific to each."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any, Protocol

import pytest
import redis.asyncio as aioredis

from gateway.config.settings import CookieStoreSettings, RedisSettings, SessionSettings
from gateway.identity.redis_client import create_redis_client
from gateway.identity.sessions import SessionManager, SessionStoreUnavailable, create_sessions
from gateway.identity.sessions.base import ProviderLogin
from gateway.identity.sessions.cookie import MAX_COOKIE_CHARS, CookieSessionStore
from gateway.identity.sessions.memory import MemorySessionStore
from gateway.identity.sessions.redis import RedisSessionStore
from tests.redis_support import RedisServer, closed_port_url

SessionStore = SessionManager  # what the suite drives: the manager over each backend's store

T0 = 1_700_000_000.0
IDLE = 100.0
ABSOLUTE = 1000.0
BACKENDS = ["memory", "redis", "cookie"]


class MakeStore(Protocol):
    def __call__(
        self, *, idle: float = IDLE, absolute: float = ABSOLUTE, max_sessions: int = 100_000
    ) -> SessionStore: ...


def session_settings(backend: str, **overrides: Any) -> SessionSettings:
    return replace(
        SessionSettings(
            backend=backend,  # type: ignore[arg-type]
            idle_timeout_s=IDLE,
            absolute_timeout_s=ABSOLUTE,
            cookie=CookieStoreSettings(secret=secrets.token_bytes(32)),
        ),
        **overrides,
    )


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest) -> Callable[..., SessionSettings]:
    """Settings for the backend under test; Redis is asked for only by the redis variant."""
    backend: str = request.param
    redis = RedisSettings()
    if backend == "redis":
        redis = RedisSettings(
            url=request.getfixturevalue("redis_url"),
            key_prefix=request.getfixturevalue("redis_prefix"),
        )
    secret = secrets.token_bytes(32)

    def build(**overrides: Any) -> SessionSettings:
        settings = session_settings(backend, redis=redis, cookie=CookieStoreSettings(secret=secret))
        return replace(settings, **overrides)

    return build


@pytest.fixture
async def make_store(backend_settings: Callable[..., SessionSettings]) -> AsyncIterator[MakeStore]:
    stores: list[SessionStore] = []
    clients: list[aioredis.Redis] = []

    def make(
        *, idle: float = IDLE, absolute: float = ABSOLUTE, max_sessions: int = 100_000
    ) -> SessionStore:
        settings = backend_settings(idle_timeout_s=idle, absolute_timeout_s=absolute)
        client = None
        if settings.backend == "redis":
            client = create_redis_client(settings.redis)
            clients.append(client)
        store = create_sessions(settings, max_sessions=max_sessions, redis_client=client)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()
    for client in clients:
        await client.aclose()


@pytest.fixture
def store(make_store: MakeStore) -> SessionStore:
    return make_store()


async def alive(store: SessionStore, cookie: str, now: float) -> str | None:
    """Load at ``now``: the cookie to use from now on (refreshed or not), or None if dead."""
    loaded = await store.load(cookie, now=now)
    if loaded is None:
        return None
    return loaded.refreshed_cookie or cookie


# --- conformance: every backend -----------------------------------------------------------------


async def test_created_session_loads_with_its_username(store: SessionStore) -> None:
    cookie, session = await store.create("alice", now=T0)

    loaded = await store.load(cookie, now=T0 + 1)

    assert loaded is not None
    assert loaded.session.username == "alice"
    assert loaded.session.sid_hash == session.sid_hash
    assert loaded.session.created_at == T0
    assert re.fullmatch(r"[0-9a-f]{64}", session.sid_hash)
    assert cookie not in session.sid_hash


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x",
        secrets.token_urlsafe(32),
        "A" * 43,
        "A" * 5000,
        "not base64 at all!",
        "é" * 43,
        "\x00" * 43,
        secrets.token_urlsafe(32) + "=",
    ],
    ids=[
        "empty",
        "one-char",
        "unknown-id",
        "zeros",
        "huge",
        "punctuation",
        "non-ascii",
        "nul",
        "padded",
    ],
)
async def test_unknown_or_garbage_cookie_is_no_session(store: SessionStore, value: str) -> None:
    await store.create("alice", now=T0)

    assert await store.load(value, now=T0) is None
    await store.delete(value)  # never raises either


async def test_idle_timeout_ends_session(store: SessionStore) -> None:
    cookie, _ = await store.create("alice", now=T0)

    assert await store.load(cookie, now=T0 + IDLE + 1) is None


async def test_absolute_timeout_ends_session_despite_activity(make_store: MakeStore) -> None:
    store = make_store(idle=100, absolute=300)
    cookie, _ = await store.create("alice", now=T0)

    for step in range(1, 7):
        current = await alive(store, cookie, T0 + step * 50)
        assert current is not None, f"ended early at +{step * 50}s"
        cookie = current

    assert await store.load(cookie, now=T0 + 301) is None


async def test_activity_slides_idle_timeout(store: SessionStore) -> None:
    cookie, _ = await store.create("alice", now=T0)

    refreshed = await alive(store, cookie, T0 + 90)
    assert refreshed is not None
    # Past the original idle deadline (T0 + 100), alive thanks to the activity at +90.
    later = await alive(store, refreshed, T0 + 150)
    assert later is not None

    assert await store.load(later, now=T0 + 150 + IDLE + 1) is None


async def test_delete_makes_cookie_worthless(store: SessionStore) -> None:
    cookie, _ = await store.create("alice", now=T0)
    other, _ = await store.create("alice", now=T0)

    await store.delete(cookie)

    assert await store.load(cookie, now=T0 + 1) is None
    assert await store.load(other, now=T0 + 1) is not None


async def test_delete_of_refreshed_cookie_also_ends_the_original(store: SessionStore) -> None:
    cookie, _ = await store.create("alice", now=T0)
    refreshed = await alive(store, cookie, T0 + 90)
    assert refreshed is not None

    await store.delete(refreshed)

    assert await store.load(refreshed, now=T0 + 91) is None
    assert await store.load(cookie, now=T0 + 91) is None


async def test_delete_user_ends_all_their_sessions_only(
    store: SessionStore, backend_settings: Callable[..., SessionSettings]
) -> None:
    alice1, _ = await store.create("alice", now=T0)
    alice2, _ = await store.create("alice", now=T0 + 1)
    bob, _ = await store.create("bob", now=T0 + 2)

    if backend_settings().backend == "cookie":
        # Documented limit: stateless sessions cannot be found by user, so none is ended
        # (and the count says so rather than pretending).
        assert await store.delete_user("alice") == 0
        assert await store.load(alice1, now=T0 + 3) is not None
        return
    assert await store.delete_user("alice") == 2

    assert await store.load(alice1, now=T0 + 3) is None
    assert await store.load(alice2, now=T0 + 3) is None
    loaded = await store.load(bob, now=T0 + 3)
    assert loaded is not None and loaded.session.username == "bob"
    assert await store.delete_user("alice") == 0
    assert await store.delete_user("nobody") == 0


def corp(subject: str, sid: str = "", **fields: Any) -> ProviderLogin:
    return ProviderLogin(
        idp="corp",
        issuer="https://id.example.com",
        subject=subject,
        sid=sid,
        email=f"{subject}@example.com",
        email_verified=True,
        name=subject.title(),
        roles=("admin", "ops"),
        id_token="eyJhbGciOiJSUzI1NiJ9." + "x" * 700 + ".sig",
        **fields,
    )


async def test_provider_session_keeps_its_provider_identity(store: SessionStore) -> None:
    provider = corp("u-1", sid="op-session-1")
    cookie, _ = await store.create("alice", now=T0, provider=provider)

    loaded = await store.load(cookie, now=T0 + 90)  # past the refresh interval: re-recorded
    assert loaded is not None
    assert loaded.session.provider == provider
    again = await store.load(loaded.refreshed_cookie or cookie, now=T0 + 91)
    assert again is not None and again.session.provider == provider


async def test_back_channel_logout_ends_the_sessions_of_one_provider_session(
    store: SessionStore,
) -> None:
    first, _ = await store.create("alice", now=T0, provider=corp("u-1", sid="op-1"))
    same_op_session, _ = await store.create("alice", now=T0, provider=corp("u-1", sid="op-1"))
    other_op_session, _ = await store.create("alice", now=T0, provider=corp("u-1", sid="op-2"))
    local, _ = await store.create("alice", now=T0)

    await store.delete_provider_sessions("corp", sid="op-1", subject="u-1", now=T0 + 1)

    assert await store.load(first, now=T0 + 2) is None
    assert await store.load(same_op_session, now=T0 + 2) is None
    assert await store.load(other_op_session, now=T0 + 2) is not None
    assert await store.load(local, now=T0 + 2) is not None


async def test_back_channel_logout_by_subject_ends_every_session_of_that_user(
    store: SessionStore,
) -> None:
    first, _ = await store.create("alice", now=T0, provider=corp("u-1", sid="op-1"))
    second, _ = await store.create("alice", now=T0, provider=corp("u-1", sid="op-2"))
    other_user, _ = await store.create("bob", now=T0, provider=corp("u-2", sid="op-3"))
    other_idp, _ = await store.create(
        "alice", now=T0, provider=replace(corp("u-1", sid="op-1"), idp="partner")
    )

    await store.delete_provider_sessions("corp", sid=None, subject="u-1", now=T0 + 1)

    assert await store.load(first, now=T0 + 2) is None
    assert await store.load(second, now=T0 + 2) is None
    assert await store.load(other_user, now=T0 + 2) is not None
    assert await store.load(other_idp, now=T0 + 2) is not None


async def test_known_users_lists_local_sessions_only(
    store: SessionStore, backend_settings: Callable[..., SessionSettings]
) -> None:
    await store.create("alice", now=T0)
    await store.create("zed", now=T0, provider=corp("u-9"))

    expected = set() if backend_settings().backend == "cookie" else {"alice"}
    assert await store.known_users() == expected


async def test_delete_user_also_ends_their_provider_sessions(
    store: SessionStore, backend_settings: Callable[..., SessionSettings]
) -> None:
    cookie, _ = await store.create("zed", now=T0, provider=corp("u-9", sid="op-9"))

    if backend_settings().backend == "cookie":
        assert await store.delete_user("zed") == 0
        return
    assert await store.delete_user("zed") == 1
    assert await store.load(cookie, now=T0 + 1) is None


async def test_every_create_issues_a_new_cookie(store: SessionStore) -> None:
    created = [await store.create("alice", now=T0) for _ in range(20)]

    assert len({cookie for cookie, _ in created}) == 20
    assert len({session.sid_hash for _, session in created}) == 20


async def test_concurrent_creates_and_loads_are_consistent(store: SessionStore) -> None:
    async def login_then_load(i: int) -> tuple[str, str, str | None]:
        cookie, session = await store.create(f"user{i}", now=T0)
        loaded = await store.load(cookie, now=T0 + 1)
        return cookie, session.sid_hash, loaded.session.username if loaded else None

    results = await asyncio.gather(*(login_then_load(i) for i in range(100)))

    assert [username for _, _, username in results] == [f"user{i}" for i in range(100)]
    assert len({cookie for cookie, _, _ in results}) == 100
    assert len({sid for _, sid, _ in results}) == 100


async def test_ping_when_available(store: SessionStore) -> None:
    assert await store.ping() is True


# --- memory ------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def memory_clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def memory(memory_clock: Clock) -> SessionManager:
    store = MemorySessionStore(max_sessions=3, clock=memory_clock)
    return SessionManager(store, session_settings("memory"))


async def test_memory_session_id_is_256_bits_and_stored_hashed(memory: SessionManager) -> None:
    cookie, session = await memory.create("alice", now=T0)

    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie)
    assert len(base64.urlsafe_b64decode(cookie + "=")) == 32
    assert session.sid_hash == hashlib.sha256(cookie.encode()).hexdigest()


async def test_memory_bound_evicts_oldest(memory: SessionManager) -> None:
    cookies = [(await memory.create(f"user{i}", now=T0 + i))[0] for i in range(4)]

    assert memory.count() == 3
    assert await memory.load(cookies[0], now=T0 + 5) is None
    for cookie in cookies[1:]:
        assert await memory.load(cookie, now=T0 + 5) is not None
    assert await memory.delete_user("user0") == 0  # the index forgot the evicted session


async def test_memory_sweeps_expired_sessions(memory: SessionManager, memory_clock: Clock) -> None:
    for i in range(3):
        await memory.create(f"user{i}", now=T0)
    memory_clock.now = T0 + 1
    assert memory.count() == 3

    memory_clock.now = T0 + IDLE + 1
    assert memory.count() == 0
    memory_clock.now = T0 + IDLE + 2
    await memory.create("late", now=T0 + IDLE + 2)
    assert memory.count() == 1
    assert await memory.delete_user("user0") == 0


# --- redis -------------------------------------------------------------------------------------


@pytest.fixture
def redis_settings(redis_url: str, redis_prefix: str) -> SessionSettings:
    return session_settings("redis", redis=RedisSettings(url=redis_url, key_prefix=redis_prefix))


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def redis_manager(settings: SessionSettings, client: aioredis.Redis) -> SessionManager:
    store = RedisSessionStore(
        client, key_prefix=settings.redis.key_prefix, absolute_timeout_s=settings.absolute_timeout_s
    )
    return SessionManager(store, settings)


@pytest.fixture
async def redis_client(redis_settings: SessionSettings) -> AsyncIterator[aioredis.Redis]:
    client = create_redis_client(redis_settings.redis)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_store(
    redis_settings: SessionSettings, redis_client: aioredis.Redis
) -> AsyncIterator[SessionManager]:
    store = redis_manager(redis_settings, redis_client)
    yield store
    await store.close()


async def test_redis_keys_hold_only_the_hash_and_expire(
    redis_store: SessionManager, raw: aioredis.Redis, redis_prefix: str
) -> None:
    cookie, session = await redis_store.create("alice", now=time.time())
    sid_hash = hashlib.sha256(cookie.encode()).hexdigest()

    keys = {key async for key in raw.scan_iter(match=redis_prefix + "*")}

    assert session.sid_hash == sid_hash
    assert keys == {f"{redis_prefix}s:{sid_hash}", f"{redis_prefix}u:alice"}
    stored = await raw.hgetall(f"{redis_prefix}s:{sid_hash}")
    index = await raw.zrange(f"{redis_prefix}u:alice", 0, -1)
    assert stored["username"] == "alice"
    assert index == [sid_hash]
    for text in [*keys, *stored.values(), *index]:
        assert cookie not in text
    assert 0 < await raw.pttl(f"{redis_prefix}s:{sid_hash}") <= IDLE * 1000
    assert 0 < await raw.ttl(f"{redis_prefix}u:alice") <= ABSOLUTE


async def test_redis_load_within_refresh_interval_does_not_write(
    redis_settings: SessionSettings,
    redis_client: aioredis.Redis,
    raw: aioredis.Redis,
    redis_prefix: str,
) -> None:
    store = redis_manager(replace(redis_settings, idle_timeout_s=600.0), redis_client)
    try:
        assert store.refresh_interval_s == 60.0
        start = time.time()
        cookie, session = await store.create("alice", now=start)
        key = f"{redis_prefix}s:{session.sid_hash}"
        stamp = await raw.hget(key, "last_seen_at")
        ttl = await raw.pttl(key)

        for offset in (1, 30, 59):
            assert await store.load(cookie, now=start + offset) is not None
            assert await raw.hget(key, "last_seen_at") == stamp
            assert await raw.pttl(key) <= ttl

        loaded = await store.load(cookie, now=start + 61)
        assert loaded is not None and loaded.session.last_seen_at == start + 61
        assert await raw.hget(key, "last_seen_at") == repr(start + 61)
        assert await raw.pttl(key) > 599_000
    finally:
        await store.close()


async def test_redis_ttl_never_outlives_the_absolute_timeout(
    redis_settings: SessionSettings,
    redis_client: aioredis.Redis,
    raw: aioredis.Redis,
    redis_prefix: str,
) -> None:
    store = redis_manager(replace(redis_settings, absolute_timeout_s=150.0), redis_client)
    try:
        start = time.time()
        cookie, session = await store.create("alice", now=start)
        assert await store.load(cookie, now=start + 90) is not None

        # Slid at +90: 100 s of idle time left, but only 60 s until the absolute timeout.
        pttl = await raw.pttl(f"{redis_prefix}s:{session.sid_hash}")
        assert 55_000 < pttl <= 60_000
    finally:
        await store.close()


async def test_redis_delete_removes_the_index_entry(
    redis_store: SessionManager, raw: aioredis.Redis, redis_prefix: str
) -> None:
    cookie, _ = await redis_store.create("alice", now=time.time())
    _, other_session = await redis_store.create("alice", now=time.time())

    await redis_store.delete(cookie)

    assert await raw.zrange(f"{redis_prefix}u:alice", 0, -1) == [other_session.sid_hash]


async def test_redis_shared_client_is_left_open(
    redis_settings: SessionSettings, redis_url: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = create_sessions(redis_settings, redis_client=client)
        await store.create("alice", now=time.time())
        await store.close()
        assert await client.ping()
    finally:
        await client.aclose()


@pytest.fixture
def unreachable_settings() -> SessionSettings:
    return session_settings("redis", redis=RedisSettings(url=closed_port_url(), key_prefix="gw:"))


async def test_redis_unreachable_fails_closed(
    unreachable_settings: SessionSettings, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_redis_client(unreachable_settings.redis)
    store = redis_manager(unreachable_settings, client)
    cookie = secrets.token_urlsafe(32)
    started = time.monotonic()
    try:
        with pytest.raises(SessionStoreUnavailable) as caught:
            await store.load(cookie, now=T0)
        with pytest.raises(SessionStoreUnavailable):
            await store.create("alice", now=T0)
        with pytest.raises(SessionStoreUnavailable):
            await store.delete(cookie)
        with pytest.raises(SessionStoreUnavailable):
            await store.delete_user("alice")
        assert await store.ping() is False
    finally:
        await store.close()
        await client.aclose()

    assert time.monotonic() - started < 5
    assert caught.value.status == 503
    assert caught.value.__suppress_context__
    assert cookie not in str(caught.value)
    assert cookie not in caplog.text


async def test_redis_killed_mid_way_fails_closed(own_redis_server: RedisServer) -> None:
    settings = session_settings("redis", redis=RedisSettings(url=own_redis_server.url))
    client = create_redis_client(settings.redis)
    store = redis_manager(settings, client)
    try:
        cookie, _ = await store.create("alice", now=T0)
        assert await store.load(cookie, now=T0 + 1) is not None
        assert await store.ping() is True

        own_redis_server.stop()

        with pytest.raises(SessionStoreUnavailable):
            await store.load(cookie, now=T0 + 2)
        with pytest.raises(SessionStoreUnavailable):
            await store.create("bob", now=T0 + 2)
        assert await store.ping() is False
    finally:
        await store.close()
        await client.aclose()


# --- cookie ------------------------------------------------------------------------------------


@pytest.fixture
def cookie_settings() -> SessionSettings:
    return session_settings("cookie")


def cookie_manager(settings: SessionSettings, *, max_revoked: int = 100_000) -> SessionManager:
    store = CookieSessionStore(settings.cookie.secret, max_revoked=max_revoked)
    return SessionManager(store, settings)


@pytest.fixture
def cookie_store(cookie_settings: SessionSettings) -> SessionManager:
    return cookie_manager(cookie_settings)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _each_char_changed(value: str) -> Iterator[str]:
    for i, char in enumerate(value):
        yield value[:i] + ("A" if char != "A" else "B") + value[i + 1 :]


async def test_cookie_with_any_character_changed_is_no_session(
    cookie_store: SessionManager,
) -> None:
    cookie, _ = await cookie_store.create("alice", now=T0)

    for tampered in _each_char_changed(cookie):
        assert await cookie_store.load(tampered, now=T0) is None


async def test_cookie_with_any_bit_flipped_is_no_session(cookie_store: SessionManager) -> None:
    cookie, _ = await cookie_store.create("alice", now=T0)
    raw = _unb64(cookie)

    for i in range(len(raw)):
        flipped = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]
        assert await cookie_store.load(_b64(flipped), now=T0) is None


async def test_cookie_truncated_or_extended_is_no_session(cookie_store: SessionManager) -> None:
    cookie, _ = await cookie_store.create("alice", now=T0)

    for length in range(len(cookie)):
        assert await cookie_store.load(cookie[:length], now=T0) is None
    assert await cookie_store.load(cookie + "A", now=T0) is None
    assert await cookie_store.load(cookie + "AAAA", now=T0) is None


async def test_cookie_under_another_key_is_no_session(cookie_settings: SessionSettings) -> None:
    ours = cookie_manager(cookie_settings)
    theirs = cookie_manager(
        replace(cookie_settings, cookie=CookieStoreSettings(secret=secrets.token_bytes(32)))
    )
    cookie, _ = await theirs.create("alice", now=T0)

    assert await ours.load(cookie, now=T0) is None


async def test_cookie_of_another_version_is_no_session(cookie_store: SessionManager) -> None:
    cookie, _ = await cookie_store.create("alice", now=T0)
    raw = _unb64(cookie)

    assert await cookie_store.load(_b64(b"\x01" + raw[1:]), now=T0) is None
    assert await cookie_store.load(_b64(b"\x03" + raw[1:]), now=T0) is None


async def test_cookie_over_4096_chars_is_refused_unread(cookie_store: SessionManager) -> None:
    cookie, _ = await cookie_store.create("alice", now=T0)

    assert await cookie_store.load(cookie + "A" * MAX_COOKIE_CHARS, now=T0) is None


async def test_cookie_stays_under_4kb_with_a_long_username(
    cookie_store: SessionManager,
) -> None:
    username = "u" * 200
    cookie, _ = await cookie_store.create(username, now=T0)

    assert len(f"gw_session={cookie}".encode()) < 4096
    loaded = await cookie_store.load(cookie, now=T0)
    assert loaded is not None and loaded.session.username == username


async def test_cookie_refuses_a_username_that_cannot_fit(cookie_store: SessionManager) -> None:
    with pytest.raises(ValueError, match="too long"):
        await cookie_store.create("u" * 4000, now=T0)


async def test_cookie_leaves_out_an_id_token_that_cannot_fit(
    cookie_store: SessionManager,
) -> None:
    provider = replace(corp("u-1", sid="op-1"), id_token="x" * 3500)
    cookie, _ = await cookie_store.create("alice", now=T0, provider=provider)

    assert len(cookie) <= MAX_COOKIE_CHARS
    loaded = await cookie_store.load(cookie, now=T0)
    assert loaded is not None and loaded.session.provider == replace(provider, id_token="")


async def test_cookie_payload_is_not_readable(cookie_store: SessionManager) -> None:
    username = "alice.wonderland"
    cookie, _ = await cookie_store.create(username, now=T0)

    assert username not in cookie
    assert username.encode() not in _unb64(cookie)
    assert b"alice" not in _unb64(cookie)


async def test_cookie_is_refreshed_only_after_the_refresh_interval(
    cookie_store: SessionManager,
) -> None:
    cookie, session = await cookie_store.create("alice", now=T0)
    interval = cookie_store.refresh_interval_s

    quiet = await cookie_store.load(cookie, now=T0 + interval - 1)
    assert quiet is not None and quiet.refreshed_cookie is None

    loaded = await cookie_store.load(cookie, now=T0 + interval + 1)
    assert loaded is not None and loaded.refreshed_cookie not in (None, cookie)
    assert loaded.session.sid_hash == session.sid_hash
    assert loaded.session.last_seen_at == T0 + interval + 1


async def test_cookie_logout_holds_in_this_process_only(
    cookie_settings: SessionSettings,
) -> None:
    """Documented limit: another replica (same secret) still accepts a logged-out cookie."""
    here, replica = cookie_manager(cookie_settings), cookie_manager(cookie_settings)
    cookie, _ = await here.create("alice", now=T0)

    await here.delete(cookie)

    assert await here.load(cookie, now=T0 + 1) is None
    assert await replica.load(cookie, now=T0 + 1) is not None


async def test_cookie_revocations_are_bounded(cookie_settings: SessionSettings) -> None:
    store = cookie_manager(cookie_settings, max_revoked=2)
    cookies = [(await store.create("alice", now=T0))[0] for _ in range(3)]

    for cookie in cookies:
        await store.delete(cookie)

    # The oldest revocation was forgotten to keep the bound; the newest hold.
    assert await store.load(cookies[0], now=T0 + 1) is not None
    assert await store.load(cookies[1], now=T0 + 1) is None
    assert await store.load(cookies[2], now=T0 + 1) is None


async def test_cookie_delete_user_cannot_end_sessions(cookie_store: SessionManager) -> None:
    cookie, _ = await cookie_store.create("alice", now=T0)

    assert await cookie_store.delete_user("alice") == 0
    assert await cookie_store.load(cookie, now=T0 + 1) is not None


@pytest.mark.parametrize("secret", [None, b"", b"x" * 31], ids=["missing", "empty", "31-bytes"])
def test_cookie_backend_needs_a_32_byte_secret(secret: bytes | None) -> None:
    settings = session_settings("cookie", cookie=CookieStoreSettings(secret=secret))

    with pytest.raises(ValueError, match="at least 32 bytes"):
        create_sessions(settings)
