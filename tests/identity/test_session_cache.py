"""Redis sessions kept in the process (gateway/identity/sessions/tracking.py): what a replica
serves from its cache, and every way a write elsewhere must end that at once.

Each "replica" is a session manager with its own Redis client and cache, as two gateway
processes would have; they share one real Redis.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import metrics
from gateway.config.settings import RedisSettings, SessionSettings
from gateway.identity.redis_client import GatewayRedis, create_redis_client
from gateway.identity.sessions import SessionManager, SessionStoreUnavailable, create_sessions
from gateway.identity.sessions.redis import RedisSessionStore
from gateway.identity.sessions.tracking import SessionCache
from tests.redis_support import RedisServer

IDLE = 600.0
ABSOLUTE = 3600.0

Replica = Callable[..., Awaitable[SessionManager]]


def cache_of(manager: SessionManager) -> SessionCache:
    store = manager.store
    assert isinstance(store, RedisSessionStore)
    assert store.cache is not None
    return store.cache


async def until(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def replica(redis: RedisSettings) -> tuple[SessionManager, GatewayRedis]:
    """A session manager over a client and cache of its own, as one gateway process has."""
    client = create_redis_client(redis)
    settings = SessionSettings(
        backend="redis", idle_timeout_s=IDLE, absolute_timeout_s=ABSOLUTE, redis=redis
    )
    return create_sessions(settings, redis_client=client), client


@pytest.fixture
async def replicas(redis_url: str, redis_prefix: str) -> AsyncIterator[Replica]:
    """``await replicas(**redis_settings)``: a :func:`replica`; all are closed afterwards."""
    made: list[tuple[SessionManager, GatewayRedis]] = []

    async def make(*, url: str = redis_url, **overrides: object) -> SessionManager:
        redis = replace(RedisSettings(url=url, key_prefix=redis_prefix), **overrides)  # type: ignore[arg-type]
        made.append(replica(redis))
        return made[-1][0]

    yield make
    for manager, client in made:
        await manager.close()
        await client.aclose()


async def cached(manager: SessionManager, cookie: str) -> None:
    """Load ``cookie`` until ``manager`` serves it from its cache."""
    cache = cache_of(manager)
    deadline = time.monotonic() + 5
    while True:
        loaded = await manager.load(cookie, now=time.time())
        assert loaded is not None
        if cache.lookup(loaded.session.sid_hash) is not None:
            return
        assert time.monotonic() < deadline, "the session was never kept"
        await asyncio.sleep(0.01)


async def hmget_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    entry = stats.get("cmdstat_hmget", {})
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


# --- served from the cache --------------------------------------------------------------------


async def test_a_cached_session_costs_redis_no_read(own_redis_server: RedisServer) -> None:
    manager, client = replica(RedisSettings(url=own_redis_server.url, key_prefix="c:"))
    raw = aioredis.Redis.from_url(own_redis_server.url)
    live_before = metrics.SESSION_CACHE_LIVE._value.get()
    try:
        cookie, session = await manager.create("alice", now=time.time())
        await cached(manager, cookie)
        before = await hmget_calls(raw)

        for _ in range(200):
            loaded = await manager.load(cookie, now=time.time())
            assert loaded is not None
            assert loaded.session.username == "alice"
            assert loaded.session.sid_hash == session.sid_hash

        assert await hmget_calls(raw) == before
        assert metrics.SESSION_CACHE_LIVE._value.get() == live_before + 1
    finally:
        await manager.close()
        await client.aclose()
        await raw.aclose()
    assert metrics.SESSION_CACHE_LIVE._value.get() == live_before


async def test_without_the_cache_every_load_reads_redis(own_redis_server: RedisServer) -> None:
    settings = RedisSettings(url=own_redis_server.url, key_prefix="c:", cache=False)
    manager, client = replica(settings)
    raw = aioredis.Redis.from_url(own_redis_server.url)
    try:
        store = manager.store
        assert isinstance(store, RedisSessionStore)
        assert store.cache is None
        cookie, _ = await manager.create("alice", now=time.time())
        before = await hmget_calls(raw)
        for _ in range(20):
            assert await manager.load(cookie, now=time.time()) is not None
        assert await hmget_calls(raw) == before + 20
    finally:
        await manager.close()
        await client.aclose()
        await raw.aclose()


async def test_unknown_cookies_are_never_kept(replicas: Replica) -> None:
    replica = await replicas()
    cookie, _ = await replica.create("alice", now=time.time())
    await cached(replica, cookie)

    for n in range(50):
        assert await replica.load(f"{n:043d}", now=time.time()) is None

    assert len(cache_of(replica)) == 1


async def test_the_cache_holds_at_most_max_entries(replicas: Replica) -> None:
    replica = await replicas(cache_max_entries=3)
    cookies = [(await replica.create(f"user{n}", now=time.time()))[0] for n in range(7)]
    await cached(replica, cookies[0])

    for cookie in cookies:
        loaded = await replica.load(cookie, now=time.time())
        assert loaded is not None
        assert len(cache_of(replica)) <= 3


# --- a write anywhere ends what the cache serves --------------------------------------------------


@pytest.mark.parametrize("protocol", ["2", "3"])
async def test_a_logout_on_another_replica_ends_the_session_here_at_once(
    replicas: Replica, redis_url: str, protocol: str
) -> None:
    url = f"{redis_url}{'&' if '?' in redis_url else '?'}protocol={protocol}"
    here, there = await replicas(url=url), await replicas(url=url)
    for _ in range(30):
        cookie, _ = await here.create("alice", now=time.time())
        await cached(here, cookie)

        assert await there.delete(cookie) is not None

        # No pause: the next request on this replica must already miss.
        assert await here.load(cookie, now=time.time()) is None


async def test_revoking_a_user_elsewhere_ends_their_cached_sessions(replicas: Replica) -> None:
    here, there = await replicas(), await replicas()
    cookies = [(await here.create("alice", now=time.time()))[0] for _ in range(3)]
    bob, _ = await here.create("bob", now=time.time())
    for cookie in [*cookies, bob]:
        await cached(here, cookie)

    assert await there.delete_user("alice") == 3

    for cookie in cookies:
        assert await here.load(cookie, now=time.time()) is None
    assert await here.load(bob, now=time.time()) is not None


async def test_a_refresh_elsewhere_is_seen_here(replicas: Replica) -> None:
    here, there = await replicas(), await replicas()
    start = time.time()
    cookie, _ = await here.create("alice", now=start)
    await cached(here, cookie)

    later = start + IDLE / 2  # past the refresh interval: `there` records activity
    refreshed = await there.load(cookie, now=later)
    assert refreshed is not None
    assert refreshed.session.last_seen_at == later

    loaded = await here.load(cookie, now=later)
    assert loaded is not None
    assert loaded.session.last_seen_at == later


async def test_any_write_to_the_record_is_seen_at_once(
    replicas: Replica, redis_url: str, redis_prefix: str
) -> None:
    here = await replicas()
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        cookie, session = await here.create("alice", now=time.time())
        await cached(here, cookie)

        await raw.hset(f"{redis_prefix}s:{session.sid_hash}", "username", "mallory-fixed")

        loaded = await here.load(cookie, now=time.time())
        assert loaded is not None
        assert loaded.session.username == "mallory-fixed"
    finally:
        await raw.aclose()


async def test_a_record_that_expires_in_redis_is_dropped(
    replicas: Replica, redis_url: str, redis_prefix: str
) -> None:
    here = await replicas()
    raw = aioredis.Redis.from_url(redis_url)
    try:
        cookie, session = await here.create("alice", now=time.time())
        await cached(here, cookie)

        await raw.pexpire(f"{redis_prefix}s:{session.sid_hash}", 1000)
        await cached(here, cookie)  # read again after that write, before the record expires

        # Nobody touches the key: Redis's own expiry reports it (before max_age, 10 s).
        await until(lambda: len(cache_of(here)) == 0, within=5)
        assert await here.load(cookie, now=time.time()) is None
    finally:
        await raw.aclose()


async def test_a_flush_empties_the_cache(own_redis_server: RedisServer, replicas: Replica) -> None:
    here = await replicas(url=own_redis_server.url)
    raw = aioredis.Redis.from_url(own_redis_server.url)
    try:
        cookie, _ = await here.create("alice", now=time.time())
        await cached(here, cookie)

        await raw.flushall()

        assert await here.load(cookie, now=time.time()) is None
    finally:
        await raw.aclose()


async def test_a_read_overtaken_by_a_write_of_its_key_is_not_kept(
    replicas: Replica, redis_prefix: str
) -> None:
    here = await replicas()
    cache = cache_of(here)
    cookie, session = await here.create("alice", now=time.time())
    other_cookie, other = await here.create("bob", now=time.time())
    await cached(here, cookie)
    sid = session.sid_hash

    def key(of: str) -> bytes:
        return f"{redis_prefix}s:{of}".encode()

    # A read begins, a report of a write to its key arrives, then the read's answer: not kept.
    cache.forget(sid)
    epoch = cache.begin(sid)
    cache.invalidate([key(sid)])
    cache.end(sid, epoch, session)
    assert cache.lookup(sid) is None

    # Two reads of one key in flight, the write between them: neither is kept.
    first = cache.begin(sid)
    cache.invalidate([key(sid)])
    second = cache.begin(sid)
    cache.end(sid, first, session)
    cache.end(sid, second, session)
    assert cache.lookup(sid) is None

    # This replica's own write, likewise; and a flush of everything.
    epoch = cache.begin(sid)
    cache.forget(sid)
    cache.end(sid, epoch, session)
    assert cache.lookup(sid) is None
    epoch = cache.begin(sid)
    cache.invalidate(None)
    cache.end(sid, epoch, session)
    assert cache.lookup(sid) is None

    # A write to another session does not spoil the read (nor does a failed read linger).
    epoch = cache.begin(sid)
    cache.invalidate([key(other.sid_hash), b"elsewhere:s:" + sid.encode()])
    cache.end(sid, epoch, session)
    assert cache.lookup(sid) is session
    epoch = cache.begin(other.sid_hash)
    cache.end(other.sid_hash, epoch, None)  # the read failed
    assert await here.load(other_cookie, now=time.time()) is not None
    assert cache.lookup(other.sid_hash) is not None


async def test_a_write_redis_does_not_report_is_seen_after_max_age(
    own_redis_server: RedisServer, replicas: Replica
) -> None:
    here = await replicas(url=own_redis_server.url, cache_max_age_s=0.5)
    raw = aioredis.Redis.from_url(own_redis_server.url)
    try:
        cookie, _ = await here.create("alice", now=time.time())
        await cached(here, cookie)

        await raw.swapdb(0, 1)  # the session is gone from db 0, and Redis reports nothing
        await asyncio.sleep(0.1)
        assert len(cache_of(here)) == 1

        deadline = time.monotonic() + 3
        while await here.load(cookie, now=time.time()) is not None:
            assert time.monotonic() < deadline, "still served long after max_age"
            await asyncio.sleep(0.05)
    finally:
        await raw.aclose()


async def test_no_hits_while_the_breaker_is_open(redis_url: str, redis_prefix: str) -> None:
    settings = RedisSettings(url=redis_url, key_prefix=redis_prefix)
    manager, client = replica(settings)
    try:
        cookie, session = await manager.create("alice", now=time.time())
        await cached(manager, cookie)

        client.breaker.failure(False, "a failed request")  # Redis failed for a request

        assert cache_of(manager).lookup(session.sid_hash) is None
        with pytest.raises(SessionStoreUnavailable):
            await manager.load(cookie, now=time.time())  # refused at once: the breaker is open
    finally:
        await manager.close()
        await client.aclose()


async def test_a_local_logout_ends_the_cached_session(replicas: Replica) -> None:
    here = await replicas()
    cookie, _ = await here.create("alice", now=time.time())
    await cached(here, cookie)

    assert await here.delete(cookie) is not None

    assert await here.load(cookie, now=time.time()) is None


# --- when Redis cannot vouch for the cache, fail closed -------------------------------------------


async def test_a_stopped_redis_is_refused_not_served_from_the_cache(
    own_redis_server: RedisServer, replicas: Replica
) -> None:
    here = await replicas(url=own_redis_server.url)
    cookie, _ = await here.create("alice", now=time.time())
    await cached(here, cookie)

    own_redis_server.stop()

    with pytest.raises(SessionStoreUnavailable):
        await here.load(cookie, now=time.time())
    assert len(cache_of(here)) == 0


async def test_a_frozen_redis_stops_cache_hits_within_max_staleness(
    own_redis_server: RedisServer, replicas: Replica
) -> None:
    here = await replicas(url=own_redis_server.url, cache_max_staleness_s=0.2, timeout_s=0.2)
    cookie, _ = await here.create("alice", now=time.time())
    await cached(here, cookie)

    own_redis_server.freeze()
    try:
        await asyncio.sleep(0.3)
        with pytest.raises(SessionStoreUnavailable):
            await here.load(cookie, now=time.time())
    finally:
        own_redis_server.thaw()

    # Redis is back: the cache connects again and serves again.
    await until(lambda: not cache_of(here).live, within=2)
    await asyncio.sleep(1.1)  # the breaker lets a probe through after a second
    assert await here.load(cookie, now=time.time()) is not None
    await cached(here, cookie)


class Partition:
    """A TCP relay between one replica and Redis that can stop relaying while both ends stay
    connected (a network partition, as the replica sees it)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = asyncio.Event()
        self.open.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await self.open.wait()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for task in (
            asyncio.create_task(pump(reader, up_writer)),
            asyncio.create_task(pump(up_reader, writer)),
        ):
            self._tasks.add(task)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_in_a_partition_a_logout_elsewhere_holds_here_within_max_staleness(
    own_redis_server: RedisServer, replicas: Replica
) -> None:
    partition = Partition(own_redis_server.port)
    await partition.start()
    try:
        # A PING unanswered for timeout_s (2 s) drops the connection; max_staleness (0.3 s)
        # must stop the hits long before that.
        here = await replicas(
            url=f"redis://127.0.0.1:{partition.port}/0", cache_max_staleness_s=0.3, timeout_s=2
        )
        there = await replicas(url=own_redis_server.url)
        cookie, session = await here.create("alice", now=time.time())
        await cached(here, cookie)

        partition.open.clear()  # nothing reaches `here` any more, nothing leaves it
        assert await there.delete(cookie) is not None
        await asyncio.sleep(0.4)

        assert cache_of(here).live  # the connection is not known to be lost yet...
        assert cache_of(here).lookup(session.sid_hash) is None  # ...but cannot vouch any more
        with pytest.raises(SessionStoreUnavailable):
            await here.load(cookie, now=time.time())

        partition.open.set()
        await asyncio.sleep(1.1)  # the breaker probes again after a second
        assert await here.load(cookie, now=time.time()) is None
    finally:
        await partition.close()


