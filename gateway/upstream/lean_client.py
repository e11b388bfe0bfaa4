"""The :class:`~gateway.upstream.base.UpstreamClient` on raw asyncio and httptools (llhttp).

Same contract as :mod:`gateway.upstream.aiohttp_client`, at a fraction of the cost per request:
one :class:`asyncio.Protocol` per connection (no streams), the request head built with one join
and one encode and written together with a small body, TCP_NODELAY, a fresh llhttp parser per
exchange. WebSockets are delegated to an internal :class:`AiohttpUpstreamClient`.

- Pools: per upstream name, idle keep-alive connections reused last-in first-out; each upstream's
  ``max_connections`` is a semaphore held from ``send()`` until the response is released (or the
  request fails); waiting for it counts against ``connect_timeout_s``. Idle connections close after
  15 s, or at once when the upstream closes them or sends anything.
- Nothing is added or interpreted: the client writes the request line, the caller's headers and
  its own framing (``Content-Length`` / ``Transfer-Encoding: chunked``, and ``Content-Length: 0``
  for a body-less request of a method other than GET/HEAD/OPTIONS/TRACE, as aiohttp does). No
  redirects, no decompression, no cookies, no ``Host`` of its own.
- Bodies stream both ways, with flow control: the request body waits for the socket to drain, the
  response body stops reading the socket while the reader is behind (``_HIGH_WATER``).
- A response goes to the request that caused it, and to no other (``_Connection.finish``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import select
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import urlsplit

import httptools

from gateway.config.settings import UpstreamSettings
from gateway.errors import UpstreamAborted, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.upstream.aiohttp_client import AiohttpUpstreamClient
from gateway.upstream.base import Headers, UpstreamRequest

log = logging.getLogger("gateway.upstream")

if TYPE_CHECKING:
    from aiohttp import ClientWebSocketResponse

IDLE_TIMEOUT_S: Final = 15.0
"""An idle pooled connection is closed after this long (as aiohttp's connector does). Upstreams
with a shorter keep-alive timeout close first: the pool notices, and the retry covers a close
that crosses a reused connection's request."""

# Unread response body above which the upstream socket is no longer read. The reader takes all
# that is buffered at once, so the low-water mark at which reading resumes is 0. Bounds what a
# slow client makes the gateway hold per response to about _HIGH_WATER plus one read.
_HIGH_WATER: Final = 256 * 1024
# A head that would not fit in one write with the first body chunk is written on its own.
_COALESCE_MAX: Final = 64 * 1024

# Resolved addresses of a host name are kept this long (aiohttp's connector default).
_DNS_TTL_S: Final = 10.0

# Response head limits, as aiohttp's (max_field_size/max_line_size 16384, 128 headers).
_MAX_FIELD: Final = 16384
_MAX_HEADERS: Final = 128
_MAX_HEAD_BYTES: Final = 4 * 1024 * 1024
_MAX_INTERIM: Final = 16

# Methods aiohttp sends without ``Content-Length: 0`` when there is no body.
_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Safe to send again on a new connection when a reused one was closed under us (as aiohttp).
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# SECURITY: methods whose request content has no defined meaning (RFC 9110 9.3). Servers often
# answer without reading it and then parse it as the next request, whose answer (or whose
# unfinished head, completed by the next client's request) may come at any later time: a
# connection that carried such a body is never reused.
_BODY_IGNORED: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})

_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_KNOWN_TOKENS: Final[set[str]] = set()
"""Header names already found to be tokens (bounded: names are the client's to choose)."""
_MAX_KNOWN_TOKENS: Final = 1024
_TARGET_BAD_RE: Final = re.compile(r"[^!-~]")

# Connection states (``_Connection.mode``).
_IDLE: Final = 0  # in the pool, no exchange
_HEAD: Final = 1  # waiting for (the rest of) the response head
_LENGTH: Final = 2  # reading a Content-Length body
_CHUNKED: Final = 3  # reading a chunked body (through llhttp)
_EOF: Final = 4  # reading a body delimited by the connection's close
_DONE: Final = 5  # response complete, waiting for release
_FAILED: Final = 6  # exchange failed; the transport is aborted
_CLOSED: Final = 7


