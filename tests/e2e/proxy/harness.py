"""The functional-test harness: the recording upstream with endpoints of its own (streams, SSE,
WebSockets, faults) and the gateway in front of it.

The gateway is the real application on a configuration the loader read (:func:`proxy_config`),
except where a test hands the proxy identity headers itself (``add_headers``): then a minimal
pipeline around :func:`gateway.proxy.forward` stands in for the identity stage.

Every upstream client in :data:`CLIENTS` runs the whole suite (the ``upstream_client`` fixture in
conftest.py), so each one is proven against the same behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from aiohttp import ClientResponse, WSMsgType, web

from gateway.config.settings import UpstreamSettings
from gateway.context import RequestContext, Trace
from gateway.errors import GatewayError
from gateway.forwarded import resolve_client
from gateway.http import check_expectation
from gateway.paths import normalise_path, strip_route_prefix
from gateway.proxy import forward
from gateway.upstream import (
    AiohttpUpstreamClient,
    ClientFactory,
    LeanUpstreamClient,
    UpstreamClient,
)
from gateway.websockets import OpenWebSockets
from tests.configs import config, load, route
from tests.support import GatewayClient
from tests.upstreams import Received, Upstream

PUBLIC_URL = "https://gw.example"
SESSION_COOKIE = "gw_session"
TRUSTED = ["127.0.0.1/32"]
"""``server.trusted_proxies`` covering the test client."""
UNTRUSTED = ["10.0.0.0/8"]
"""``server.trusted_proxies`` not covering the test client."""


CLIENTS: dict[str, ClientFactory] = {
    "aiohttp": AiohttpUpstreamClient,
    "lean": LeanUpstreamClient,
}
"""The upstream clients the proxy suite runs against, by test id."""


class RecordingFactory:
    """A :data:`ClientFactory` that remembers what it built, so a test can tell that the gateway
    really runs on the client under test."""

    def __init__(self, build: ClientFactory) -> None:
        self.build = build
        self.built: list[UpstreamClient] = []

    def __call__(self, upstreams: Mapping[str, UpstreamSettings]) -> UpstreamClient:
        client = self.build(upstreams)
        self.built.append(client)
        return client


MakeGateway = Callable[..., Awaitable[GatewayClient]]
"""The ``make_gateway`` fixture: ``await make_gateway(**options)`` -> a fresh gateway's client."""

CHUNK = bytes(range(256)) * 256  # 64 KiB, deterministic


def pattern(size: int) -> Iterator[bytes]:
    """``size`` bytes of the test pattern, in 64 KiB chunks."""
    full, rest = divmod(size, len(CHUNK))
    for _ in range(full):
        yield CHUNK
    if rest:
        yield CHUNK[:rest]


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in pattern(size):
        digest.update(chunk)
    return digest.hexdigest()


Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProxyUpstream(Upstream):
    """The recording upstream (:class:`tests.upstreams.Upstream`) with the endpoints these tests
    need; any other path gets the default answer (what the upstream received, as JSON)."""

    def __init__(self) -> None:
        super().__init__(self._endpoint)
        self.sse_gate = asyncio.Event()
        """``/sse`` sends its second event once this is set."""
        self.body_gate = asyncio.Event()
        """``/head-first`` sends its body once this is set."""
        self.ws_close_codes: list[int] = []
        """The close codes ``/ws`` received from the gateway."""
        self.ws_closed = asyncio.Event()
        get = ("GET", "HEAD")
        self._endpoints: dict[str, tuple[tuple[str, ...], Endpoint]] = {
            "/upload": (("POST", "PUT"), _upload),
            "/sse": (get, self._sse),
            "/head-first": (get, self._head_first),
            "/truncated": (get, _truncated),
            "/slow": (get, _slow),
            "/stall": (get, _stall),
            "/early": (("POST",), _early),
            "/redirect": (get, _redirect),
            "/hop": (get, _hop),
            "/set-cookies": (get, _set_cookies),
            "/cookie": (get, _cookie),
            "/head": (("*",), _head_or_get),
            "/ws": (get, self._websocket),
            "/ws-deny": (get, _websocket_deny),
        }

    async def _endpoint(
        self, request: web.Request, received: Received
    ) -> web.StreamResponse | None:
        if request.path.startswith("/stream/") and request.method in ("GET", "HEAD"):
            return await _stream(request)
        found = self._endpoints.get(request.path)
        if found is None or not {request.method, "*"} & set(found[0]):
            return None  # the default answer, the body recorded
        return await found[1](request)

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        await self.sse_gate.wait()
        await response.write(b"data: two\n\n")
        await response.write_eof()
        return response

    async def _head_first(self, request: web.Request) -> web.StreamResponse:
        """The head at once (Content-Length 5), the body only once ``body_gate`` is set."""
        response = web.StreamResponse(headers={"Content-Length": "5", "X-Head": "first"})
        await response.prepare(request)
        await self.body_gate.wait()
        await response.write(b"later")
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        """Echoes messages; ``drop`` cuts the connection without a close frame, ``close:CODE``
        closes with CODE; records the close code the gateway sends."""
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                if msg.data == "drop":
                    assert request.transport is not None
                    request.transport.close()  # no close frame
                    break
                if msg.data.startswith("close:"):
                    await ws.close(code=int(msg.data[6:]), message=b"bye")
                    break
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            else:
                if msg.type is WSMsgType.CLOSE:
                    self.ws_close_codes.append(msg.data)
                break
        self.ws_closed.set()
        return ws


