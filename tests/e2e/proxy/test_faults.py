"""ProxyUpstream faults: unreachable, slow, cut short. Each is followed by a request that works."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.config.settings import UpstreamSettings
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.upstream import AiohttpUpstreamClient, UpstreamRequest
from tests.e2e.proxy.harness import MakeGateway, ProxyUpstream, expect_refusal
from tests.support import GatewayClient, wait_for
from tests.upstreams import echoed


async def assert_still_serves(gw: GatewayClient) -> None:
    resp = await gw.get("/after")
    assert resp.status == 200
    assert echoed(await resp.read()).raw_path == "/after"


async def test_connection_refused_is_502(
    caplog: pytest.LogCaptureFixture, make_gateway: MakeGateway, closed_port: int
) -> None:
    gw = await make_gateway(upstream_url=f"http://127.0.0.1:{closed_port}")
    resp = await gw.get("/x")
    await expect_refusal(resp, caplog, status=502, reason="connect_failed")


async def test_connect_timeout_is_504(
    caplog: pytest.LogCaptureFixture, make_gateway: MakeGateway, full_backlog_port: int
) -> None:
    gw = await make_gateway(
        upstream_url=f"http://127.0.0.1:{full_backlog_port}", connect_timeout=0.3
    )
    resp = await gw.get("/x")
    await expect_refusal(resp, caplog, status=504, reason="connect_timeout")


async def test_connect_timeout_error_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mapping itself, independent of how the kernel treats a full backlog."""

    async def timing_out(*args: object, **kwargs: object) -> None:
        raise aiohttp.ConnectionTimeoutError("Connection timeout to host")

    up = UpstreamSettings(name="app", url="http://127.0.0.1:9")
    client = AiohttpUpstreamClient({"app": up})
    await client.start()
    assert client._session is not None
    monkeypatch.setattr(client._session, "request", timing_out)
    try:
        with pytest.raises(UpstreamTimeout) as info:
            await client.send(
                UpstreamRequest(upstream=up, method="GET", target="/", headers=[], body=None)
            )
        assert info.value.reason == "connect_timeout"
        assert info.value.status == 504
    finally:
        await client.close()


async def test_dns_failure_is_connect_failed() -> None:
    # .invalid never resolves (RFC 6761); resolution fails locally without network traffic.
    up = UpstreamSettings(name="app", url="http://upstream.invalid:80", connect_timeout_s=2)
    client = AiohttpUpstreamClient({"app": up})
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await client.send(
                UpstreamRequest(upstream=up, method="GET", target="/", headers=[], body=None)
            )
        assert info.value.reason == "connect_failed"
    finally:
        await client.close()


async def test_read_timeout_before_head_is_504(
    caplog: pytest.LogCaptureFixture, make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(read_timeout=0.3)
    resp = await gw.get("/slow?delay=1", headers={"Accept": "application/json"})
    await expect_refusal(resp, caplog, status=504, reason="read_timeout")
    await assert_still_serves(gw)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_upstream_cut_short_aborts_client(make_gateway: MakeGateway, chunked: bool) -> None:
    gw = await make_gateway()
    resp = await gw.get("/truncated" + ("?chunked" if chunked else ""))
    assert resp.status == 200  # the head was already on its way
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    await assert_still_serves(gw)


async def test_read_timeout_mid_body_aborts_client(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(read_timeout=0.3)
    resp = await gw.get("/stall?delay=1")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    await assert_still_serves(gw)


async def test_chunked_overflow_after_response_started_aborts_client(
    make_gateway: MakeGateway,
) -> None:
    """An upstream that answers before reading the body: the 413 can no longer be sent."""
    gw = await make_gateway(max_body=1024)
    head_seen = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 512
        await head_seen.wait()
        yield b"x" * 1024

    request = asyncio.create_task(gw.post("/early", data=body()))
    # Control case first: a body within the limit goes through while the response streams.
    resp = await gw.post("/early", data=b"y" * 1000)
    assert await resp.read() == b"started;1000"

    head_seen.set()
    resp = await request
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    await assert_still_serves(gw)


async def test_max_connections_bounds_concurrency(
    caplog: pytest.LogCaptureFixture, make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(max_connections=1, connect_timeout=0.3)
    first = asyncio.create_task(gw.get("/sse"))
    resp = await first
    assert await resp.content.readuntil(b"\n\n") == b"data: one\n\n"
    # The only permit is held by the open SSE stream: the next request waits, then gives up.
    blocked = await gw.get("/x")
    await expect_refusal(blocked, caplog, status=504, reason="pool_timeout")
    upstream.sse_gate.set()
    await resp.read()
    await assert_still_serves(gw)


async def test_client_gone_mid_upload_frees_everything(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(max_connections=1, connect_timeout=0.5)
    assert gw.port is not None
    _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100000\r\n\r\n")
    writer.write(b"x" * 1000)
    await writer.drain()
    await wait_for(lambda: upstream.hits == 1, what="the upload reaching the upstream")
    writer.close()
    await writer.wait_closed()
    # The only upstream permit came back: the next request is served.
    async with asyncio.timeout(5):
        await assert_still_serves(gw)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [(b"", "upstream_aborted"), (b"NOT HTTP AT ALL\r\n\r\n", "bad_response")],
    ids=["closes-without-answer", "garbage"],
)
async def test_broken_upstream_is_502(
    caplog: pytest.LogCaptureFixture, make_gateway: MakeGateway, reply: bytes, reason: str
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await make_gateway(upstream_url=f"http://127.0.0.1:{port}")
        resp = await gw.get("/x")
        await expect_refusal(resp, caplog, status=502, reason=reason)
    finally:
        server.close()
        await server.wait_closed()
