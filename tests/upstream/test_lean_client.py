"""LeanUpstreamClient against real servers on loopback: aiohttp apps, raw asyncio servers that
misbehave on purpose, and http.server (keep-alive) in a thread. No mocks.

Sections follow the client's contract: pools, connect, request body, response parsing, body
streaming, response/request pairing (desync), retry, release/close, error hygiene, WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config.settings import UpstreamSettings
from gateway.errors import UpstreamAborted, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.upstream import (
    AiohttpUpstreamClient,
    LeanUpstreamClient,
    UpstreamRequest,
    WebSocketUpstreamClient,
    lean_client,
)
from gateway.upstream.lean_client import IDLE_TIMEOUT_S
from tests.support import wait_for

AiohttpServer = Callable[..., Awaitable[TestServer]]
SECRET = "eyJhbGciOiJFUzI1NiJ9.secret-token"

# --- helpers -----------------------------------------------------------------------------------


def settings(url: str, *, name: str = "app", **kwargs: Any) -> UpstreamSettings:
    kwargs.setdefault("connect_timeout_s", 1.0)
    kwargs.setdefault("read_timeout_s", 2.0)
    return UpstreamSettings(name=name, url=url, **kwargs)


def request(
    up: UpstreamSettings,
    target: str = "/",
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] | None = None,
    body: Iterable[bytes] | AsyncIterator[bytes] | None = None,
    length: int | None = None,
) -> UpstreamRequest:
    if headers is None:
        headers = [("Host", "upstream.test")]
    if body is not None and not isinstance(body, AsyncIterator):
        body = achunks(body)
    return UpstreamRequest(
        upstream=up,
        method=method,
        target=target,
        headers=headers,
        body=body,
        content_length=length,
    )


async def achunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def read_body(resp: Any) -> bytes:
    try:
        return b"".join([chunk async for chunk in resp.iter_body()])
    finally:
        resp.release()


async def fetch(client: LeanUpstreamClient, req: UpstreamRequest) -> tuple[int, bytes]:
    resp = await client.send(req)
    return resp.status, await read_body(resp)


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """A bounded wait on observable state (never an assertion about timing)."""
    await wait_for(predicate, timeout, interval=0.005)


def idle(client: LeanUpstreamClient, name: str = "app") -> int:
    pool = client._pools.get(name)
    return len(pool.idle) if pool is not None else 0


def response(
    body: bytes = b"",
    *,
    status: str = "200 OK",
    headers: Sequence[str] = (),
    length: bool = True,
) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*chunks: bytes) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    return out + b"0\r\n\r\n"


# --- a raw asyncio upstream ----------------------------------------------------------------------


@dataclass
class Received:
    method: str
    target: str
    head: bytes
    body: bytes

    def header(self, name: str) -> list[str]:
        out = []
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(": ")
            if key.lower() == name.lower():
                out.append(value)
        return out


async def read_request(reader: asyncio.StreamReader) -> Received | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].split(b"\r\n")
    method, target, _ = lines[0].split(b" ", 2)
    fields = {}
    for line in lines[1:]:
        key, _, value = line.partition(b": ")
        fields[key.lower()] = value
    body = b""
    try:
        if b"content-length" in fields:
            body = await reader.readexactly(int(fields[b"content-length"]))
        elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return Received(method.decode(), target.decode(), head, body)


@dataclass
class RawConn:
    """One accepted connection: what arrived on it, and whether the client closed it."""

    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[Received] = field(default_factory=list)
    eof: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self) -> Received | None:
        received = await read_request(self.reader)
        if received is None:
            self.eof.set()
        else:
            self.requests.append(received)
        return received

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self) -> None:
        """Read (and drop) until the client closes."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.eof.set()


RawHandler = Callable[[RawConn], Awaitable[None]]


class RawServer:
    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler
        self.conns: list[RawConn] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> RawServer:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = RawConn(len(self.conns), reader, writer)
        self.conns.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for conn in self.conns:
            conn.writer.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


def keep_alive(respond: Callable[[Received, RawConn], bytes]) -> RawHandler:
    """A well-behaved keep-alive upstream answering each request with ``respond``."""

    async def handler(conn: RawConn) -> None:
        while (received := await conn.request()) is not None:
            await conn.send(respond(received, conn))

    return handler


def echo(received: Received, conn: RawConn) -> bytes:
    """Answer with the connection's number and the target: which request got which answer."""
    return response(f"{conn.index}:{received.target}".encode())


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawHandler], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def make(handler: RawHandler) -> RawServer:
        server = await RawServer(handler).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def client() -> AsyncIterator[LeanUpstreamClient]:
    lean = LeanUpstreamClient({})
    yield lean
    await lean.close()


# --- http.server (keep-alive) in a thread --------------------------------------------------------