async def _upload(request: web.Request) -> web.Response:
    """Streams the body, answers its size and SHA-256 (the body is not kept)."""
    digest, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"size": size, "sha256": digest.hexdigest()})


async def _stream(request: web.Request) -> web.StreamResponse:
    """``/stream/SIZE``: SIZE bytes of the pattern, with a Content-Length (``?chunked``: not)."""
    size = int(request.path.rpartition("/")[2])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if "chunked" not in request.query:
        response.content_length = size
    await response.prepare(request)
    for chunk in pattern(size):
        await response.write(chunk)
    await response.write_eof()
    return response


async def _truncated(request: web.Request) -> web.StreamResponse:
    """Promise 1000 bytes (or chunked), send 100, then drop the connection."""
    response = web.StreamResponse()
    if "chunked" not in request.query:
        response.content_length = 1000
    await response.prepare(request)
    await response.write(b"x" * 100)
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.close()
    return response


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("delay", "1")))
    return web.Response(text="late")


async def _stall(request: web.Request) -> web.StreamResponse:
    """Send the head and a first chunk, then go quiet."""
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"first")
    await asyncio.sleep(float(request.query.get("delay", "1")))
    await response.write(b"second")
    return response


async def _early(request: web.Request) -> web.StreamResponse:
    """Answer the head before reading the body, then report the body size."""
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"started;")
    size = len(await request.read())
    await response.write(str(size).encode())
    return response


async def _redirect(request: web.Request) -> web.Response:
    to = request.query["to"]
    return web.Response(status=302, headers={"Location": to, "Content-Location": to})


async def _hop(request: web.Request) -> web.Response:
    return web.Response(
        text="hop",
        headers={
            "Connection": "X-Internal",
            "X-Internal": "secret",
            "Keep-Alive": "timeout=5",
            "Proxy-Authenticate": "Basic",
            "X-Kept": "1",
            "Set-Cookie": "a=1",
        },
    )


async def _set_cookies(request: web.Request) -> web.Response:
    response = web.Response(text="cookies")
    for cookie in (
        f"{SESSION_COOKIE}=fixated; Path=/",
        "__Host-gw_csrf=known; Path=/; Secure",
        "app_pref=dark; Path=/",
        f"{SESSION_COOKIE}_other=kept; Path=/",
    ):
        response.headers.add("Set-Cookie", cookie)
    return response


async def _cookie(request: web.Request) -> web.Response:
    """A ``Set-Cookie`` for each ``set`` in the query, as given."""
    response = web.Response(text="cookie")
    for value in request.query.getall("set"):
        response.headers.add("Set-Cookie", value)
    return response


async def _head_or_get(request: web.Request) -> web.Response:
    return web.Response(text="hello head", headers={"X-Method": request.method})


async def _websocket_deny(request: web.Request) -> web.Response:
    response = web.Response(status=403, text="go away", headers={"X-Why": "nope"})
    # A hostile upstream also tries to fixate the gateway's session on its refusal.
    response.headers.add("Set-Cookie", f"{SESSION_COOKIE}=fixated; Path=/")
    response.headers.add("Set-Cookie", f"={SESSION_COOKIE}=nameless; Path=/")
    response.headers.add("Set-Cookie", "theirs=1; Path=/")
    return response


