"""The main listener's own HTTP/1.1 server for plain requests (gateway.plain), on real sockets.

A :class:`~gateway.listener.Listener` with a plain handler answers plain requests itself and
hands every other request, with the rest of its connection, to aiohttp's server. Each side here
answers with its own name, so the tests see who read which request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.config.settings import ClientTimeouts
from gateway.listener import Listener
from gateway.plain import MAX_PLAIN_HEAD, PlainRequest

FAST = ClientTimeouts(request_header_s=0.6, keepalive_s=0.8, body_s=5.0, send_s=5.0)


class Sides:
    """The two handlers of one listener, and what each was asked."""

    def __init__(self) -> None:
        self.plain: list[str] = []
        self.hosts: list[str] = []
        self.aiohttp: list[str] = []
        self.decline: set[str] = set()
        self.write_errors: list[type[BaseException]] = []

    async def on_plain(self, request: PlainRequest) -> bool:
        if request.raw_path in self.decline:
            return False
        self.plain.append(request.raw_path)
        self.hosts.append(request.host)
        if request.raw_path == "/stream":
            request.start(200, "OK", [("Content-Type", "text/plain")], None)
            for part in (b"one ", b"two ", b"three"):
                request.write(part)
                await request.drain()
                await asyncio.sleep(0.01)
            request.finish()
            return True
        if request.raw_path == "/no-content":
            request.start(204, "No Content", [("Content-Length", "0")], b"")
            return True
        if request.raw_path == "/big":
            request.respond(200, "OK", [], b"x" * 256 * 1024)
            return True
        if request.raw_path == "/split":
            try:
                request.respond(200, "OK", [("X-Evil", "a\r\nSet-Cookie: x=1")], b"")
            except ValueError:
                request.respond(500, "Internal Server Error", [], b"refused\n")
            return True
        if request.raw_path == "/after-close":
            await asyncio.sleep(0.3)  # the client is gone by now
            try:
                request.respond(200, "OK", [], b"late")
            except ConnectionError as exc:
                self.write_errors.append(type(exc))
            return True
        body = f"OWN {request.method} {request.raw_path}\n".encode()
        request.respond(200, "OK", [("Content-Type", "text/plain")], body)
        return True

    async def on_aiohttp(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        self.aiohttp.append(request.raw_path)
        text = f"AIO {request.method} {request.raw_path} {body.decode()}\n"
        return web.Response(text=text)


@contextlib.asynccontextmanager
async def serving(
    timeouts: ClientTimeouts = FAST,
) -> AsyncIterator[tuple[Listener, Sides]]:
    sides = Sides()
    listener = Listener(sides.on_aiohttp, timeouts, plain=sides.on_plain)
    await listener.start("127.0.0.1", 0)
    try:
        yield listener, sides
    finally:
        await listener.stop()


async def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data``; read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def answered_and_open(
    port: int, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A keep-alive connection on which ``GET path`` has been answered by the own server."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get(path))
    await writer.drain()
    async with asyncio.timeout(5):
        await reader.readuntil(f"OWN GET {path}\n".encode())
    return reader, writer


def said(answer: bytes) -> list[bytes]:
    """The bodies of the answers in ``answer``: who answered what, in order."""
    lines = answer.replace(b"\r\n", b"\n").split(b"\n")
    return [line.strip() for line in lines if line.startswith((b"OWN", b"AIO"))]


def get(path: str, *extra: str, close: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: gw.test", *extra]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def test_plain_requests_are_answered_by_the_gateways_own_server() -> None:
    async with serving() as (listener, sides):
        answer = await exchange(listener.port, get("/a") + get("/b?x=1", close=True))
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert b"OWN GET /a\n" in answer
    assert b"OWN GET /b?x=1\n" in answer
    assert b"Server: gateway\r\n" in answer and b"Date: " in answer
    assert answer.rstrip().endswith(b"OWN GET /b?x=1")
    assert sides.plain == ["/a", "/b?x=1"] and sides.aiohttp == []


async def test_a_request_with_a_body_goes_to_aiohttp_with_the_rest_of_the_connection() -> None:
    # Pipelined in one write: the plain GET is answered, then the POST (body and all) and
    # everything after it are read by aiohttp's server, in order, nothing lost or doubled.
    async with serving() as (listener, sides):
        answer = await exchange(
            listener.port, get("/first") + post("/upload", b"hello") + get("/last", close=True)
        )
    assert said(answer) == [b"OWN GET /first", b"AIO POST /upload hello", b"AIO GET /last"]
    assert sides.plain == ["/first"]
    assert sides.aiohttp == ["/upload", "/last"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /old HTTP/1.0\r\nHost: gw.test\r\n\r\n",
        b"GET /expect HTTP/1.1\r\nHost: gw.test\r\nExpect: 100-continue\r\n"
        b"Content-Length: 0\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET http://gw.test/absolute HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        b"GET /nohost HTTP/1.1\r\n\r\n",
        b"GET /twohosts HTTP/1.1\r\nHost: gw.test\r\nHost: other.test\r\n\r\n",
        b"DELETE /empty-body HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n\r\n",
        b"GET /chunked HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /bare-lf HTTP/1.1\nHost: gw.test\n\n",
    ],
    ids=[
        "http10",
        "expect",
        "upgrade",
        "absolute-form",
        "no-host",
        "two-hosts",
        "content-length",
        "transfer-encoding",
        "bare-lf",
    ],
)
async def test_requests_that_are_not_plain_are_left_to_aiohttp(request_bytes: bytes) -> None:
    async with serving() as (listener, sides):
        answer = await exchange(listener.port, request_bytes, timeout=3.0)
    assert sides.plain == []
    assert b"OWN" not in answer
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200", b"HTTP/1.0 400"))


async def test_a_head_longer_than_the_plain_limit_is_read_by_aiohttp() -> None:
    cookie = "c=" + "x" * (MAX_PLAIN_HEAD + 100)
    async with serving() as (listener, sides):
        answer = await exchange(listener.port, get("/big-head", f"Cookie: {cookie}", close=True))
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"AIO GET /big-head" in answer
    assert sides.plain == []


async def test_a_malformed_request_gets_the_fixed_page_and_nothing_of_itself() -> None:
    secret = "gw_session=SECRET-VALUE"
    async with serving() as (listener, sides):
        answer = await exchange(
            listener.port, f"GET /x HTTP/1.1\r\nHost: gw.test\r\nCookie {secret}\r\n\r\n".encode()
        )
    assert answer.startswith(b"HTTP/1.0 400")
    assert b"SECRET-VALUE" not in answer
    assert sides.plain == [] and sides.aiohttp == []


async def test_a_declined_request_is_answered_by_aiohttp_from_its_first_byte() -> None:
    async with serving() as (listener, sides):
        sides.decline.add("/own")
        pipelined = get("/proxied") + get("/own") + get("/x", close=True)
        answer = await exchange(listener.port, pipelined)
    assert said(answer) == [b"OWN GET /proxied", b"AIO GET /own", b"AIO GET /x"]


async def test_a_streamed_answer_is_chunked_and_arrives_whole() -> None:
    async with (
        serving() as (listener, _),
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{listener.port}/stream") as resp,
    ):
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert await resp.read() == b"one two three"


async def test_head_answers_carry_the_length_and_no_body() -> None:
    async with serving() as (listener, _):
        head = b"HEAD /h HTTP/1.1\r\nHost: gw.test\r\n\r\n"
        answer = await exchange(listener.port, head + get("/after", close=True))
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.endswith(b"\r\nContent-Length: 12")  # len("OWN HEAD /h\n")
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")  # no body between the two answers


async def test_a_header_with_a_newline_is_refused_not_written() -> None:
    async with serving() as (listener, _):
        answer = await exchange(listener.port, get("/split", close=True))
    assert answer.startswith(b"HTTP/1.1 500")
    assert b"Set-Cookie" not in answer


async def test_writing_to_a_client_that_left_raises_connection_error() -> None:
    async with serving() as (listener, sides):
        _, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(get("/after-close"))
        await writer.drain()
        deadline = time.monotonic() + 5
        while "/after-close" not in sides.plain and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # Gone while its answer is made: a reset (linger 0), not a half-close.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        while not sides.write_errors and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert sides.write_errors and issubclass(sides.write_errors[0], ConnectionError)


async def test_an_unfinished_head_gets_408_after_request_header() -> None:
    async with serving() as (listener, _):
        started = time.monotonic()
        answer = await exchange(listener.port, b"GET /slow HTTP/1.1\r\nHost: gw")
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408")
    assert 0.5 <= waited < 2.0


async def test_a_pipelined_unfinished_head_is_bounded_by_request_header_not_keepalive() -> None:
    # The request_header clock of a head that starts behind an answered request runs from its
    # first byte; the keep-alive timeout (longer here) must not give it more time.
    timeouts = ClientTimeouts(request_header_s=0.5, keepalive_s=30.0, body_s=5.0, send_s=5.0)
    async with serving(timeouts) as (listener, sides):
        started = time.monotonic()
        answer = await exchange(listener.port, get("/done") + b"GET /never HTTP/1.1\r\nHo")
        waited = time.monotonic() - started
    assert b"OWN GET /done" in answer
    assert b"HTTP/1.1 408" in answer
    assert waited < 2.0
    assert sides.plain == ["/done"]


async def test_an_idle_keepalive_connection_is_closed_after_keepalive() -> None:
    async with serving() as (listener, _):
        reader, writer = await answered_and_open(listener.port, "/one")
        async with asyncio.timeout(5):
            started = time.monotonic()
            assert await reader.read() == b""  # closed by the server, without a word
        waited = time.monotonic() - started
        writer.close()
    assert 0.6 <= waited < 2.5


async def test_draining_answers_with_connection_close_and_closes_quiet_connections() -> None:
    async with serving() as (listener, _):
        reader, writer = await answered_and_open(listener.port, "/before")
        listener.drain(quiet_s=5.0)
        writer.write(get("/during"))
        await writer.drain()
        async with asyncio.timeout(5):
            rest = await reader.read()  # answered, then closed: no quiet period needed
        writer.close()
        assert b"Connection: close\r\n" in rest and rest.endswith(b"OWN GET /during\n")

        reader, writer = await answered_and_open(listener.port, "/idle")
        listener.drain(quiet_s=0.2)
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()
        assert listener.connections == 0


async def test_a_client_that_reads_no_answers_is_not_answered_further_and_is_dropped() -> None:
    # Pipelined requests are answered only as fast as the client takes the answers: one that
    # sends many and reads none holds a bounded amount of memory, and only for send_s.
    timeouts = ClientTimeouts(request_header_s=5.0, keepalive_s=30.0, body_s=5.0, send_s=0.5)
    async with serving(timeouts) as (listener, sides):
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(get("/big") * 300)  # 300 answers of 256 KiB: 75 MiB if all were queued
        await writer.drain()
        await asyncio.sleep(1.5)
        answered = len(sides.plain)
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(5):
                while await reader.read(1 << 20):
                    pass
        writer.close()
    assert 0 < answered < 100
    assert len(sides.plain) == answered  # dropped: nothing more was answered once it read


async def test_a_pipelined_flood_is_read_only_as_fast_as_it_is_answered() -> None:
    # One connection sends 32 MiB of small requests and reads every answer: the gateway must
    # not pull the flood into memory faster than it answers (it would hold all of it).
    flood = get("/a") * (32 * 1024 * 1024 // len(get("/a")))
    async with serving() as (listener, sides):
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)

        async def read_all() -> None:
            with contextlib.suppress(ConnectionError):
                while await reader.read(1 << 20):
                    pass

        draining = asyncio.create_task(read_all())
        writer.write(flood)
        await asyncio.sleep(1.0)
        not_taken = writer.transport.get_write_buffer_size()
        answered = len(sides.plain)
        writer.transport.abort()
        draining.cancel()
    # Kernel buffers hold a few MiB; the rest must still wait on the client's side.
    assert answered > 0
    assert not_taken > 16 * 1024 * 1024


async def test_trailing_whitespace_of_a_header_value_is_not_part_of_it() -> None:
    # As aiohttp reads it: "Host: gw.test \t" is gw.test (else: a malformed Host, 400).
    async with serving() as (listener, sides):
        answer = await exchange(
            listener.port, b"GET /t HTTP/1.1\r\nHost: gw.test \t\r\n\r\n" + get("/u", close=True)
        )
    assert b"OWN GET /t" in answer
    assert sides.hosts == ["gw.test", "gw.test"]


async def test_more_header_lines_than_aiohttp_takes_are_refused_as_aiohttp_does() -> None:
    many = [f"X-{i}: v" for i in range(200)]
    async with serving() as (listener, sides):
        answer = await exchange(listener.port, get("/many", *many, close=True))
    assert answer.startswith(b"HTTP/1.0 400")
    assert sides.plain == []


async def test_a_handed_over_head_keeps_what_is_left_of_its_time() -> None:
    # A head dribbled for most of request_header, then made too long for the plain parser:
    # aiohttp's server gets the rest of the time, not a fresh request_header.
    timeouts = ClientTimeouts(request_header_s=1.0, keepalive_s=30.0, body_s=5.0, send_s=5.0)
    async with serving(timeouts) as (listener, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        started = time.monotonic()
        writer.write(b"GET /slow HTTP/1.1\r\nHost: gw.test\r\nX-Long: ")
        await asyncio.sleep(0.7)
        writer.write(b"y" * (MAX_PLAIN_HEAD + 10))
        async with asyncio.timeout(5):
            answer = await reader.read()
        waited = time.monotonic() - started
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert waited < 1.5


async def test_a_204_answer_carries_no_content_length() -> None:
    async with serving() as (listener, _):
        answer = await exchange(listener.port, get("/no-content", close=True))
    assert answer.startswith(b"HTTP/1.1 204")
    assert b"Content-Length" not in answer


@pytest.mark.parametrize("count", [10, 3000], ids=["few", "over-the-read-limit"])
async def test_a_client_that_half_closes_gets_every_answer_it_asked_for(count: int) -> None:
    # shutdown(SHUT_WR) after the last request: "I send no more", not "I read no more".
    async with serving() as (listener, sides):
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(get("/a") * count)
        await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(10):
            answer = await reader.read()  # until the gateway closes
        writer.close()
    assert answer.count(b"OWN GET /a\n") == count
    assert len(sides.plain) == count


async def test_a_head_sent_behind_a_request_is_timed_from_then() -> None:
    # The start of the next head arrives in the same packet as a complete request, the rest a
    # byte at a time: its request_header clock runs from that packet, not from a later byte.
    timeouts = ClientTimeouts(request_header_s=1.0, keepalive_s=30.0, body_s=5.0, send_s=5.0)
    async with serving(timeouts) as (listener, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        started = time.monotonic()
        writer.write(get("/first") + b"GET /second HTTP/1.1\r\n")
        async with asyncio.timeout(5):
            await reader.readuntil(b"OWN GET /first\n")
            rest_read = asyncio.create_task(reader.read())
            while not rest_read.done():
                await asyncio.sleep(0.2)
                with contextlib.suppress(ConnectionError):
                    writer.write(b"X")
                    await writer.drain()
            rest = await rest_read
        waited = time.monotonic() - started
        writer.close()
    assert rest.startswith(b"HTTP/1.1 408")
    assert waited < 1.6