class LeanUpstreamClient:
    """Pooled HTTP/1.1 upstream client on asyncio protocols and httptools; WebSockets through an
    internal :class:`AiohttpUpstreamClient`.

    Needs no running loop to build; connections open on first use. :meth:`close` closes every
    connection (idle or in use); the client may be used again afterwards.
    """

    def __init__(
        self,
        upstreams: Mapping[str, UpstreamSettings],
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self._idle_timeout_s = idle_timeout_s
        self._connections: set[_Connection] = set()
        self._pools: dict[str, _Pool] = {
            name: _Pool(up, idle_timeout_s) for name, up in upstreams.items()
        }
        self._websockets = AiohttpUpstreamClient(upstreams)

    async def send(self, request: UpstreamRequest) -> _LeanResponse:
        """Send ``request`` and return once the response head has arrived.

        Raises :class:`UpstreamUnavailable` (``connect_failed``), :class:`UpstreamTimeout`
        (``pool_timeout``, ``connect_timeout``, ``read_timeout``), :class:`UpstreamAborted`
        (connection lost before the head, or the request body failed: see ``__cause__``) or
        :class:`UpstreamError` (``bad_response``, ``bad_request_line``, ``bad_request_header``).
        """
        pool = self._pool(request.upstream)
        # Refused before a connection or a permit is taken.
        head, close_after = _serialise_head(request, pool)
        waited = await _acquire(pool)
        try:
            return await self._exchange(pool, request, head, close_after, waited)
        except BaseException:
            pool.permits.release()
            raise

    async def close(self) -> None:
        """Close every pooled and in-use connection (idempotent)."""
        for pool in self._pools.values():
            pool.drop_idle()
        connections = list(self._connections)
        for conn in connections:
            conn.abort()
        await self._websockets.close()
        if connections:
            await asyncio.sleep(0)  # let the transports run connection_lost

    def websocket(
        self, request: UpstreamRequest, protocols: Sequence[str]
    ) -> AbstractAsyncContextManager[ClientWebSocketResponse[bool]]:
        """Open a WebSocket through aiohttp; see
        :meth:`gateway.upstream.base.WebSocketUpstreamClient.websocket`. It holds one of this
        client's permits for its lifetime, so ``max_connections`` bounds both kinds together."""
        return _PermittedWebSocket(
            self._pool(request.upstream), self._websockets.websocket(request, protocols)
        )

    def _pool(self, upstream: UpstreamSettings) -> _Pool:
        pool = self._pools.get(upstream.name)
        if pool is None or (pool.settings is not upstream and pool.settings != upstream):
            # An upstream this client was not built with (e.g. added or changed by a reload).
            if pool is not None:
                pool.retire()
            pool = self._pools[upstream.name] = _Pool(upstream, self._idle_timeout_s)
        return pool

    async def _exchange(
        self,
        pool: _Pool,
        request: UpstreamRequest,
        head: bytes,
        close_after: bool,
        waited: float,
    ) -> _LeanResponse:
        conn = pool.take_idle()
        # A reused connection the upstream closed as we wrote to it is worth one more try on a
        # new connection, if sending the request twice cannot do harm.
        retry = conn is not None and request.body is None and request.method in _IDEMPOTENT
        while True:
            if conn is None:
                conn = await self._connect(pool, pool.settings.connect_timeout_s - waited)
            conn.begin(
                head_request=request.method == "HEAD",
                retryable=retry,
                close_after=close_after,
            )
            try:
                if request.body is None:
                    conn.write_head(head)
                else:
                    conn.start_body(head, request.body, request.content_length)
                while conn.error is None and not conn.head_done:
                    await conn.wait()
            except BaseException:
                conn.abort()
                raise
            if conn.head_done:
                break  # a failure after the head belongs to the body: iter_body raises it
            error = conn.error
            assert error is not None
            if conn.stale and retry:
                conn, retry, waited = None, False, 0.0
                continue
            raise error
        return _LeanResponse(conn, pool.permits)

    async def _connect(self, pool: _Pool, budget_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max(budget_s, 0.0)):
                sock = await _dial(pool, loop)
                conn = _Connection(pool, sock, loop, self._connections)
                try:
                    await loop.create_connection(
                        lambda: conn,
                        sock=sock,
                        ssl=pool.ssl,
                        server_hostname=pool.host if pool.ssl is not None else None,
                    )
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            raise UpstreamTimeout(
                f"{pool.label}: no connection within {pool.settings.connect_timeout_s} s",
                reason="connect_timeout",
            ) from None
        except OSError as exc:
            raise UpstreamUnavailable(
                f"{pool.label}: {_describe(exc)}", reason="connect_failed"
            ) from exc
        return conn


class _Pool:
    """One upstream's permits and idle connections (a stack: the most recently used on top)."""

    __slots__ = (
        "addresses",
        "base_path",
        "host",
        "idle",
        "idle_timeout_s",
        "label",
        "permits",
        "port",
        "resolved",
        "resolved_until",
        "retired",
        "settings",
        "ssl",
        "sweep",
    )

    def __init__(self, settings: UpstreamSettings, idle_timeout_s: float) -> None:
        self.settings = settings
        self.label = f"{settings.name} ({settings.url})"
        self.permits = asyncio.Semaphore(settings.max_connections)
        self.idle: list[_Connection] = []
        self.idle_timeout_s = idle_timeout_s
        self.sweep: asyncio.TimerHandle | None = None
        self.retired = False
        url = urlsplit(settings.url)
        https = url.scheme.lower() == "https"
        self.host = url.hostname or ""
        self.port = url.port or (443 if https else 80)
        # The base path goes before every target as is (already encoded, like the target).
        self.base_path = url.path.rstrip("/")
        self.ssl = ssl.create_default_context() if https else None
        self.addresses: list[tuple[socket.AddressFamily, Any]] | None
        self.resolved: list[tuple[socket.AddressFamily, Any]] = []
        self.resolved_until = 0.0
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            self.addresses = None  # a name: resolved when connecting (cached for _DNS_TTL_S)
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            self.addresses = [(family, (self.host, self.port))]

    def take_idle(self) -> _Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.clean():
                return conn
            conn.abort()
        return None

    def put_idle(self, conn: _Connection) -> None:
        if self.retired:
            conn.abort()
            return
        loop = conn.loop
        conn.idle_since = now = loop.time()
        self.idle.append(conn)
        if self.sweep is None:
            self.sweep = loop.call_at(now + self.idle_timeout_s, self._sweep, loop)

    def discard(self, conn: _Connection) -> None:
        with suppress(ValueError):
            self.idle.remove(conn)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        # The stack is ordered by idle_since: the oldest at the bottom.
        self.sweep = None
        idle = self.idle
        limit = loop.time() - self.idle_timeout_s
        expired = 0
        while expired < len(idle) and idle[expired].idle_since <= limit:
            expired += 1
        if expired:
            gone, self.idle = idle[:expired], idle[expired:]
            for conn in gone:
                conn.abort()
        if self.idle:
            when = self.idle[0].idle_since + self.idle_timeout_s
            self.sweep = loop.call_at(when, self._sweep, loop)

    def drop_idle(self) -> None:
        if self.sweep is not None:
            self.sweep.cancel()
            self.sweep = None
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.abort()

    def retire(self) -> None:
        """Replaced by a pool with new settings: idle connections go now, busy ones on release."""
        self.retired = True
        self.drop_idle()


class _Connection(asyncio.Protocol):
    """One upstream connection and the state of its current exchange (one at a time).

    Also the llhttp callback target (``on_*``). Response body bytes are counted here for
    ``Content-Length`` bodies and parsed by llhttp for chunked ones.
    """

    __slots__ = (
        "body_sent",
        "buffered",
        "chunk_seen",
        "chunks",
        "clen",
        "drain_waiter",
        "error",
        "got_bytes",
        "head_bytes",
        "head_done",
        "head_request",
        "headers",
        "idle_since",
        "interims",
        "keep_alive",
        "last_io",
        "loop",
        "lost",
        "mode",
        "msg_done",
        "parser",
        "pool",
        "pump",
        "read_paused",
        "read_timeout_s",
        "readable",
        "reason",
        "registry",
        "remaining",
        "retryable",
        "reusable",
        "scan",
        "sock",
        "stale",
        "status",
        "tail",
        "te",
        "timer",
        "transport",
        "waiter",
        "write_paused",
    )

    def __init__(
        self,
        pool: _Pool,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        registry: set[_Connection],
    ) -> None:
        self.pool = pool
        self.sock = sock
        self.readable = select.poll()
        """Asks the kernel whether the socket has bytes (or a close) not read yet."""
        self.readable.register(sock.fileno(), select.POLLIN)
        self.loop = loop
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.mode = _IDLE
        self.idle_since = 0.0
        self.read_timeout_s = pool.settings.read_timeout_s
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.read_paused = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.pump: asyncio.Task[None] | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self._reset()

    def _reset(self) -> None:
        self.error: UpstreamError | None = None
        self.stale = False
        self.retryable = False
        self.reusable = False
        self.keep_alive = False
        self.body_sent = False
        self.got_bytes = False
        self.head_request = False
        self.head_done = False
        self.msg_done = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.clen: int | None = None
        self.te: bytes | None = None
        self.head_bytes = 0
        self.interims = 0
        self.remaining = 0
        self.chunk_seen = False
        self.scan = b""
        self.tail = b""
        self.last_io = 0.0

    # --- exchange, driven by send() and the response -------------------------------------------

    def begin(self, *, head_request: bool, retryable: bool, close_after: bool) -> None:
        self._reset()
        self.parser = httptools.HttpResponseParser(self)  # fresh: no state carried over
        self.mode = _HEAD
        self.head_request = head_request
        self.retryable = retryable
        self.reusable = not close_after

    def write_head(self, head: bytes) -> None:
        assert self.transport is not None
        self.transport.write(head)
        self.body_sent = True
        self.last_io = self.loop.time()
        self._arm()

    def start_body(self, head: bytes, body: AsyncIterable[bytes], length: int | None) -> None:
        pump = self.pump = self.loop.create_task(self._pump(head, body, length))
        pump.add_done_callback(self._pump_ended)

    def _pump_ended(self, pump: asyncio.Task[None]) -> None:
        """The pump handles the body's failures itself. Should it still end with an exception
        (a defect), the exchange fails with it: never a request left waiting for ever with its
        connection and its pool permit."""
        if pump.cancelled() or self.pump is not pump:
            return
        exc = pump.exception()
        if exc is None:
            return
        log.error(
            "%s: request body pump failed",
            self.pool.label,
            exc_info=exc,
            extra={"reason": "internal"},
        )
        if isinstance(exc, Exception):
            self._body_failed(exc)
        else:
            self._fail(UpstreamAborted(f"{self.pool.label}: request body pump failed"))

    async def wait(self) -> None:
        waiter = self.waiter = self.loop.create_future()
        await waiter

    def take(self) -> bytes:
        """Everything buffered (the caller checked there is something)."""
        chunks = self.chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.read_paused:
            self._resume_reading()
        return data

    def take_complete(self) -> bytes | None:
        """The whole body if the response is already complete, else ``None``."""
        if self.mode != _DONE:
            return None
        return self.take() if self.chunks else b""

    def finish(self) -> None:
        """The response was released: pool the connection if it is clean, else close it."""
        pump = self.pump
        if pump is not None:
            self.pump = None
            if not pump.done():
                pump.cancel()
                self.reusable = False
        # SECURITY: response desync. Back to the pool only if this exchange ended exactly at a
        # message boundary on both sides: the request fully sent, the response fully read, no
        # byte after it (``reusable`` is cleared by any such byte: _stray, _on_length_data,
        # _on_framed_data, _start_body) and keep-alive on both sides. Anything else would leave
        # bytes on the connection that the next request would take for its own response.
        if (
            self.mode == _DONE
            and self.reusable
            and self.keep_alive
            and self.body_sent
            and not self.lost
        ):
            self.parser = None
            self.headers = []
            self.chunks.clear()
            self.buffered = 0
            if self.read_paused:
                self._resume_reading()  # idle connections must see a close or stray bytes
            self.mode = _IDLE
            self.pool.put_idle(self)
        else:
            self.abort()

    def clean(self) -> bool:
        """Whether an idle connection can be handed out: open, and nothing waiting on its socket
        (stray bytes or a close that the loop has not delivered yet)."""
        # SECURITY: stray bytes already in the kernel but not yet read by the loop would be
        # taken for the next request's response; asking the kernel finds them.
        transport = self.transport
        if self.lost or self.mode != _IDLE or transport is None or transport.is_closing():
            return False
        # One poll with no wait (no exception to raise, unlike a non-blocking peek): any event
        # (bytes that belong to no request, a close, an error) makes the connection unusable.
        return not self.readable.poll(0)

    def abort(self) -> None:
        """Close the connection now; an exchange still in progress fails with UpstreamAborted
        (a complete response stays readable)."""
        pump = self.pump
        if pump is not None:
            self.pump = None
            pump.cancel()
        self.reusable = False
        mode = self.mode
        if _HEAD <= mode <= _EOF:
            self._fail(UpstreamAborted(f"{self.pool.label}: connection closed by the gateway"))
            return
        if mode == _IDLE:
            self.pool.discard(self)
            self.mode = _CLOSED
        self._cancel_timer()
        if self.transport is not None and not self.lost:
            self.transport.abort()

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        self.registry.add(self)

    def data_received(self, data: bytes) -> None:
        mode = self.mode
        if mode == _LENGTH:
            self._on_length_data(data)
        elif mode == _HEAD:
            self._on_head_data(data)
        elif mode in (_CHUNKED, _EOF):
            self._on_framed_data(data)
        elif mode in (_IDLE, _DONE):
            self._stray()

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost decides what the close means

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.registry.discard(self)
        self._cancel_timer()
        drain = self.drain_waiter
        if drain is not None:
            self.drain_waiter = None
            if not drain.done():
                drain.set_result(None)
        mode = self.mode
        if mode == _IDLE:
            self.pool.discard(self)
            self.mode = _CLOSED
        elif mode == _EOF and exc is None:
            self._complete()  # a close-delimited body ends here
        elif _HEAD <= mode <= _EOF:
            if mode == _HEAD and self.retryable and not self.got_bytes:
                self.stale = True
            detail = f"{self.pool.label}: connection closed before the response was complete"
            if exc is not None:
                detail += f" ({_describe(exc)})"
            self._fail(UpstreamAborted(detail))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self.drain_waiter
        if drain is not None:
            self.drain_waiter = None
            if not drain.done():
                drain.set_result(None)

    # --- llhttp callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.msg_done:
            raise _StrayBytes  # a second message on the wire: stop parsing it

    def on_status(self, reason: bytes) -> None:
        self.reason += reason
        if len(self.reason) > _MAX_FIELD:
            raise _BadHead("status line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # trailer fields: ignored, as by aiohttp
        headers = self.headers
        if len(headers) >= _MAX_HEADERS:
            raise _BadHead("too many headers")
        if len(name) > _MAX_FIELD or len(value) > _MAX_FIELD:
            raise _BadHead("header field too long")
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            # llhttp has checked the value (digits, no duplicate, no Transfer-Encoding with it).
            self.clen = int(value)
        elif size == 17 and name.lower() == b"transfer-encoding":
            self.te = value if self.te is None else self.te + b"," + value
        # As aiohttp decodes them: ASCII as is, other bytes kept (surrogateescape) so that they
        # go to the client unchanged.
        headers.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise _BadHead("101 Switching Protocols to a request that asked for no upgrade")
            # Interim (100 Continue, 103 Early Hints): skipped; the final response follows.
            self.interims += 1
            if self.interims > _MAX_INTERIM:
                raise _BadHead("too many interim responses")
            self.reason = b""
            self.headers = []
            self.clen = self.te = None
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.head_done = True

    def on_chunk_header(self) -> None:
        if self.mode != _CHUNKED:
            raise _BadHead("chunked body where the headers did not say so")
        self.chunk_seen = True

    def on_body(self, body: bytes) -> None:
        if self.mode == _CHUNKED and not self.chunk_seen:
            raise _BadHead("unchunked body where the headers said chunked")
        self._push(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.msg_done = True

    # --- reading -------------------------------------------------------------------------------

    def _on_head_data(self, data: bytes) -> None:
        self.got_bytes = True
        self.last_io = self.loop.time()
        self._arm()
        self.head_bytes += len(data)
        if self.head_bytes > _MAX_HEAD_BYTES:
            self._bad_response(_BadHead("response head too large"))
            return
        parser = self.parser
        assert parser is not None
        # The parser is fed up to each CRLF CRLF (llhttp accepts no other head end), so it stops
        # exactly where the final head ends and the body's framing can be applied to the rest.
        scan = self.scan
        view = scan + data if scan else data
        fed = len(scan)
        end = 0
        try:
            while True:
                index = view.find(b"\r\n\r\n", end)
                if index < 0:
                    parser.feed_data(view[fed:] if fed else view)
                    self.scan = view[-3:]
                    return
                end = index + 4
                parser.feed_data(view[fed:end] if fed or end < len(view) else view)
                fed = end
                if self.head_done:
                    break
        except Exception as exc:
            self._bad_response(exc)
            return
        self.scan = b""
        if not self.body_sent:
            # SECURITY: answered before the request body was all sent (an early 413 or 401): the
            # upstream may not read the rest, or may read it as another request. Never reused.
            self.reusable = False
        self._start_body(view[end:] if end < len(view) else b"")
        self._wake()

    def _start_body(self, rest: bytes) -> None:
        status = self.status
        if self.head_request or status == 204 or status == 304 or self.clen == 0:
            # No body: the response ends with its head (for HEAD, whatever the headers say;
            # llhttp cannot be told about HEAD, so it is not fed again).
            self._complete()
            if rest:
                self._stray()
        elif self.clen is not None:
            self.mode = _LENGTH
            self.remaining = self.clen
            if rest:
                self._on_length_data(rest)
        else:
            if self.te is not None and _final_chunked(self.te):
                self.mode = _CHUNKED
            else:
                self.mode = _EOF  # until the upstream closes: never reused
                self.keep_alive = False
            if rest:
                self._on_framed_data(rest)

    def _on_length_data(self, data: bytes) -> None:
        self.last_io = self.loop.time()
        remaining = self.remaining
        size = len(data)
        if size < remaining:
            self.remaining = remaining - size
            self._push(data)
            return
        if size > remaining:
            # SECURITY: bytes past the end of this response belong to no request.
            self.reusable = False
            data = data[:remaining]
        self.remaining = 0
        if data:
            self._push(data)
        self._complete()

    def _on_framed_data(self, data: bytes) -> None:
        self.last_io = self.loop.time()
        parser = self.parser
        assert parser is not None
        try:
            parser.feed_data(data)
        except Exception as exc:
            if not self.msg_done:
                self._bad_response(exc)
                return
            self.reusable = False  # SECURITY: a parse error in bytes after the response
        if self.msg_done:
            # SECURITY: llhttp skips CR/LF between messages without a callback. A chunked message
            # ends with "<not CR/LF>\r\n\r\n", so anything else at the end is a stray byte.
            tail = data[-5:] if len(data) >= 5 else (self.tail + data)[-5:]
            if len(tail) < 5 or tail[0] in b"\r\n" or not tail.endswith(b"\r\n\r\n"):
                self.reusable = False
            self._complete()
        elif len(data) >= 4:
            self.tail = data[-4:]
        else:
            self.tail = (self.tail + data)[-4:]

    def _push(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.buffered += len(chunk)
        self._wake()
        if self.buffered > _HIGH_WATER and not self.read_paused and self.transport is not None:
            # The reader is behind: stop reading the upstream until it catches up (not silence).
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        self.read_paused = False
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()
        if _HEAD <= self.mode <= _EOF:
            self.last_io = self.loop.time()
            self._arm()

    def _complete(self) -> None:
        self.mode = _DONE
        self._wake()  # the read timer is left to lapse: see _on_timer

    def _stray(self) -> None:
        # SECURITY: bytes that belong to no request (a second response, a body to HEAD, a late
        # answer to an ignored request body): this connection can never be trusted again.
        self.reusable = False
        if self.mode == _IDLE:
            self.pool.discard(self)
            self.mode = _CLOSED
        if self.transport is not None and not self.lost:
            self.transport.abort()

    def _bad_response(self, exc: Exception) -> None:
        if isinstance(exc, httptools.HttpParserCallbackError) and isinstance(
            exc.__context__, _BadHead
        ):
            exc = exc.__context__  # raised by a callback here: say what it was
        # llhttp's messages and ours describe the response only, never the request.
        detail = str(exc) if isinstance(exc, _BadHead | httptools.HttpParserError) else ""
        self._fail(
            UpstreamError(
                f"{self.pool.label}: malformed response: {type(exc).__name__}"
                + (f" ({detail})" if detail else ""),
                reason="bad_response",
            )
        )

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self.mode = _FAILED
        self.reusable = False
        self._cancel_timer()
        self._wake()
        if self.transport is not None and not self.lost:
            self.transport.abort()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # --- read timeout: the longest silence while the socket is read ------------------------------

    def _arm(self) -> None:
        if self.timer is None:
            self.timer = self.loop.call_at(self.last_io + self.read_timeout_s, self._on_timer)

    def _cancel_timer(self) -> None:
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()

    def _on_timer(self) -> None:
        # One timer per connection, moved on lazily rather than replaced for each read or each
        # exchange: reads only update last_io, and a timer left from an earlier exchange fires
        # early and re-arms for the current one.
        self.timer = None
        mode = self.mode
        if self.read_paused or not _HEAD <= mode <= _EOF:
            return  # paused reading is not silence (_resume_reading re-arms); or no exchange
        if mode == _HEAD and not self.body_sent:
            return  # still sending the request: its clock is _drained's; _pump arms this one
        deadline = self.last_io + self.read_timeout_s
        if self.loop.time() < deadline:
            self.timer = self.loop.call_at(deadline, self._on_timer)
            return
        self._fail(
            UpstreamTimeout(
                f"{self.pool.label}: nothing received for {self.read_timeout_s} s",
                reason="read_timeout",
            )
        )

    # --- writing the request body --------------------------------------------------------------

    async def _pump(self, head: bytes, body: AsyncIterable[bytes], length: int | None) -> None:
        transport = self.transport
        assert transport is not None
        chunked = length is None
        pending = head  # written with the first chunk
        sent = 0
        try:
            async for chunk in body:
                if not chunk:
                    continue
                if transport.is_closing():
                    return  # the exchange is over (failed, or the upstream closed)
                size = len(chunk)
                sent += size
                if chunked:
                    data = b"".join((pending, b"%x\r\n" % size, chunk, b"\r\n"))
                elif length is not None and sent > length:
                    raise _BodyLength(f"request body longer than its Content-Length {length}")
                elif pending and len(chunk) <= _COALESCE_MAX:
                    data = pending + chunk
                else:
                    if pending:
                        transport.write(pending)
                    data = chunk
                pending = b""
                transport.write(data)
                if self.write_paused and not await self._drained():
                    return
            if not chunked and sent != length:
                raise _BodyLength(f"request body shorter than its Content-Length {length}")
        except _BodyLength as wrong:
            self._fail(UpstreamError(f"{self.pool.label}: {wrong}", reason="bad_request_body"))
            return
        except Exception as exc:
            self._body_failed(exc)
            return
        if transport.is_closing():
            return
        if chunked:
            transport.write(pending + b"0\r\n\r\n")
        elif pending:
            transport.write(pending)  # an empty body: the head alone
        self.body_sent = True
        if self.mode == _HEAD:
            self.last_io = self.loop.time()
            self._arm()

    async def _drained(self) -> bool:
        while self.write_paused and not self.lost:
            waiter = self.drain_waiter = self.loop.create_future()
            if self.mode != _HEAD:
                await waiter  # answered already: the reader decides how long this may take
                continue
            # Waiting for the head while the upstream reads nothing of the request is silence
            # too: without this an upstream that stops reading would hold the request forever.
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    await waiter
            except TimeoutError:
                self._fail(
                    UpstreamTimeout(
                        f"{self.pool.label}: request body not read for {self.read_timeout_s} s",
                        reason="read_timeout",
                    )
                )
                return False
        return not self.lost

    def _body_failed(self, exc: Exception) -> None:
        # The request can never be completed: the connection goes. A reader waiting for the
        # head (send) or for more body sees UpstreamAborted caused by the body's exception (the
        # proxy reports its own record of it instead).
        error = UpstreamAborted(f"{self.pool.label}: request body failed: {type(exc).__name__}")
        error.__cause__ = exc
        if self.mode == _DONE:
            self.reusable = False  # the response is whole: it stands
            if self.transport is not None and not self.lost:
                self.transport.abort()
        else:
            self._fail(error)


class _LeanResponse:
    """:class:`~gateway.upstream.base.UpstreamResponse` of :class:`LeanUpstreamClient`."""

    __slots__ = ("_conn", "_permits", "_released", "body_complete", "headers", "reason", "status")

    def __init__(self, conn: _Connection, permits: asyncio.Semaphore) -> None:
        self.status: int = conn.status
        self.reason: str = conn.reason.decode("utf-8", "surrogateescape")
        self.headers: Headers = conn.headers
        self.body_complete: bytes | None = conn.take_complete()
        """The whole body when it arrived with the head (the head and a small body can then be
        relayed in one write); ``None`` when it is still on its way. :meth:`iter_body` works in
        both cases."""
        self._conn: _Connection | None = conn
        self._permits = permits
        self._released = False

    def iter_body(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; raises ``UpstreamAborted`` / ``UpstreamTimeout``."""
        return _BodyChunks(self, self._conn)

    def reading(self, conn: _Connection) -> bool:
        """``conn`` still carries this response's body (not released)."""
        return self._conn is conn

    def release(self) -> None:
        """Return the connection to the pool if the exchange ended cleanly, else close it."""
        if self._released:
            return
        self._released = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish()
        self._permits.release()


class _BodyChunks:
    """:meth:`_LeanResponse.iter_body`: the body complete already, else the chunks of the
    connection as they arrive, until the response ends or is released. (A class rather than an
    async generator: gateway_build compiles this module, and mypyc compiles no generators of
    that kind.)"""

    __slots__ = ("_conn", "_ended", "_response")

    def __init__(self, response: _LeanResponse, conn: _Connection | None) -> None:
        self._response = response
        self._conn = conn
        self._ended = False

    def __aiter__(self) -> _BodyChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._ended:
            raise StopAsyncIteration
        body = self._response.body_complete
        if body is not None:
            self._ended = True
            if body:
                return body
            raise StopAsyncIteration
        conn = self._conn
        # The connection serves another exchange once released: stop reading it then.
        while conn is not None and self._response.reading(conn):
            if conn.chunks:
                return conn.take()
            if conn.error is not None:
                self._ended = True
                raise conn.error
            if conn.mode == _DONE:
                self._ended = True
                raise StopAsyncIteration
            if conn.mode > _DONE:
                break
            await conn.wait()
        self._ended = True
        raise UpstreamAborted("response released or closed before its body was read")


class _PermittedWebSocket:
    """:meth:`LeanUpstreamClient.websocket`: aiohttp's WebSocket, opened and held with one of
    the pool's permits."""

    __slots__ = ("_opened", "_pool")

    def __init__(
        self, pool: _Pool, opened: AbstractAsyncContextManager[ClientWebSocketResponse[bool]]
    ) -> None:
        self._pool = pool
        self._opened = opened

    async def __aenter__(self) -> ClientWebSocketResponse[bool]:
        await _acquire(self._pool)
        try:
            return await self._opened.__aenter__()
        except BaseException:
            self._pool.permits.release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        try:
            return await self._opened.__aexit__(exc_type, exc, traceback)
        finally:
            self._pool.permits.release()


class _BadHead(Exception):
    """The response breaks a rule llhttp does not check (sizes, 101, framing consistency)."""


class _StrayBytes(Exception):
    """A message began after the response: parsing stops, the connection is not reused."""


class _BodyLength(Exception):
    """The request body does not match its Content-Length."""


def _serialise_head(request: UpstreamRequest, pool: _Pool) -> tuple[bytes, bool]:
    """The request head as bytes, and whether the request itself asks to close the connection.

    Raises :class:`UpstreamError` (``bad_request_line``, ``bad_request_header``) for a method,
    target or header that would not go on the wire as one unambiguous request.
    """
    method = request.method
    target = pool.base_path + request.target
    if "#" in target or target[-1:] == "?":
        target = _like_yarl(target)
    # SECURITY: request-line injection (a space or CR/LF would start another request).
    if not _TOKEN_RE.fullmatch(method) or _TARGET_BAD_RE.search(target):
        raise UpstreamError(
            f"{pool.label}: request line refused: method or target holds characters that "
            "cannot go on the wire",
            reason="bad_request_line",
        )
    headers = request.headers
    block = "".join([f"{name}: {value}\r\n" for name, value in headers])
    lines = len(headers)
    # SECURITY: header injection / request smuggling. Each header adds one CR and one LF (its
    # line end): any other CR or LF, or a NUL, or a name that is not a token (a colon, a space)
    # would let a name or a value start another header or another request.
    if (
        block.count("\n") != lines
        or block.count("\r") != lines
        or "\x00" in block
        or not all(_is_token(name) for name, _ in headers)
    ):
        raise UpstreamError(
            f"{pool.label}: request header refused: a name that is not a token, or CR, LF or "
            "NUL in a name or value",
            reason="bad_request_header",
        )
    # SECURITY: a response to HEAD has no body; an upstream that sends one anyway (do_HEAD =
    # do_GET) would have its late bytes read as the next request's response.
    close_after = method == "HEAD"
    if request.body is not None:
        close_after |= method in _BODY_IGNORED or not pool.settings.keepalive_after_body
    lowered = block.lower()
    if "content-length" in lowered or "transfer-encoding" in lowered or "connection" in lowered:
        close_after |= _check_hop_headers(headers, pool)
    if request.body is None:
        framing = "" if method in _NO_BODY_METHODS else "Content-Length: 0\r\n"
    elif request.content_length is None:
        framing = "Transfer-Encoding: chunked\r\n"
    else:
        framing = f"Content-Length: {request.content_length}\r\n"
    if request.body is not None and not pool.settings.keepalive_after_body:
        # SECURITY: request smuggling. An upstream that answers without reading the whole body
        # (many hand-written handlers do) would parse the rest as its next request on this
        # connection, whoever it came from: told to close after its answer, it never does.
        framing += "Connection: close\r\n"
    head = f"{method} {target} HTTP/1.1\r\n{block}{framing}\r\n"
    try:
        # Header values decoded by aiohttp's server with surrogateescape go back out byte-exact.
        return head.encode("utf-8", "surrogateescape"), close_after
    except UnicodeEncodeError:
        raise UpstreamError(
            f"{pool.label}: request header refused: a value that cannot be encoded",
            reason="bad_request_header",
        ) from None


def _is_token(name: str) -> bool:
    if name in _KNOWN_TOKENS:
        return True
    if _TOKEN_RE.fullmatch(name) is None:
        return False
    if len(_KNOWN_TOKENS) < _MAX_KNOWN_TOKENS:
        _KNOWN_TOKENS.add(name)
    return True


def _check_hop_headers(headers: Headers, pool: _Pool) -> bool:
    close = False
    for name, value in headers:
        lname = name.lower()
        if lname in ("content-length", "transfer-encoding"):
            # SECURITY: the framing is this client's; a second one would let the upstream read
            # the body differently from how it is sent (request smuggling).
            raise UpstreamError(
                f"{pool.label}: request header refused: {name} is set by the client",
                reason="bad_request_header",
            )
        if lname == "connection" and "close" in (t.strip().lower() for t in value.split(",")):
            close = True
    return close


def _like_yarl(target: str) -> str:
    # As URL(..., encoded=True) has it: no fragment, no empty query.
    target = target.partition("#")[0]
    if target.endswith("?") and target.index("?") == len(target) - 1:
        target = target[:-1]
    return target


def _final_chunked(te: bytes) -> bool:
    # llhttp's rule, which on_chunk_header/on_body cross-check: chunked if it is the last coding.
    return te.rsplit(b",", 1)[-1].strip(b" \t").lower() == b"chunked"


async def _acquire(pool: _Pool) -> float:
    """Take a permit; returns how long that took (it counts against the connect timeout)."""
    permits = pool.permits
    if not permits.locked():
        await permits.acquire()
        return 0.0
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with asyncio.timeout(pool.settings.connect_timeout_s):
            await permits.acquire()
    except TimeoutError:
        raise UpstreamTimeout(
            f"{pool.settings.name}: all {pool.settings.max_connections} connections busy",
            reason="pool_timeout",
        ) from None
    return loop.time() - start


async def _dial(pool: _Pool, loop: asyncio.AbstractEventLoop) -> socket.socket:
    """A connected non-blocking TCP socket (ours, so an idle connection's socket can be peeked)."""
    addresses = pool.addresses
    if addresses is None:
        if loop.time() >= pool.resolved_until:
            infos = await loop.getaddrinfo(pool.host, pool.port, type=socket.SOCK_STREAM)
            pool.resolved = [(family, address) for family, _, _, _, address in infos]
            pool.resolved_until = loop.time() + _DNS_TTL_S
        addresses = pool.resolved
    error: OSError | None = None
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
        else:
            return sock
    pool.resolved_until = 0.0  # none worked: resolve again next time
    raise error or OSError("no address to connect to")


def _describe(exc: BaseException) -> str:
    """What went wrong, for the log, without the request (no target, no header)."""
    # SECURITY: never put the request (its query, the JWT we sent) in an error.
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__