def proxy_config(
    upstream_url: str,
    *,
    trusted: Sequence[str] = UNTRUSTED,
    connect_timeout: float = 2.0,
    read_timeout: float = 5.0,
    preserve_host: bool = False,
    max_connections: int = 10,
    **route_options: Any,
) -> dict[str, Any]:
    """One public catch-all route ``test`` (``route_options`` as the YAML spells them:
    ``strip_prefix``, ``websocket``, ``max_body``) to the upstream ``app`` at ``upstream_url``,
    behind :data:`PUBLIC_URL`, trusting the proxies in ``trusted``."""
    upstream = {
        "url": upstream_url,
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "preserve_host": preserve_host,
        "max_connections": max_connections,
    }
    options = {key: value for key, value in route_options.items() if value is not None}
    return config(
        {"app": upstream},
        [route("test", prefix="/", access="public", **options)],
        public_url=PUBLIC_URL,
        server={"trusted_proxies": list(trusted)},
        session={"cookie_name": SESSION_COOKIE},
    )


async def start_gateway(
    document: Mapping[str, Any],
    *,
    client_factory: ClientFactory,
    add_headers: Mapping[str, str] | None = None,
) -> GatewayClient:
    """The gateway on the configuration ``document`` (:func:`proxy_config`), served as ``gateway
    run`` serves it, on a ``client_factory`` upstream client.

    Without ``add_headers`` this is the real application (:class:`gateway.app.Gateway`).
    ``add_headers`` stands in for the identity stage: the smallest pipeline around forward()
    that sets ``ctx.add_headers``, to test how they are applied, with the route, upstream and
    trusted proxies the loader read from ``document``.
    """
    if add_headers is None:
        return await GatewayClient.start(document, client_factory=client_factory)
    settings = load(document)
    [route_] = settings.routes
    upstream = settings.upstreams[route_.upstream]
    trusted = settings.server.trusted_proxies
    public_url = settings.server.public_url
    strip_cookies = frozenset({settings.session.cookie_name})
    client = client_factory(settings.upstreams)
    sockets = OpenWebSockets()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        path, _, query = request.raw_path.partition("?")
        upstream_path, prefix = strip_route_prefix(
            normalise_path(path), route_.strip_prefix, route_.match.ignore_case
        )
        ctx = RequestContext(
            client=resolve_client(request, trusted),
            trace=Trace(),
            upstream_path=upstream_path,
            prefix=prefix,
            query=query,
            route=route_,
            upstream=upstream,
            add_headers=dict(add_headers),
            strip_cookies=strip_cookies,
            sockets=sockets,
        )
        try:
            check_expectation(request)
            return await forward(request, ctx, client, public_url=public_url)
        except GatewayError as exc:
            return web.Response(status=exc.status, text=exc.reason)

    return await GatewayClient.serve(
        handle, timeouts=settings.server.timeouts, closers=[client.close]
    )


ERROR_CODES = {413: "body_too_large", 502: "bad_gateway", 504: "gateway_timeout"}


async def expect_refusal(
    resp: ClientResponse, caplog: pytest.LogCaptureFixture, *, status: int, reason: str
) -> None:
    """The gateway answered with its own JSON error page and logged ``reason``."""
    assert resp.status == status
    body = await resp.json()
    assert body["error"] == ERROR_CODES[status]
    assert reason in [getattr(record, "reason", None) for record in caplog.records]


async def raw_exchange(
    port: int,
    head: bytes,
    *,
    body: bytes | None = None,
    read_rest: bool = True,
    read_timeout: float = 5.0,
) -> tuple[bytes, bytes]:
    """Send ``head``; read the first response head (e.g. ``100 Continue`` or a final status);
    then, if ``body`` is given, send it; then, with ``read_rest``, read everything up to EOF.

    Returns (first head, rest).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(read_timeout):
            first = await reader.readuntil(b"\r\n\r\n")
            if body is not None:
                writer.write(body)
                await writer.drain()
            rest = await reader.read() if read_rest else b""
        return first, rest
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def achunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """An async body for the test client (sent chunked)."""
    for chunk in chunks:
        yield chunk
