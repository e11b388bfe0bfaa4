"""The gateway's own HTTP/1.1 server for plain requests: the fast path of the main listener.

Most requests a gateway sees are plain: HTTP/1.1, a small head, no body, no upgrade, a path
that a route forwards. For those, aiohttp's request and response objects cost more than all of
the gateway's own work. A :class:`PlainConnection` is the protocol of every connection of the
main listener: it parses request heads with llhttp (httptools), answers plain requests itself
(:class:`PlainRequest` is both the request the pipeline reads and the channel its answer
leaves on) and hands the connection over to aiohttp's server (:mod:`gateway.listener`) for
everything else, replaying the bytes it has not consumed: a request with a body, an
``Expect``, an ``Upgrade``, HTTP/1.0, a head over :data:`MAX_PLAIN_HEAD` or one llhttp refuses
(aiohttp's parser then refuses it too, with the listener's fixed error page), and any request
the handler declines (the gateway's own endpoints). A handed-over connection stays with aiohttp.

The guarantees of :mod:`gateway.listener` hold here as well: the request head must arrive
within ``request_header`` (else 408 and close), idle keep-alive connections close after
``keepalive``, a draining listener answers with ``Connection: close`` and closes connections
quiet between requests, writes to a client that went away raise :class:`ConnectionResetError`,
and nothing of a request is ever echoed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from email.utils import formatdate
from typing import Final, cast

import httptools
from aiohttp import HttpVersion, HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy

log = logging.getLogger("gateway.listener")

MAX_PLAIN_HEAD: Final = 8190
"""Longest request head this parser takes; a longer one goes to aiohttp's parser, which applies
its own per-line limits (the request line's 8190 bytes among them)."""

MAX_HEADERS: Final = 128
"""More header lines than this go to aiohttp's parser, which refuses them (its own limit)."""

MAX_PIPELINED: Final = 64 * 1024
"""Bytes of later requests buffered while one is answered; reading pauses above this."""

_HANDED_OVER_HEADERS: Final = frozenset(
    {b"content-length", b"transfer-encoding", b"upgrade", b"expect"}
)
"""A request carrying any of these is not plain: aiohttp's server reads it."""

_NO_BODY_STATUS: Final = frozenset({204, 304})

TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nServer: gateway\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 16\r\nConnection: close\r\n\r\nRequest timeout\n"
)

PlainHandler = Callable[["PlainRequest"], Awaitable[bool]]
"""Answers a plain request and returns ``True``, or returns ``False`` having written nothing
and changed nothing: the connection then goes to aiohttp's server with the request unread."""


def bound_reads(transport: asyncio.BaseTransport, size: int) -> None:
    """Read at most ``size`` bytes per ``recv`` from a client. asyncio reads up to 256 KiB: per
    connection that much more than the body reader's limit can sit in memory; smaller reads
    bound what many slow or aborted uploads hold at once."""
    if hasattr(transport, "max_size"):
        transport.max_size = size


class Declined(Exception):
    """Raised inside a :data:`PlainHandler` for a request it leaves to aiohttp's server."""


