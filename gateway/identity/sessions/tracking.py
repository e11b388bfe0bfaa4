"""Sessions read from Redis, kept in this process until Redis says they changed.

Each replica (each worker) opens one connection of its own on which Redis reports every write
to a session key: server-assisted client-side caching, ``CLIENT TRACKING`` in broadcasting mode
for the prefix ``<key_prefix>s:``, redirected to that connection's own subscription to
``__redis__:invalidate``. A login, refresh, logout or revocation on any replica, and an expiry
or eviction in Redis, removes the session from every replica's cache as Redis performs it, so an
authenticated request costs no round trip while its session is unchanged.

What keeps a cached session from outliving its record in Redis:

- **Only while the connection is confirmed.** The connection sends a PING every quarter of
  ``max_staleness``. One connection delivers in order, so when a PING is answered, everything
  Redis wrote before it has arrived. A cached session is served only while a PING sent within
  the last ``max_staleness`` has been answered: in a partition, with a frozen Redis or a dead
  connection, every request asks Redis again after ``max_staleness`` at most, and fails closed
  (503) if Redis cannot answer. Losing the connection empties the cache at once.
- **Nothing waiting.** A hit first polls the connection's socket: if anything has arrived that
  is not read yet (it may be an invalidation), the request asks Redis.
- **No late fills.** A read that an invalidation of its key overtook (sent before it, answered
  after it) is not kept: :meth:`SessionCache.begin` registers the read, an invalidation of that
  key (or of everything, or the connection's loss) while it is in flight marks it, and
  :meth:`SessionCache.end` keeps only an unmarked answer.
- **This replica's own writes** (refresh, logout, revocation) drop the entry at once, without
  waiting for Redis's message.
- **Redis failing for requests** (the client's circuit breaker is open): no hits.
- **Read again anyway.** A kept session is read from Redis again ``max_age`` after it was
  read, whatever Redis reported: a bound for the writes it does not report (``SWAPDB``).
- **Bounded.** At most ``max_entries`` sessions; a full cache starts afresh. Only sessions that
  exist are kept, so cookies that name none cannot fill it.

How soon another replica's write is seen here: Redis sends the report to every replica as it
performs the write, and each acts on it the moment it arrives. On one host or a fast network
that is before the writer's own answer (a logout's 204) reaches its client, but not always: a
slower path from Redis to this replica than from Redis to the client (a proxy, another zone)
leaves a window as wide as the difference, and in a partition as wide as ``max_staleness``.
Where that matters more than a round trip per request, set ``session.redis.cache.enabled:
false``.

Where Redis refuses tracking (before Redis 6, a proxy in between, an ACL without ``client``
and ``subscribe``), every request reads Redis as before, and one warning says why.
"""

from __future__ import annotations

import asyncio
import logging
import select
import time
from collections import deque
from typing import cast

import hiredis
from redis.asyncio import Redis

from gateway import metrics
from gateway.identity.sessions.base import Session

log = logging.getLogger("gateway.store")

CHANNEL = b"__redis__:invalidate"
RETRY_S = 1.0
"""After the connection is lost (or could not be made): wait this long, then connect again."""
REFUSED_RETRY_S = 30.0
"""After Redis refused tracking: ask again this much later (its configuration may change)."""

_PING = b"*1\r\n$4\r\nPING\r\n"