async def test_a_redis_that_refuses_tracking_is_read_on_every_request(
    own_redis_server: RedisServer, replicas: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    admin = aioredis.Redis.from_url(own_redis_server.url)
    try:
        await admin.execute_command(
            "ACL", "SETUSER", "gw", "on", ">secret-pw", "~*", "&*", "+@all", "-client"
        )
        url = f"redis://gw:secret-pw@127.0.0.1:{own_redis_server.port}/0"
        with caplog.at_level(logging.INFO, logger="gateway.store"):
            here = await replicas(url=url)
            cookie, _ = await here.create("alice", now=time.time())
            assert await here.load(cookie, now=time.time()) is not None
            await until(lambda: "session cache off" in caplog.text)
        before = await hmget_calls(admin)

        for _ in range(10):
            assert await here.load(cookie, now=time.time()) is not None

        assert await hmget_calls(admin) == before + 10
        assert not cache_of(here).live
        assert "refused client tracking" in caplog.text
        assert "NOPERM" in caplog.text
        assert "secret-pw" not in caplog.text
    finally:
        await admin.aclose()


async def test_tracking_refused_after_the_cache_was_on_says_so(
    own_redis_server: RedisServer, replicas: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    setup = aioredis.Redis.from_url(own_redis_server.url)
    await setup.execute_command("ACL", "SETUSER", "boss", "on", ">boss-pw", "~*", "&*", "+@all")
    await setup.aclose()
    admin = aioredis.Redis.from_url(f"redis://boss:boss-pw@127.0.0.1:{own_redis_server.port}/0")
    try:
        here = await replicas(url=own_redis_server.url)
        cookie, _ = await here.create("alice", now=time.time())
        await cached(here, cookie)
        with caplog.at_level(logging.INFO, logger="gateway.store"):
            await admin.execute_command("ACL", "SETUSER", "default", "-client")
            await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await until(lambda: "refused client tracking" in caplog.text, within=5)
        assert "NOPERM" in caplog.text
        assert not cache_of(here).live
        assert await here.load(cookie, now=time.time()) is not None
    finally:
        await admin.execute_command("ACL", "SETUSER", "default", "+client")
        await admin.aclose()


async def test_closing_the_store_closes_its_tracking_connection(
    own_redis_server: RedisServer,
) -> None:
    settings = RedisSettings(url=own_redis_server.url, key_prefix="c:")
    manager, client = replica(settings)
    raw = aioredis.Redis.from_url(own_redis_server.url)

    async def tracking_clients() -> int:
        listed = await raw.client_list()
        return sum(1 for entry in listed if "t" in entry.get("flags", ""))

    try:
        cookie, _ = await manager.create("alice", now=time.time())
        await cached(manager, cookie)
        assert await tracking_clients() == 1

        await manager.close()

        await until(lambda: not cache_of(manager).live)
        for _ in range(100):
            if await tracking_clients() == 0:
                break
            await asyncio.sleep(0.02)
        assert await tracking_clients() == 0
    finally:
        await client.aclose()
        await raw.aclose()


# --- every kind of connection the URL may ask for -------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(params=["tls", "unix"])
def other_transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis reached over TLS (rediss://) or a unix socket."""
    if request.param == "tls":
        cert, key = self_signed(tmp_path)
        server = RedisServer(
            *("--port", "0", "--tls-port", "{port}", "--tls-auth-clients", "no"),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-ca-cert-file", str(cert)),
            url=f"rediss://127.0.0.1:{{port}}/0?ssl_ca_certs={cert}",
        )
    else:
        socket = tmp_path / "redis.sock"
        server = RedisServer("--unixsocket", str(socket), url=f"unix://{socket}?db=0")
    try:
        yield server
    finally:
        server.stop()


async def test_the_cache_works_over_tls_and_unix_sockets(
    other_transport: RedisServer, replicas: Replica
) -> None:
    here = await replicas(url=other_transport.url)
    there = await replicas(url=other_transport.url)
    for _ in range(5):
        cookie, _ = await here.create("alice", now=time.time())
        await cached(here, cookie)

        assert await there.delete(cookie) is not None

        assert await here.load(cookie, now=time.time()) is None


async def test_a_replaced_connection_that_ends_late_leaves_the_new_one_alone(
    own_redis_server: RedisServer, replicas: Replica
) -> None:
    # Over TLS the old connection's end can come many seconds after the cache has moved on to
    # a new one (the TLS shutdown waits): it must not turn the new one's cache off.
    here = await replicas(url=own_redis_server.url)
    admin = aioredis.Redis.from_url(own_redis_server.url)
    try:
        cookie, session = await here.create("alice", now=time.time())
        await cached(here, cookie)
        old = cache_of(here)._link
        assert old is not None

        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await until(lambda: cache_of(here)._link not in (None, old), within=5)
        await cached(here, cookie)

        old.connection_lost(None)  # what a late TLS shutdown delivers
        old.data_received(b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*-1\r\n")

        assert cache_of(here).live
        assert cache_of(here).lookup(session.sid_hash) is not None
    finally:
        await admin.aclose()