class _Date:
    """The ``Date`` header's value, formatted once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True)
        return self._value


_DATE = _Date()


class PlainRequest:
    """A plain request as the pipeline reads it (the attributes it uses of aiohttp's
    ``BaseRequest``, with the same values) and the writer of its answer.

    The answer is written with :meth:`respond` (complete) or :meth:`start` / :meth:`write` /
    :meth:`finish` (streamed). Framing is the server's: ``Content-Length`` when the length is
    known, else chunked; ``Connection: close`` when the client asked for it or the listener
    drains, and the connection then closes once the answer is out.
    """

    __slots__ = (
        "_chunked",
        "_conn",
        "close",
        "headers",
        "host",
        "method",
        "raw_path",
        "started",
        "transport",
    )

    body_exists: Final = False
    content_length: Final = None
    version: Final[HttpVersion] = HttpVersion11
    secure: Final = False

    def __init__(
        self,
        conn: PlainConnection,
        method: str,
        raw_path: str,
        headers: CIMultiDictProxy[str],
        host: str,
        close: bool,
    ) -> None:
        self._conn = conn
        self.transport: asyncio.Transport | None = conn.transport
        self.method = method
        self.raw_path = raw_path
        """The request target exactly as received (path and query)."""
        self.headers = headers
        self.host = host
        self.close = close
        """The connection closes after this answer."""
        self.started = False
        """The answer's head has been written."""
        self._chunked = False

    # -- the answer -----------------------------------------------------------------------------

    def respond(
        self, status: int, reason: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> None:
        """Write a complete answer (head and body in one write; no body for ``HEAD``)."""
        head_only = self._head_only(status)
        lines = self._head(status, reason, headers)
        if (not head_only or self.method == "HEAD") and status != 204 and status >= 200:
            lines.append(f"Content-Length: {len(body)}\r\n")
        self._send(lines, b"" if head_only else body)

    def start(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        complete: bytes | None,
    ) -> None:
        """Write the head of an answer (with the whole body when ``complete`` is given: one
        write). Without a ``Content-Length`` among ``headers`` the body is chunked. Without
        ``complete``, :meth:`write` and :meth:`finish` send the body."""
        head_only = self._head_only(status)
        lines = self._head(status, reason, headers)
        has_length = any(name.lower() == "content-length" for name, _ in headers)
        if head_only:
            self._send(lines, b"")
            return
        if not has_length:
            # The upstream's framing is kept: a body without a length stays chunked.
            lines.append("Transfer-Encoding: chunked\r\n")
            if complete is not None:
                ending = b"0\r\n\r\n"
                if complete:
                    complete = b"%x\r\n%b\r\n%b" % (len(complete), complete, ending)
                else:
                    complete = ending
            else:
                self._chunked = True
        self._send(lines, complete or b"")

    def write(self, chunk: bytes) -> None:
        """Queue one piece of a streamed body (see :meth:`drain`)."""
        transport = self._live()
        if not chunk:
            return
        if self._chunked:
            transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            transport.write(chunk)

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written."""
        await self._conn.drain()

    def finish(self) -> None:
        """End a streamed body."""
        if self._chunked:
            self._live().write(b"0\r\n\r\n")
            self._chunked = False

    def abort(self) -> None:
        """Reset the connection: a body cut short must never look complete."""
        self.close = True
        if self.transport is not None:
            self.transport.abort()

    # -- internals ------------------------------------------------------------------------------

    def _head_only(self, status: int) -> bool:
        """An answer that has no body: to HEAD, or 1xx, 204, 304."""
        return self.method == "HEAD" or status in _NO_BODY_STATUS or status < 200

    def _head(self, status: int, reason: str, headers: Iterable[tuple[str, str]]) -> list[str]:
        if self._conn.draining:
            self.close = True
        lines = [f"HTTP/1.1 {status} {reason}\r\n"]
        date = server = False
        for name, value in headers:
            # SECURITY: no header may end the head early (response splitting).
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
                raise ValueError("a newline or colon in a response header")
            lname = name.lower()
            if lname == "connection" or lname == "transfer-encoding":
                continue  # the server's own framing, below
            if lname == "content-length" and (status == 204 or status < 200):
                continue  # RFC 9110 8.6: never on 1xx and 204
            if lname == "date":
                date = True
            elif lname == "server":
                server = True
            lines.append(f"{name}: {value}\r\n")
        if not date:
            lines.append(f"Date: {_DATE.now()}\r\n")
        if not server:
            lines.append("Server: gateway\r\n")
        if self.close:
            lines.append("Connection: close\r\n")
        return lines

    def _send(self, lines: list[str], body: bytes) -> None:
        transport = self._live()
        lines.append("\r\n")
        head = "".join(lines).encode("utf-8", "surrogateescape")
        self.started = True
        transport.write(head + body if body and len(body) <= 65536 else head)
        if body and len(body) > 65536:
            transport.write(body)

    def _live(self) -> asyncio.Transport:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client connection is closed")
        return transport


class _Head:
    """llhttp's callbacks for one request head."""

    __slots__ = (
        "complete",
        "headers",
        "host",
        "hosts",
        "keep_alive",
        "method",
        "parser",
        "plain",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.method = b""
        self.version = ""
        self.keep_alive = False
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.host = ""
        self.hosts = 0
        self.plain = True
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname in _HANDED_OVER_HEADERS:
            self.plain = False
        # llhttp drops the whitespace before a value, aiohttp also the whitespace after it.
        decoded = value.rstrip(b" \t").decode("utf-8", "surrogateescape")
        if lname == b"host":
            self.hosts += 1
            self.host = decoded
        self.headers.append((name.decode("utf-8", "surrogateescape"), decoded))

    def on_headers_complete(self) -> None:
        # Read here: once the message is complete llhttp has moved on to the next one.
        parser = self.parser
        self.method = parser.get_method()
        self.version = parser.get_http_version()
        self.keep_alive = parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete = True


class PlainConnection(asyncio.Protocol):
    """One client connection, served by :class:`PlainRequest` answers until a request needs
    aiohttp's server (see the module's docstring)."""

    def __init__(
        self,
        handler: PlainHandler,
        hand_over: Callable[[float], asyncio.Protocol],
        connections: set[PlainConnection],
        *,
        head_timeout: float,
        keepalive_timeout: float,
        send_timeout: float,
        read_chunk: int,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._handler = handler
        self._hand_over = hand_over
        self._connections = connections
        self._head_timeout = head_timeout
        self._keepalive_timeout = keepalive_timeout
        self._send_timeout = send_timeout
        self._read_chunk = read_chunk
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._on_deadline: Callable[[], None] = self._close_if_idle
        self._head_since: float | None = None
        self._paused_reading = False
        self._paused_writing = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._drain_quiet: float | None = None
        self._closed = False
        self._eof = False
        self.handed_over = False

    @property
    def draining(self) -> bool:
        return self._drain_quiet is not None

    @property
    def idle(self) -> bool:
        """No request is being answered on this connection."""
        return self._task is None

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        bound_reads(transport, self._read_chunk)
        self.transport = transport
        self._connections.add(self)
        self._head_since = self._loop.time()
        self._arm(self._head_timeout, self._head_expired)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True
        self._cancel_timer()
        self._connections.discard(self)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the client connection was lost"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._head_since is None:
            self._head_since = self._loop.time()  # the first byte of a request head
        if len(self._buffer) > MAX_PIPELINED and not self._paused_reading:
            # SECURITY: a flood of pipelined requests is read only as fast as it is answered.
            assert self.transport is not None
            self.transport.pause_reading()
            self._paused_reading = True
        if self._task is None:
            self._next()

    def eof_received(self) -> bool:
        """The client sends no more (a half-close): what it sent is still answered, then the
        connection closes."""
        self._eof = True
        if self._task is None and not self.handed_over:
            self._next()
        return True  # keep the transport open for the answers

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionResetError("the client connection was lost")
        if not self._paused_writing:
            return
        waiter = self._drain_waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._drain_waiter = None

    # -- the listener's controls ----------------------------------------------------------------

    def drain_connection(self, quiet_s: float) -> None:
        """The listener drains: answers say ``Connection: close``, and the connection closes
        once it has been quiet between two requests for ``quiet_s``."""
        self._drain_quiet = quiet_s
        if self._task is None and not self._buffer:
            self._arm(quiet_s, self._close_if_idle)

    async def shutdown(self, grace_s: float) -> None:
        """The listener stops: a request still answered after ``grace_s`` is cancelled."""
        task = self._task
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=grace_s)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.transport is not None and not self.handed_over:
            self.transport.close()

    # -- requests -------------------------------------------------------------------------------

    def _next(self) -> None:
        """Start answering the next request in the buffer, if its head is all here."""
        buffer = self._buffer
        transport = self.transport
        if self._closed or transport is None or self.handed_over:
            return
        if self._paused_reading and len(buffer) <= MAX_PIPELINED:
            self._paused_reading = False
            transport.resume_reading()
        if not buffer:
            self._head_since = None
            if self._eof:
                transport.close()  # the client said it sends no more, and all is answered
                return
            if self._drain_quiet is not None:
                self._arm(self._drain_quiet, self._close_if_idle)
            else:
                self._arm(self._keepalive_timeout, self._close_if_idle)
            return
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_PLAIN_HEAD or b"\n\n" in buffer:
                self._give_up_to_aiohttp()
                return
            if self._eof:
                transport.close()  # the rest of this head will never come
                return
            # A head still arriving: its clock runs from its first byte.
            if self._head_since is None:
                self._head_since = self._loop.time()
            left = self._head_since + self._head_timeout - self._loop.time()
            self._arm(max(0.0, left), self._head_expired)
            return
        size = end + 4
        if size > MAX_PLAIN_HEAD:
            self._give_up_to_aiohttp()
            return
        request = self._parse(bytes(buffer[:size]))
        if request is None:
            self._give_up_to_aiohttp()
            return
        self._disarm()
        # Bytes behind this head (sent with it) are the next head: its clock starts now.
        self._head_since = self._loop.time() if len(buffer) > size else None
        self._task = self._loop.create_task(self._answer(request, size))

    def _parse(self, head: bytes) -> PlainRequest | None:
        found = _Head()
        try:
            found.parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            # Refused (aiohttp's parser refuses it too, with the fixed page), or an upgrade.
            return None
        if (
            not found.complete
            or not found.plain
            or len(found.headers) > MAX_HEADERS
            or found.hosts != 1
            or found.version != "1.1"
            or not found.url.startswith(b"/")
        ):
            return None
        return PlainRequest(
            self,
            found.method.decode("ascii"),
            found.url.decode("utf-8", "surrogateescape"),
            CIMultiDictProxy(CIMultiDict(found.headers)),
            found.host,
            close=not found.keep_alive,
        )

    async def _answer(self, request: PlainRequest, size: int) -> None:
        try:
            try:
                answered = await self._handler(request)
            except Exception:
                log.exception("unexpected error answering a request", extra={"reason": "internal"})
                request.abort()
                return
            if not answered:
                if request.started:
                    request.abort()  # a handler that wrote and then declined: nothing is sure
                else:
                    self._give_up_to_aiohttp()
                return
            del self._buffer[:size]
            transport = self.transport
            if request.close or transport is None or transport.is_closing():
                if transport is not None:
                    transport.close()
                return
            if self._paused_writing:
                # A client that sends requests without reading the answers: the next one is
                # read once it has taken these, within send_s, else it is dropped.
                try:
                    async with asyncio.timeout(self._send_timeout):
                        await self.drain()
                except (TimeoutError, ConnectionError):
                    request.abort()
                    return
        finally:
            self._task = None
        self._next()

    def _give_up_to_aiohttp(self) -> None:
        """From now on aiohttp's server reads this connection, starting with the bytes not yet
        consumed (a request head, possibly with more behind it)."""
        transport = self.transport
        assert transport is not None
        self._cancel_timer()
        self.handed_over = True
        self._connections.discard(self)
        since = self._head_since
        # The head's clock keeps running: aiohttp's server gets what is left of it.
        left = (
            self._head_timeout if since is None else since + self._head_timeout - self._loop.time()
        )
        protocol = self._hand_over(max(0.0, left))
        if self._paused_reading:
            self._paused_reading = False
            transport.resume_reading()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused_writing:
            protocol.pause_writing()
        data, self._buffer = bytes(self._buffer), bytearray()
        if data:
            protocol.data_received(data)

    # -- timers ---------------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` in ``delay`` seconds, unless disarmed or re-armed before. A timer
        that fires earlier than needed is kept and moves on when it fires, so that a busy
        keep-alive connection does not make and cancel two timers per request."""
        deadline = self._loop.time() + delay
        self._deadline = deadline
        self._on_deadline = callback
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._deadline_reached)

    def _disarm(self) -> None:
        self._deadline = None

    def _cancel_timer(self) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline_reached(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._deadline_reached)
            return
        self._deadline = None
        self._on_deadline()

    def _head_expired(self) -> None:
        transport = self.transport
        if self._task is not None or transport is None or transport.is_closing():
            return
        # No answer is being written: a 408 cannot cut one.
        transport.write(TIMEOUT_RESPONSE)
        transport.close()

    def _close_if_idle(self) -> None:
        """The keep-alive time ran out, or the quiet period of a drain: close, unless a request
        came meanwhile."""
        if self._task is None and not self._buffer and self.transport is not None:
            self.transport.close()