def _command(*args: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class TrackingRefused(Exception):
    """Redis answered a set-up command with an error: it will not report writes."""


class _Link(asyncio.Protocol):
    """The tracking connection once redis-py has connected it (TLS, AUTH, SELECT): every reply
    is handled the moment the event loop reads it, so no invalidation waits in a buffer."""

    def __init__(self, cache: SessionCache, transport: asyncio.BaseTransport) -> None:
        self._cache = cache
        self._reader = hiredis.Reader()
        self.transport = transport
        self.replies: deque[asyncio.Future[object]] = deque()
        """Callers waiting for the answer to a set-up command, in order."""
        self.pings: deque[float] = deque()
        """When each unanswered PING was sent (monotonic)."""
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.detached = False
        """Set when the cache has moved on from this connection (closed, or replaced): what it
        still reports (a TLS shutdown can take seconds) no longer concerns the cache."""

    def call(self, *args: bytes) -> asyncio.Future[object]:
        reply: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.replies.append(reply)
        self._write(_command(*args))
        return reply

    def ping(self) -> None:
        self.pings.append(time.monotonic())
        self._write(_PING)

    def _write(self, data: bytes) -> None:
        cast(asyncio.WriteTransport, self.transport).write(data)  # uvloop's: not subclasses

    def data_received(self, data: bytes) -> None:
        if self.detached:
            return
        reader = self._reader
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                self._handle(reply)
                reply = reader.gets()
        except hiredis.ProtocolError:
            self._cache.lose()
            self.transport.close()

    def _handle(self, reply: object) -> None:
        if isinstance(reply, list):
            kind = reply[0] if reply else None
            if kind == b"invalidate" and len(reply) == 2:  # RESP3: a push of its own
                self._cache.invalidate(reply[1])
                return
            if kind == b"message" and len(reply) == 3:  # RESP2: on the subscribed channel
                if reply[1] == CHANNEL:
                    self._cache.invalidate(reply[2])
                return
        if self.pings and (reply == [b"pong", b""] or reply == b"PONG"):
            self._cache.confirmed(self.pings.popleft())
            return
        if self.replies:
            waiter = self.replies.popleft()
            if not waiter.done():
                waiter.set_result(reply)
            return
        # Nothing this connection asked for: what else might it have missed? Start afresh.
        self._cache.lose()
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.detached:
            self._cache.lose()
        self.fail_waiters()

    def fail_waiters(self) -> None:
        for waiter in self.replies:
            if not waiter.done():
                waiter.set_exception(ConnectionError("tracking connection lost"))
        self.replies.clear()
        if not self.lost.done():
            self.lost.set_result(None)


class SessionCache:
    """The sessions this process read from one Redis, by ``sid_hash`` (see the module's text)."""

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str,
        max_staleness_s: float,
        max_entries: int,
        timeout_s: float,
        max_age_s: float,
    ) -> None:
        self._client = client
        self._breaker = getattr(client, "breaker", None)
        self._key_prefix = f"{key_prefix}s:".encode("utf-8", "surrogatepass")
        self._max_staleness_s = max_staleness_s
        self._max_entries = max_entries
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._entries: dict[str, tuple[Session, float]] = {}
        """sid_hash -> (session, when it must be read again)."""
        self._reads: dict[str, int] = {}
        """Reads from Redis in flight, by sid_hash."""
        self._overtaken: set[str] = set()
        """Keys written while a read of them was in flight: those reads are not kept."""
        self._epoch = 0
        """Advanced when everything is invalidated (a flush, the connection's loss)."""
        self.live = False
        """True while the tracking connection is subscribed: only then is anything kept."""
        self._confirmed_at = -1e18
        """When the last answered PING was sent (monotonic)."""
        self._poll: select.poll | None = None
        self._link: _Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._reported: str | None = None
        """Why the cache is off, as last logged (once per reason, not once per attempt)."""

    # -- the request path ------------------------------------------------------------------------

    def lookup(self, sid_hash: str) -> Session | None:
        """The cached session, if it may be served without asking Redis."""
        entry = self._entries.get(sid_hash)
        if entry is None:
            if self._task is None and not self._closed:
                self._task = asyncio.get_running_loop().create_task(self._run())
            return None
        breaker = self._breaker
        if breaker is not None and breaker.down:
            return None
        now = time.monotonic()
        if now - self._confirmed_at > self._max_staleness_s or now >= entry[1]:
            return None
        poll, link = self._poll, self._link
        if poll is None or link is None or link.transport.is_closing() or poll.poll(0):
            return None  # something arrived that is not read yet, or the end: ask Redis
        return entry[0]

    def begin(self, sid_hash: str) -> int:
        """A read of ``sid_hash`` from Redis starts; pass what this returns to :meth:`end`."""
        reads = self._reads
        reads[sid_hash] = reads.get(sid_hash, 0) + 1
        return self._epoch

    def end(self, sid_hash: str, epoch: int, session: Session | None) -> None:
        """The read that :meth:`begin` returned ``epoch`` for is over (``session``: what it
        found, ``None`` for nothing or a failure): keep it, unless it was overtaken."""
        reads = self._reads
        left = reads.get(sid_hash, 1) - 1
        overtaken = sid_hash in self._overtaken
        if left > 0:
            reads[sid_hash] = left
        else:
            reads.pop(sid_hash, None)
            self._overtaken.discard(sid_hash)
        if session is None or overtaken or epoch != self._epoch or not self.live:
            return
        entries = self._entries
        if len(entries) >= self._max_entries:
            entries.clear()
        entries[sid_hash] = (session, time.monotonic() + self._max_age_s)

    def forget(self, sid_hash: str) -> None:
        """This process wrote the session (refresh, logout): drop it, and any read in flight."""
        self._drop(sid_hash)

    def _drop(self, sid_hash: str) -> None:
        self._entries.pop(sid_hash, None)
        if sid_hash in self._reads:
            self._overtaken.add(sid_hash)

    def __len__(self) -> int:
        return len(self._entries)

    # -- what the tracking connection reports ----------------------------------------------------

    def invalidate(self, keys: object) -> None:
        if not isinstance(keys, list):
            self._drop_all()  # FLUSHDB, FLUSHALL: everything
            return
        prefix = self._key_prefix
        start = len(prefix)
        for key in keys:
            if isinstance(key, bytes) and key.startswith(prefix):
                self._drop(key[start:].decode("ascii", "replace"))

    def _drop_all(self) -> None:
        self._epoch += 1
        self._entries.clear()

    def confirmed(self, sent_at: float) -> None:
        if sent_at > self._confirmed_at:
            self._confirmed_at = sent_at

    def lose(self) -> None:
        """The connection is gone or in doubt: keep nothing, serve nothing."""
        self._drop_all()
        self._poll = None
        self._link = None
        self._confirmed_at = -1e18
        if self.live:
            self.live = False
            metrics.SESSION_CACHE_LIVE.dec()

    # -- the connection ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            wait_s = RETRY_S
            try:
                await self._track()
                reason = "connection lost"
            except TrackingRefused as refused:
                reason = f"Redis refused client tracking ({refused}): sessions are read from "
                reason += "Redis on every request"
                wait_s = REFUSED_RETRY_S
            except Exception as failed:  # the driver's errors, OSError, timeouts: try again
                reason = f"tracking connection failed: {type(failed).__name__}"
            self.lose()
            if self.closed():
                return
            if reason != self._reported:
                self._reported = reason
                log.warning(
                    "session cache off: %s; connecting again in %.0fs",
                    reason,
                    wait_s,
                    extra={"reason": "session_cache_off"},
                )
            await asyncio.sleep(wait_s)

    async def _track(self) -> None:
        # redis-py connects (TLS, AUTH, SELECT, unix sockets as the URL says); then this
        # module reads the connection itself.
        connection = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        async with asyncio.timeout(self._timeout_s * 2):
            await connection.connect()
        writer = connection._writer
        if writer is None or self._closed:
            connection._close()
            return
        transport = writer.transport
        link = _Link(self, transport)
        transport.set_protocol(link)
        try:
            sock = transport.get_extra_info("socket")
            poll = select.poll()
            poll.register(sock.fileno(), select.POLLIN)
            async with asyncio.timeout(self._timeout_s * 2):
                client_id = await link.call(b"CLIENT", b"ID")
                if not isinstance(client_id, int):
                    raise TrackingRefused(_describe(client_id))
                on = await link.call(
                    b"CLIENT",
                    b"TRACKING",
                    b"ON",
                    b"REDIRECT",
                    b"%d" % client_id,
                    b"BCAST",
                    b"PREFIX",
                    self._key_prefix,
                )
                if on != b"OK":
                    raise TrackingRefused(_describe(on))
                subscribed_at = time.monotonic()
                subscribed = await link.call(b"SUBSCRIBE", CHANNEL)
                if not (isinstance(subscribed, list) and subscribed[:1] == [b"subscribe"]):
                    raise TrackingRefused(_describe(subscribed))
            if link.lost.done() or link.transport.is_closing():
                return
            self._poll, self._link = poll, link
            self._epoch += 1
            self._confirmed_at = subscribed_at
            self.live = True
            metrics.SESSION_CACHE_LIVE.inc()
            self._reported = None
            log.info("session cache on: Redis reports every write to a session")
            interval_s = self._max_staleness_s / 4
            while not (link.lost.done() or self._closed):
                link.ping()
                await asyncio.wait((link.lost,), timeout=interval_s)
                if link.pings and time.monotonic() - link.pings[0] > self._timeout_s:
                    raise TimeoutError("no answer to PING")
        finally:
            self.lose()
            link.detached = True
            link.fail_waiters()
            connection._close()  # closes the transport, and redis-py knows it is closed

    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # redis-py can swallow a cancellation while it connects (a timeout of its own
            # that expires with it): ask again until the task has ended.
            while not task.done():
                task.cancel()
                await asyncio.wait((task,), timeout=0.05)
            if not task.cancelled():
                task.exception()  # retrieved: it has been reported already, if anything
        self.lose()


def _describe(reply: object) -> str:
    if isinstance(reply, hiredis.ReplyError):
        return str(reply)[:200]  # Redis's own words, e.g. NOPERM or an unknown command
    return f"unexpected reply of type {type(reply).__name__}"