class _BodyIgnoringHandler(BaseHTTPRequestHandler):
    """Answers every GET and POST with its path and never reads the request body: what some
    servers do, which turns a body into the next request on the connection."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.seen.append((self.client_address[1], self.path))
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def body_ignoring_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BodyIgnoringHandler)
    server.daemon_threads = True
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def seen_paths(server: ThreadingHTTPServer) -> list[str]:
    return [path for _, path in server.seen]


# --- 1. pools ------------------------------------------------------------------------------------


async def test_idle_connections_are_reused_last_in_first_out(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    server = await raw_server(keep_alive(echo))
    up = settings(server.url)
    first = await client.send(request(up, "/a"))
    second = await client.send(request(up, "/b"))  # the first is in use: a second connection
    assert await read_body(first) == b"0:/a"
    assert await read_body(second) == b"1:/b"  # released last: on top of the idle stack
    assert idle(client) == 2
    assert await fetch(client, request(up, "/c")) == (200, b"1:/c")
    assert await fetch(client, request(up, "/d")) == (200, b"1:/d")
    assert len(server.conns) == 2


async def test_max_connections_waits_then_times_out_as_pool_timeout(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    server = await raw_server(keep_alive(echo))
    up = settings(server.url, max_connections=1, connect_timeout_s=0.2)
    held = await client.send(request(up, "/held"))
    with pytest.raises(UpstreamTimeout) as info:
        await client.send(request(up, "/blocked"))
    assert info.value.reason == "pool_timeout"
    assert len(server.conns) == 1  # no connection was opened for the blocked request

    # A waiter gets the permit (and the connection) as soon as it is released.
    waiting = asyncio.create_task(fetch(client, request(up, "/waited")))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    assert await read_body(held) == b"0:/held"
    assert await waiting == (200, b"0:/waited")


async def test_an_upstream_added_later_gets_a_pool_on_first_use(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
) -> None:
    one = await raw_server(keep_alive(echo))
    two = await raw_server(keep_alive(lambda r, c: response(b"two")))
    lean = LeanUpstreamClient({"app": settings(one.url)})
    try:
        assert await fetch(lean, request(settings(one.url), "/x")) == (200, b"0:/x")
        # Not known at construction (a reload added it):
        assert await fetch(lean, request(settings(two.url, name="new"), "/y")) == (200, b"two")
        # Same name, new settings (a reload changed its URL): a new pool, the old one retired.
        assert await fetch(lean, request(settings(two.url), "/z")) == (200, b"two")
        await wait_until(lambda: one.conns[0].eof.is_set())  # the old pool's idle one closed
    finally:
        await lean.close()


async def test_idle_connections_close_after_the_idle_timeout(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
) -> None:
    assert IDLE_TIMEOUT_S == 15.0  # the default; shortened here
    server = await raw_server(keep_alive(echo))
    up = settings(server.url)
    lean = LeanUpstreamClient({}, idle_timeout_s=0.15)
    try:
        assert await fetch(lean, request(up, "/a")) == (200, b"0:/a")
        assert idle(lean) == 1
        assert not server.conns[0].eof.is_set()
        await wait_until(lambda: server.conns[0].eof.is_set())  # closed by the client
        assert idle(lean) == 0
        assert await fetch(lean, request(up, "/b")) == (200, b"1:/b")
    finally:
        await lean.close()


async def test_idle_connection_closed_by_the_upstream_leaves_the_pool_at_once(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def answer_then_close(conn: RawConn) -> None:
        received = await conn.request()
        assert received is not None
        await conn.send(echo(received, conn))
        await asyncio.sleep(0.05)  # the connection is idle in the client's pool by now

    server = await raw_server(answer_then_close)
    up = settings(server.url)
    assert await fetch(client, request(up, "/a")) == (200, b"0:/a")
    assert idle(client) == 1
    await wait_until(lambda: idle(client) == 0)
    assert await fetch(client, request(up, "/b")) == (200, b"1:/b")


# --- 2. connect ----------------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def test_connection_refused_is_connect_failed(
    client: LeanUpstreamClient, closed_port: int
) -> None:
    with pytest.raises(UpstreamUnavailable) as info:
        await client.send(request(settings(f"http://127.0.0.1:{closed_port}")))
    assert info.value.reason == "connect_failed"
    assert info.value.status == 502


async def test_unresolvable_host_is_connect_failed(client: LeanUpstreamClient) -> None:
    with pytest.raises(UpstreamUnavailable) as info:
        await client.send(request(settings("http://upstream.invalid:80")))
    assert info.value.reason == "connect_failed"


async def test_connect_timeout(client: LeanUpstreamClient, full_backlog_port: int) -> None:
    up = settings(f"http://127.0.0.1:{full_backlog_port}", connect_timeout_s=0.2)
    with pytest.raises(UpstreamTimeout) as info:
        await client.send(request(up))
    assert info.value.reason == "connect_timeout"
    assert info.value.status == 504


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost / 127.0.0.1: (ca, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[tuple[str, Path, list[str]]]:
    """An aiohttp upstream over TLS: (https URL on "localhost", CA file, SNI names seen)."""
    ca_file, cert_file, key_file = _certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    names: list[str] = []
    context.sni_callback = lambda _sock, name, _ctx: names.append(name or "")

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"tls {request.path_qs}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    port = runner.addresses[0][1]
    try:
        yield f"https://localhost:{port}", ca_file, names
    finally:
        await runner.cleanup()


async def test_https_upstream_uses_verified_tls_with_the_host_name(
    tls_upstream: tuple[str, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_file, names = tls_upstream
    # ssl.create_default_context() reads the system trust store; point it at the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    lean = LeanUpstreamClient({})
    try:
        assert await fetch(lean, request(settings(url), "/s?q=1")) == (200, b"tls /s?q=1")
        assert await fetch(lean, request(settings(url), "/again")) == (200, b"tls /again")
        assert names == ["localhost"]  # one handshake (the connection was reused), with SNI
    finally:
        await lean.close()


async def test_https_upstream_with_an_untrusted_certificate_is_refused(
    tls_upstream: tuple[str, Path, list[str]], client: LeanUpstreamClient
) -> None:
    url, _, _ = tls_upstream
    with pytest.raises(UpstreamUnavailable) as info:
        await client.send(request(settings(url)))
    assert info.value.reason == "connect_failed"
    assert "SSLCertVerificationError" in str(info.value)


def _capturing(sink: list[Received]) -> RawHandler:
    def respond(received: Received, conn: RawConn) -> bytes:
        sink.append(received)
        if received.method == "HEAD":
            return response(headers=["Content-Length: 2"], length=False)
        return response(b"ok")

    return keep_alive(respond)


BODIES = {
    "none": (None, None),
    "empty": ([], 0),
    "length": ([b"hello ", b"world"], 11),
    "chunked": ([b"hello ", b"world"], None),
}


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("body", sorted(BODIES))
async def test_request_head_is_what_aiohttp_sends(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    method: str,
    body: str,
) -> None:
    """The same request line, headers (and their order) and framing as the aiohttp client,
    byte for byte: the client adds nothing of its own but framing."""
    got: list[Received] = []
    server = await raw_server(_capturing(got))
    # Framing compared as is: keep-alive after a body (Connection: close otherwise, see below).
    up = settings(server.url + "/base", keepalive_after_body=True)
    chunks, length = BODIES[body]
    headers = [("Host", "app.example"), ("X-Mixed-Case", "v"), ("cookie", "a=1; b=2")]
    target = "/a/b%20c/?q=1&q=2&e=%20x+y&&flag"

    def make() -> UpstreamRequest:
        return request(
            up,
            target,
            method=method,
            headers=headers,
            body=None if chunks is None else list(chunks),
            length=length,
        )

    reference = AiohttpUpstreamClient({})
    try:
        resp = await reference.send(make())
        await read_body(resp)
    finally:
        await reference.close()
    resp = await client.send(make())
    await read_body(resp)
    aiohttp_sent, lean_sent = got
    assert lean_sent.head == aiohttp_sent.head
    assert lean_sent.body == aiohttp_sent.body
    assert lean_sent.head.startswith(f"{method} /base{target} HTTP/1.1\r\n".encode())


@pytest.mark.parametrize(
    ("target", "wire"),
    [("/x?", "/x"), ("/x??", "/x??"), ("/x#frag", "/x"), ("/%2e%2e/a%2Fb", "/%2e%2e/a%2Fb")],
    ids=["empty-query", "question-mark-query", "fragment", "encoded-kept"],
)
async def test_target_goes_on_the_request_line_byte_exact(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    target: str,
    wire: str,
) -> None:
    got: list[Received] = []
    server = await raw_server(_capturing(got))
    await fetch(client, request(settings(server.url + "/b%20p"), target))
    assert got[0].target == "/b%20p" + wire


async def test_header_values_go_out_as_the_client_sent_them(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    """aiohttp's server decodes header bytes as UTF-8 with surrogateescape: they go back out
    unchanged (aiohttp's client would drop the undecodable ones)."""
    got: list[Received] = []
    server = await raw_server(_capturing(got))
    headers = [("Host", "x"), ("X-Utf8", "\u00e9t\u00e9"), ("X-Raw", "a\udcffb")]
    await fetch(client, request(settings(server.url), headers=headers))
    assert b"\r\nX-Utf8: \xc3\xa9t\xc3\xa9\r\nX-Raw: a\xffb\r\n" in got[0].head


@pytest.mark.parametrize(
    ("headers", "target"),
    [
        ([("X-A", "one\r\nX-Injected: 1")], "/"),
        ([("X-A", "one\nX-Injected: 1")], "/"),
        ([("X-A", "one\rtwo")], "/"),
        ([("X-A", "nul\x00")], "/"),
        ([("X-A", "lone surrogate \ud800")], "/"),
        ([("X-A\r\nX-B", "v")], "/"),
        ([("X A", "v")], "/"),
        ([("X-A:", "v")], "/"),
        ([("X-A\x00", "v")], "/"),
        ([("X\tA", "v")], "/"),
        ([("X-Good", "v"), ("X-A\nX-B", "v")], "/"),
        ([("", "v")], "/"),
        ([("Content-Length", "5")], "/"),
        ([("transfer-encoding", "chunked")], "/"),
        ([], "/a b"),
        ([], "/a\r\nHost: evil"),
    ],
    ids=[
        "crlf-in-value",
        "lf-in-value",
        "cr-in-value",
        "nul-in-value",
        "unencodable-value",
        "crlf-in-name",
        "space-in-name",
        "colon-in-name",
        "nul-in-name",
        "tab-in-name",
        "lf-in-second-name",
        "empty-name",
        "content-length",
        "transfer-encoding",
        "space-in-target",
        "crlf-in-target",
    ],
)
async def test_unsendable_request_is_refused_before_connecting(
    client: LeanUpstreamClient,
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    headers: list[tuple[str, str]],
    target: str,
) -> None:
    server = await raw_server(keep_alive(echo))
    with pytest.raises(UpstreamError) as info:
        await client.send(request(settings(server.url), target, headers=headers))
    assert info.value.reason == ("bad_request_header" if headers else "bad_request_line")
    assert server.conns == []


async def test_names_seen_valid_are_remembered_only_so_far_and_never_let_a_bad_one_through(
    client: LeanUpstreamClient,
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
) -> None:
    # The names found to be tokens are remembered (a set lookup instead of a regex per name),
    # up to a bound: a client choosing ever new names grows nothing without limit.
    server = await raw_server(keep_alive(echo))
    for start in range(0, 1200, 200):
        names = [(f"X-Name-{n}", "v") for n in range(start, start + 200)]
        response = await client.send(request(settings(server.url), "/", headers=names))
        response.release()
    assert len(lean_client._KNOWN_TOKENS) <= lean_client._MAX_KNOWN_TOKENS
    with pytest.raises(UpstreamError) as info:
        await client.send(request(settings(server.url), "/", headers=[("X-Name-1 :", "v")]))
    assert info.value.reason == "bad_request_header"


# --- 3. request body -----------------------------------------------------------------------------


async def test_request_body_streams_as_it_is_produced(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    first_arrived = asyncio.Event()

    async def handler(conn: RawConn) -> None:
        head = await conn.reader.readuntil(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head
        assert await conn.reader.readuntil(b"\r\n") == b"6\r\n"
        assert await conn.reader.readexactly(8) == b"first \r\n"
        first_arrived.set()  # the client holds its second chunk until now
        rest = await conn.reader.readuntil(b"0\r\n\r\n")
        assert rest == b"6\r\nsecond\r\n0\r\n\r\n"
        await conn.send(response(b"done"))
        await conn.until_closed()

    async def body() -> AsyncIterator[bytes]:
        yield b"first "
        await first_arrived.wait()
        yield b"second"

    server = await raw_server(handler)
    async with asyncio.timeout(3):
        status, data = await fetch(
            client, request(settings(server.url), method="POST", body=body())
        )
    assert (status, data) == (200, b"done")


async def test_request_body_respects_flow_control(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    """An upstream that does not read: the body is not pulled faster than the socket drains."""
    start_reading = asyncio.Event()
    produced = 0
    size = 32 * 1024 * 1024  # well over what the kernel buffers on loopback

    async def handler(conn: RawConn) -> None:
        await start_reading.wait()
        received = await conn.request()
        assert received is not None
        digest = hashlib.sha256(received.body).hexdigest()
        await conn.send(response(f"{len(received.body)} {digest}".encode()))
        await conn.until_closed()

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        chunk = bytes(range(256)) * 256
        while produced < size:
            produced += len(chunk)
            yield chunk

    server = await raw_server(handler)
    send = asyncio.create_task(
        client.send(request(settings(server.url), method="PUT", body=body(), length=size))
    )
    await wait_until(lambda: bool(client._connections))
    conn = next(iter(client._connections))
    # Once the kernel's buffers are full, the body is no longer pulled: the client waits for
    # the socket to drain instead of reading the body ahead into memory.
    last = -1
    async with asyncio.timeout(5):
        while not (produced == last and conn.write_paused):
            last = produced
            await asyncio.sleep(0.05)
    assert produced < size
    assert conn.transport.get_write_buffer_size() <= 2 * 65536
    start_reading.set()
    resp = await send
    expected = hashlib.sha256((bytes(range(256)) * 256) * (size // 65536)).hexdigest()
    assert await read_body(resp) == f"{size} {expected}".encode()


async def test_upstream_not_reading_the_body_is_a_read_timeout(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(10)  # reads no more, answers nothing

    async def body() -> AsyncIterator[bytes]:
        chunk = b"x" * 65536
        while True:
            yield chunk

    server = await raw_server(handler)
    up = settings(server.url, read_timeout_s=0.2)
    async with asyncio.timeout(5):
        with pytest.raises(UpstreamTimeout) as info:
            await client.send(request(up, method="POST", body=body()))
    assert info.value.reason == "read_timeout"


class BodyBroke(Exception):
    pass


async def test_body_failure_before_the_head_aborts_and_propagates(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def handler(conn: RawConn) -> None:
        received = await conn.request()
        if received is not None:
            await conn.send(echo(received, conn))
        await conn.until_closed()

    async def body() -> AsyncIterator[bytes]:
        yield b"part"
        raise BodyBroke("client went away")

    server = await raw_server(handler)
    up = settings(server.url, max_connections=1)
    with pytest.raises(UpstreamAborted) as info:
        await client.send(request(up, method="POST", body=body()))
    assert isinstance(info.value.__cause__, BodyBroke)
    await wait_until(lambda: server.conns[0].eof.is_set())  # that connection was dropped
    # The permit came back and a new connection serves the next request.
    assert await fetch(client, request(up, "/next")) == (200, b"1:/next")


@pytest.mark.skipif(
    lean_client.__file__.endswith(".so"),
    reason="replaces a method of a class, which the compiled build's classes do not allow",
)
async def test_a_body_pump_that_fails_by_itself_fails_the_exchange_and_frees_the_permit(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The pump handles the body's own failures; a defect in it (an exception it does not
    # catch) must not leave the request waiting for ever with its connection and permit.
    async def broken_pump(self: object, head: bytes, body: object, length: int | None) -> None:
        raise RuntimeError("a defect in the pump")

    server = await raw_server(keep_alive(echo))
    up = settings(server.url, max_connections=1, read_timeout_s=30.0)
    with monkeypatch.context() as patched:
        patched.setattr(lean_client._Connection, "_pump", broken_pump)
        async with asyncio.timeout(5):
            with pytest.raises(UpstreamAborted) as info:
                await client.send(request(up, method="POST", body=[b"part"]))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "request body pump failed" in caplog.text
    # The permit came back: the next request is served.
    assert await fetch(client, request(up, "/next")) == (200, b"1:/next")


async def test_body_failure_after_the_head_fails_the_body_read(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    """An upstream that answers before reading the body; the body then fails."""
    head_seen = asyncio.Event()

    async def handler(conn: RawConn) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nstarted;\r\n")
        await conn.until_closed()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 10
        await head_seen.wait()
        raise BodyBroke

    server = await raw_server(handler)
    resp = await client.send(request(settings(server.url), method="POST", body=body()))
    assert resp.status == 200
    chunks = resp.iter_body()
    assert await chunks.__anext__() == b"started;"
    head_seen.set()
    with pytest.raises(UpstreamAborted) as info:
        await chunks.__anext__()
    assert isinstance(info.value.__cause__, BodyBroke)
    resp.release()
    await wait_until(lambda: server.conns[0].eof.is_set())


async def test_early_response_returns_before_the_body_is_sent_and_is_not_reused(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    never = asyncio.Event()

    async def handler(conn: RawConn) -> None:
        if conn.index == 0:
            await conn.reader.readuntil(b"\r\n\r\n")
            await conn.send(response(b"too big", status="413 Payload Too Large"))
            await conn.until_closed()
        else:
            await keep_alive(echo)(conn)

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await never.wait()  # the rest never comes
        yield b"unreachable"

    server = await raw_server(handler)
    up = settings(server.url)
    async with asyncio.timeout(3):
        resp = await client.send(request(up, method="POST", body=body(), length=10**6))
        assert resp.status == 413
        assert await read_body(resp) == b"too big"
    assert idle(client) == 0
    await wait_until(lambda: server.conns[0].eof.is_set())
    assert await fetch(client, request(up, "/next")) == (200, b"1:/next")


# --- 4. response parsing -------------------------------------------------------------------------


async def test_interim_responses_are_skipped(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def handler(conn: RawConn) -> None:
        while (received := await conn.request()) is not None:
            await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            await asyncio.sleep(0.01)
            await conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            await conn.send(response(received.target.encode(), headers=["X-Final: yes"]))

    server = await raw_server(handler)
    up = settings(server.url)
    resp = await client.send(request(up, "/one"))
    assert resp.status == 200
    assert resp.headers == [("X-Final", "yes"), ("Content-Length", "4")]
    assert await read_body(resp) == b"/one"
    assert await fetch(client, request(up, "/two")) == (200, b"/two")
    assert len(server.conns) == 1


async def test_101_to_a_plain_request_is_bad_response(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.request()
        await conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n"
        )
        await conn.until_closed()

    server = await raw_server(handler)
    with pytest.raises(UpstreamError) as info:
        await client.send(request(settings(server.url)))
    assert info.value.reason == "bad_response"
    await wait_until(lambda: server.conns[0].eof.is_set())


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", response(headers=["Content-Length: 1234"], length=False)),
        ("HEAD", response(headers=["Transfer-Encoding: chunked"], length=False)),
        ("GET", response(status="204 No Content", length=False)),
        ("GET", response(status="304 Not Modified", headers=["Content-Length: 99"], length=False)),
        ("GET", response()),
    ],
    ids=["head-length", "head-chunked", "204", "304", "length-0"],
)
async def test_responses_without_body(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    method: str,
    answer: bytes,
) -> None:
    server = await raw_server(
        keep_alive(lambda r, c: answer if r.target == "/empty" else echo(r, c))
    )
    up = settings(server.url)
    resp = await client.send(request(up, "/empty", method=method))
    assert resp.body_complete == b""
    assert await read_body(resp) == b""
    if method == "HEAD":
        # SECURITY: never reused after HEAD (a body sent anyway could come after the next
        # request was written): the next request goes on a connection of its own.
        assert await fetch(client, request(up, "/next")) == (200, b"1:/next")
    else:
        # Nothing was left on the connection: it is reused for the next request.
        assert await fetch(client, request(up, "/next")) == (200, b"0:/next")


async def test_close_delimited_body_ends_at_eof_and_is_not_reused(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def handler(conn: RawConn) -> None:
        received = await conn.request()
        if conn.index == 0:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ")
            await asyncio.sleep(0.02)
            await conn.send(b"second part")
            return  # closes
        assert received is not None
        await conn.send(echo(received, conn))

    server = await raw_server(handler)
    up = settings(server.url)
    resp = await client.send(request(up, "/eof"))
    assert resp.body_complete is None
    assert await read_body(resp) == b"first part, second part"
    assert await fetch(client, request(up, "/next")) == (200, b"1:/next")


async def test_status_reason_and_headers_as_received(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    head = (
        b"HTTP/1.1 299 Very Custom  Reason\r\n"
        b"x-lower: 1\r\nX-UPPER: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        b"X-Utf8: \xc3\xa9t\xc3\xa9\r\nX-Raw: \xff\r\nX-Empty:\r\nContent-Length: 2\r\n\r\nok"
    )
    server = await raw_server(keep_alive(lambda r, c: head))
    resp = await client.send(request(settings(server.url)))
    assert (resp.status, resp.reason) == (299, "Very Custom  Reason")
    assert resp.headers == [
        ("x-lower", "1"),
        ("X-UPPER", "2"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("X-Utf8", "été"),  # as aiohttp decodes it, so it is relayed unchanged
        ("X-Raw", "\udcff"),
        ("X-Empty", ""),
        ("Content-Length", "2"),
    ]
    assert await read_body(resp) == b"ok"


@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["garbage", "bare-lf", "two-lengths", "length-and-chunked", "bad-chunk", "obs-fold"],
)
async def test_malformed_response_is_bad_response_and_closes(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    answer: bytes,
) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.request()
        await conn.send(answer)
        await conn.until_closed()

    server = await raw_server(handler)
    with pytest.raises(UpstreamError) as info:
        resp = await client.send(request(settings(server.url)))
        await read_body(resp)  # a bad chunk is found while reading the body
    assert info.value.reason == "bad_response"
    await wait_until(lambda: server.conns[0].eof.is_set())


async def test_response_head_size_is_bounded(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    many = [f"X-H{i}: v" for i in range(200)]
    server = await raw_server(keep_alive(lambda r, c: response(b"", headers=many)))
    with pytest.raises(UpstreamError) as info:
        await client.send(request(settings(server.url)))
    assert info.value.reason == "bad_response"
    assert "too many headers" in str(info.value)


# --- 5. response body streaming ------------------------------------------------------------------


async def test_small_body_arrives_complete_with_the_head(
    aiohttp_server: AiohttpServer, client: LeanUpstreamClient
) -> None:
    async def small(request: web.Request) -> web.Response:
        return web.Response(text="small body")

    app = web.Application()
    app.router.add_get("/", small)
    server = await aiohttp_server(app)
    resp = await client.send(request(settings(f"http://127.0.0.1:{server.port}")))
    assert resp.body_complete == b"small body"
    assert await read_body(resp) == b"small body"  # iter_body still works


async def test_body_chunks_are_delivered_as_they_arrive(
    aiohttp_server: AiohttpServer, client: LeanUpstreamClient
) -> None:
    gate = asyncio.Event()

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: one\n\n")
        await gate.wait()
        await resp.write(b"data: two\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", events)
    server = await aiohttp_server(app)
    async with asyncio.timeout(3):
        resp = await client.send(request(settings(f"http://127.0.0.1:{server.port}")))
        assert resp.body_complete is None
        chunks = resp.iter_body()
        assert await chunks.__anext__() == b"data: one\n\n"
        gate.set()  # the upstream sends more only once the first event came through
        assert await chunks.__anext__() == b"data: two\n\n"
        with pytest.raises(StopAsyncIteration):
            await chunks.__anext__()
        resp.release()


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_slow_reader_pauses_the_upstream_and_is_not_silence(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    framing: str,
) -> None:
    size = 16 * 1024 * 1024
    block = bytes(range(256)) * 1024

    async def handler(conn: RawConn) -> None:
        await conn.request()
        if framing == "length":
            await conn.send(response(headers=[f"Content-Length: {size}"], length=False))
            for _ in range(size // len(block)):
                await conn.send(block)
        else:
            await conn.send(response(headers=["Transfer-Encoding: chunked"], length=False))
            for _ in range(size // len(block)):
                await conn.send(b"%x\r\n%s\r\n" % (len(block), block))
            await conn.send(b"0\r\n\r\n")
        await conn.until_closed()

    server = await raw_server(handler)
    resp = await client.send(request(settings(server.url, read_timeout_s=0.2)))
    conn = resp._conn
    await wait_until(lambda: conn.read_paused)
    assert conn.buffered <= 2 * 256 * 1024  # the high-water mark plus one read, not 16 MiB
    # Reading paused for longer than read_timeout: that is the reader's doing, not silence.
    await asyncio.sleep(0.4)
    digest, received = hashlib.sha256(), 0
    async for chunk in resp.iter_body():
        digest.update(chunk)
        received += len(chunk)
    resp.release()
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(block * (size // len(block))).hexdigest()


async def test_read_timeout_before_the_head(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.request()
        await conn.until_closed()  # never answers

    server = await raw_server(handler)
    with pytest.raises(UpstreamTimeout) as info:
        await client.send(request(settings(server.url, read_timeout_s=0.15)))
    assert info.value.reason == "read_timeout"
    await wait_until(lambda: server.conns[0].eof.is_set())


async def test_read_timeout_counts_silence_not_total_time(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.request()
        await conn.send(response(headers=["Transfer-Encoding: chunked"], length=False))
        for _ in range(6):  # 6 x 0.05 s: longer than the timeout in total, never silent for it
            await asyncio.sleep(0.05)
            await conn.send(b"1\r\nx\r\n")
        await conn.send(b"0\r\n\r\n")
        await asyncio.sleep(0.5)  # then silent: mid-body silence
        await conn.until_closed()

    server = await raw_server(handler)
    up = settings(server.url, read_timeout_s=0.15)
    assert await fetch(client, request(up)) == (200, b"x" * 6)


async def test_read_timeout_mid_body(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.request()
        await conn.send(response(headers=["Content-Length: 100"], length=False) + b"first")
        await conn.until_closed()

    server = await raw_server(handler)
    resp = await client.send(request(settings(server.url, read_timeout_s=0.15)))
    chunks = resp.iter_body()
    assert await chunks.__anext__() == b"first"
    with pytest.raises(UpstreamTimeout) as info:
        await chunks.__anext__()
    assert info.value.reason == "read_timeout"
    resp.release()


@pytest.mark.parametrize(
    "answer",
    [
        response(headers=["Content-Length: 1000"], length=False) + b"x" * 100,
        response(headers=["Transfer-Encoding: chunked"], length=False) + b"64\r\n" + b"x" * 100,
        response(headers=["Transfer-Encoding: chunked"], length=False) + b"3\r\nabc\r\n",
    ],
    ids=["short-length", "mid-chunk", "no-last-chunk"],
)
async def test_upstream_closing_before_the_body_is_complete_is_aborted(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    answer: bytes,
) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.request()
        await conn.send(answer)  # then closes

    server = await raw_server(handler)
    resp = await client.send(request(settings(server.url)))
    with pytest.raises(UpstreamAborted) as info:
        await read_body(resp)
    assert info.value.reason == "upstream_aborted"


async def test_upstream_closing_before_the_head_is_aborted(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-")  # then closes

    server = await raw_server(handler)
    with pytest.raises(UpstreamAborted) as info:
        await client.send(request(settings(server.url)))
    assert info.value.reason == "upstream_aborted"


# --- 6. a response goes to the request that caused it (desync) -----------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_body_the_upstream_ignores_is_never_read_as_a_request(
    body_ignoring_server: ThreadingHTTPServer, client: LeanUpstreamClient, method: str
) -> None:
    """A keep-alive upstream ignores the request body, which holds a whole second request. Told
    to close after its answer (the default), it never parses that body at all."""
    port = body_ignoring_server.server_address[1]
    up = settings(f"http://127.0.0.1:{port}")
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: upstream.test\r\n\r\n"
    resp = await client.send(
        request(up, "/first", method=method, body=[smuggled], length=len(smuggled))
    )
    assert await read_body(resp) == b"/first"
    resp.release()
    for i in range(3):
        assert await fetch(client, request(up, f"/next{i}")) == (200, f"/next{i}".encode())
    await asyncio.sleep(0.05)
    assert "/smuggled" not in seen_paths(body_ignoring_server)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_body_read_as_a_second_request_never_answers_another_request(
    body_ignoring_server: ThreadingHTTPServer, client: LeanUpstreamClient, method: str
) -> None:
    """The same upstream wrongly trusted with ``keepalive_after_body``: it answers the smuggled
    request too; that answer arrives on the connection after the first one and reaches
    nobody."""
    port = body_ignoring_server.server_address[1]
    up = settings(f"http://127.0.0.1:{port}", keepalive_after_body=True)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: upstream.test\r\n\r\n"
    resp = await client.send(
        request(up, "/first", method=method, body=[smuggled], length=len(smuggled))
    )
    assert await read_body(resp) == b"/first"
    # The upstream has answered the smuggled request: that answer is on (or was on) the wire.
    await wait_until(lambda: "/smuggled" in seen_paths(body_ignoring_server))
    await wait_until(lambda: idle(client) == 0)  # the connection holding it was dropped
    first_port = body_ignoring_server.seen[0][0]
    for i in range(5):
        assert await fetch(client, request(up, f"/next{i}")) == (200, f"/next{i}".encode())
    later_ports = {p for p, path in body_ignoring_server.seen if path.startswith("/next")}
    assert first_port not in later_ports
    assert len(later_ports) == 1  # and the new connection is reused normally


async def test_body_on_get_never_goes_back_to_the_pool(
    body_ignoring_server: ThreadingHTTPServer, client: LeanUpstreamClient
) -> None:
    """A GET body may be read as the next request at any later time (RFC 9110 gives it no
    meaning): such a connection is closed whatever arrived so far."""
    port = body_ignoring_server.server_address[1]
    up = settings(f"http://127.0.0.1:{port}")
    resp = await client.send(request(up, "/first", body=[b"ignored"], length=7))
    assert await read_body(resp) == b"/first"
    assert idle(client) == 0


STRAY = {
    "length+response": (response(b"mine"), response(b"STRAY")),
    "chunked+response": (
        response(headers=["Transfer-Encoding: chunked"], length=False) + chunked(b"mine"),
        response(b"STRAY"),
    ),
    "length+crlf": (response(b"mine"), b"\r\n"),
    "chunked+crlf": (
        response(headers=["Transfer-Encoding: chunked"], length=False) + chunked(b"mine"),
        b"\r\n",
    ),
    "chunked+lf": (
        response(headers=["Transfer-Encoding: chunked"], length=False) + chunked(b"mine"),
        b"\n",
    ),
    "no-body+response": (response(status="204 No Content", length=False), response(b"STRAY")),
}


@pytest.mark.parametrize("case", sorted(STRAY))
async def test_two_responses_in_one_write(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    case: str,
) -> None:
    answer, stray = STRAY[case]

    async def handler(conn: RawConn) -> None:
        if conn.index == 0:
            await conn.request()
            await conn.send(answer + stray)
            await conn.until_closed()
        else:
            await keep_alive(echo)(conn)

    server = await raw_server(handler)
    up = settings(server.url)
    status, body = await fetch(client, request(up, "/first"))
    assert body == (b"" if status == 204 else b"mine")
    await wait_until(lambda: server.conns[0].eof.is_set())  # never pooled
    assert await fetch(client, request(up, "/second")) == (200, b"1:/second")


@pytest.mark.parametrize("released", [True, False], ids=["while-idle", "before-release"])
async def test_late_extra_response_closes_the_connection(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    released: bool,
) -> None:
    async def handler(conn: RawConn) -> None:
        if conn.index == 0:
            await conn.request()
            await conn.send(response(b"mine"))
            await asyncio.sleep(0.05)
            await conn.send(response(b"STRAY"))
            await conn.until_closed()
        else:
            await keep_alive(echo)(conn)

    server = await raw_server(handler)
    up = settings(server.url)
    resp = await client.send(request(up, "/first"))
    if released:
        assert await read_body(resp) == b"mine"
        assert idle(client) == 1
    else:
        conn = resp._conn
        await wait_until(lambda: not conn.reusable)  # the stray bytes came before release
        assert await read_body(resp) == b"mine"  # the response itself is intact
    await wait_until(lambda: server.conns[0].eof.is_set())
    assert idle(client) == 0
    assert await fetch(client, request(up, "/second")) == (200, b"1:/second")


@pytest.mark.parametrize("late", [False, True], ids=["same-write", "later"])
async def test_head_answered_with_a_body(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    late: bool,
) -> None:
    async def handler(conn: RawConn) -> None:
        if conn.index == 0:
            await conn.request()
            head = response(headers=["Content-Length: 25"], length=False)
            body = b"HTTP/1.1 200 OK\r\n\r\nSTRAY"
            if late:
                await conn.send(head)
                await asyncio.sleep(0.05)
                await conn.send(body)
            else:
                await conn.send(head + body)
            await conn.until_closed()
        else:
            await keep_alive(echo)(conn)

    server = await raw_server(handler)
    up = settings(server.url)
    resp = await client.send(request(up, "/first", method="HEAD"))
    assert resp.status == 200
    assert ("Content-Length", "25") in resp.headers
    assert await read_body(resp) == b""
    await wait_until(lambda: server.conns[0].eof.is_set())
    assert await fetch(client, request(up, "/second")) == (200, b"1:/second")


async def test_a_late_body_to_head_never_answers_the_next_request(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    # An upstream whose HEAD handler writes a body (do_HEAD = do_GET), a little late: the next
    # request, sent at once, must not take that body for its own response.
    async def handler(conn: RawConn) -> None:
        while (received := await conn.request()) is not None:
            if received.method == "HEAD":
                await conn.send(response(headers=["Content-Length: 45"], length=False))
                await asyncio.sleep(0.02)
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
            else:
                await conn.send(echo(received, conn))

    server = await raw_server(handler)
    up = settings(server.url)
    for _ in range(5):
        resp = await client.send(request(up, "/probe", method="HEAD"))
        assert await read_body(resp) == b""
        resp.release()
        status, body = await fetch(client, request(up, "/victim"))
        assert status == 200 and body.endswith(b":/victim"), body


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_a_request_with_a_body_asks_the_upstream_to_close(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    method: str,
) -> None:
    # SECURITY: an upstream that answers without reading the body would read it as the next
    # request on the connection (request smuggling): by default it is told to close instead,
    # and the connection is not reused.
    got: list[Received] = []
    server = await raw_server(_capturing(got))
    up = settings(server.url)
    resp = await client.send(request(up, "/x", method=method, body=[b"abc"], length=3))
    await read_body(resp)
    resp.release()
    assert b"\r\nConnection: close\r\n" in got[-1].head
    assert idle(client) == 0
    # With keepalive_after_body the connection stays (for upstreams that read every body).
    trusting = settings(server.url, name="trusting", keepalive_after_body=True)
    resp = await client.send(request(trusting, "/x", method="POST", body=[b"abc"], length=3))
    await read_body(resp)
    resp.release()
    assert b"Connection" not in got[-1].head
    assert idle(client, "trusting") == 1


async def test_connection_close_from_either_side_is_never_reused(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    def respond(received: Received, conn: RawConn) -> bytes:
        if received.target == "/server-closes":
            return response(b"bye", headers=["Connection: close"])
        return echo(received, conn)

    server = await raw_server(keep_alive(respond))
    up = settings(server.url)
    assert await fetch(client, request(up, "/server-closes")) == (200, b"bye")
    assert idle(client) == 0
    closing = [("Host", "x"), ("Connection", "close")]
    assert await fetch(client, request(up, "/client-closes", headers=closing)) == (
        200,
        b"1:/client-closes",
    )
    assert idle(client) == 0
    assert await fetch(client, request(up, "/kept")) == (200, b"2:/kept")
    assert idle(client) == 1


# --- 7. retry ------------------------------------------------------------------------------------


async def _closes_on_reuse(conn: RawConn) -> None:
    """Answers the first request on a connection; closes without answer when it is reused (as an
    upstream whose keep-alive timeout expired just as the client wrote)."""
    received = await conn.request()
    if received is not None:
        await conn.send(echo(received, conn))
        await conn.request()


async def test_reused_connection_closed_under_us_is_retried_once_for_idempotent_requests(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    server = await raw_server(_closes_on_reuse)
    up = settings(server.url)
    assert await fetch(client, request(up, "/a")) == (200, b"0:/a")
    assert await fetch(client, request(up, "/b")) == (200, b"1:/b")  # retried on a new one
    assert [r.target for r in server.conns[0].requests] == ["/a", "/b"]
    assert await fetch(client, request(up, "/c", method="DELETE")) == (200, b"2:/c")


@pytest.mark.parametrize(
    ("method", "body"), [("POST", None), ("PATCH", None), ("PUT", [b"x"])], ids=str
)
async def test_no_retry_when_sending_again_could_do_harm(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    method: str,
    body: list[bytes] | None,
) -> None:
    server = await raw_server(_closes_on_reuse)
    up = settings(server.url)
    assert await fetch(client, request(up, "/a")) == (200, b"0:/a")
    with pytest.raises(UpstreamAborted):
        await client.send(request(up, "/b", method=method, body=body, length=1 if body else None))
    assert len(server.conns) == 1


async def test_upstream_closing_after_every_response_still_serves(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def one_per_connection(conn: RawConn) -> None:
        received = await conn.request()
        assert received is not None
        await conn.send(echo(received, conn))  # and close, without Connection: close

    server = await raw_server(one_per_connection)
    up = settings(server.url)
    for i in range(10):
        assert await fetch(client, request(up, f"/{i}")) == (200, f"{i}:/{i}".encode())


# --- 8. release and close ------------------------------------------------------------------------


async def test_release_is_idempotent_and_always_returns_the_permit(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    server = await raw_server(keep_alive(echo))
    up = settings(server.url, max_connections=1, connect_timeout_s=0.2)
    resp = await client.send(request(up, "/a"))
    assert await read_body(resp) == b"0:/a"
    resp.release()
    resp.release()
    assert client._pools["app"].permits._value == 1  # not 2 or 3
    assert await fetch(client, request(up, "/b")) == (200, b"0:/b")


async def test_unread_body_closes_the_connection(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]], client: LeanUpstreamClient
) -> None:
    async def handler(conn: RawConn) -> None:
        while (received := await conn.request()) is not None:
            if received.target == "/big":
                await conn.send(response(headers=["Content-Length: 10000000"], length=False))
                await conn.send(b"x" * 1000)
            else:
                await conn.send(echo(received, conn))

    server = await raw_server(handler)
    up = settings(server.url)
    resp = await client.send(request(up, "/big"))
    resp.release()  # without reading
    await wait_until(lambda: server.conns[0].eof.is_set())
    assert await fetch(client, request(up, "/next")) == (200, b"1:/next")


async def test_close_closes_idle_and_in_use_connections(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
) -> None:
    async def handler(conn: RawConn) -> None:
        while (received := await conn.request()) is not None:
            if received.target == "/stream":
                await conn.send(response(headers=["Content-Length: 100"], length=False) + b"x")
            else:
                await conn.send(echo(received, conn))
        conn.eof.set()

    server = await raw_server(handler)
    up = settings(server.url)
    lean = LeanUpstreamClient({"app": up})
    streaming = await lean.send(request(up, "/stream"))
    assert await fetch(lean, request(up, "/idle")) == (200, b"1:/idle")
    assert idle(lean) == 1
    assert len(server.conns) == 2
    await lean.close()
    await lean.close()
    await wait_until(lambda: all(c.eof.is_set() for c in server.conns))
    with pytest.raises(UpstreamAborted):
        await read_body(streaming)
    assert lean._connections == set()


# --- 9. errors never carry the request -----------------------------------------------------------


async def test_errors_name_the_upstream_but_never_the_request(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
    client: LeanUpstreamClient,
    closed_port: int,
) -> None:
    async def handler(conn: RawConn) -> None:
        received = await conn.request()
        assert received is not None
        if "garbage" in received.target:
            await conn.send(f"HTTP/1.1 200 {SECRET}\nX: y\r\n\r\n".encode())
        elif "short" in received.target:
            await conn.send(response(headers=["Content-Length: 10"], length=False) + b"x")
            return
        await conn.until_closed()

    server = await raw_server(handler)
    up = settings(server.url, read_timeout_s=0.1)
    headers = [("Host", "x"), ("Authorization", f"Bearer {SECRET}")]
    target = f"/p?token={SECRET}"
    errors: list[UpstreamError] = []

    async def failing(req: UpstreamRequest, *, read: bool = False) -> None:
        try:
            resp = await client.send(req)
            if read:
                await read_body(resp)
        except UpstreamError as exc:
            errors.append(exc)
        else:
            raise AssertionError("no error")

    async def broken_body() -> AsyncIterator[bytes]:
        yield SECRET.encode()
        raise BodyBroke(SECRET)

    await failing(request(settings(f"http://127.0.0.1:{closed_port}"), target, headers=headers))
    await failing(request(up, target + "&garbage", headers=headers))
    await failing(request(up, target + "&silent", headers=headers))
    await failing(request(up, target + "&short", headers=headers), read=True)
    await failing(request(up, target, headers=headers, method="POST", body=broken_body()))
    await failing(request(up, target, headers=[*headers, ("X-Bad", f"{SECRET}\r\n")]))
    assert [e.reason for e in errors] == [
        "connect_failed",
        "bad_response",
        "read_timeout",
        "upstream_aborted",
        "upstream_aborted",
        "bad_request_header",
    ]
    for error in errors:
        assert SECRET not in str(error)
        assert SECRET not in repr(error.args)
        assert error.__context__ is None or SECRET not in str(error.__context__)
        assert "app (http://127.0.0.1:" in str(error)


# --- WebSockets (through aiohttp) ----------------------------------------------------------------


async def test_websockets_go_through_aiohttp_and_share_the_permits(
    aiohttp_server: AiohttpServer,
) -> None:
    async def echo_ws(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo_ws)
    server = await aiohttp_server(app)
    up = settings(f"http://127.0.0.1:{server.port}", max_connections=1, connect_timeout_s=0.2)
    lean = LeanUpstreamClient({"app": up})
    assert isinstance(lean, WebSocketUpstreamClient)
    try:
        headers = [("Host", f"127.0.0.1:{server.port}")]
        async with lean.websocket(request(up, "/ws", headers=headers), ["chat"]) as ws:
            assert ws.protocol == "chat"
            await ws.send_str("hello")
            assert (await ws.receive()).data == "hello"
            with pytest.raises(UpstreamTimeout) as info:
                await lean.send(request(up, "/other", headers=headers))
            assert info.value.reason == "pool_timeout"
        # The permit came back when the WebSocket closed.
        assert (await fetch(lean, request(up, "/ws", headers=headers)))[0] == 400
    finally:
        await lean.close()
