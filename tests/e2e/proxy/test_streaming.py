"""Bodies both ways: streaming, SSE, 100-continue, max_body, large transfers."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from tests.e2e.proxy.harness import (
    MakeGateway,
    ProxyUpstream,
    achunks,
    expect_refusal,
    pattern,
    pattern_sha256,
    raw_exchange,
)

MiB = 1024 * 1024


async def test_sse_events_arrive_as_produced(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    async with asyncio.timeout(5):
        resp = await gw.get("/sse")
        assert resp.headers["Content-Type"] == "text/event-stream"
        # The upstream sends event two only once the test has seen event one: a proxy that
        # buffered would deadlock here and hit the timeout.
        assert await resp.content.readuntil(b"\n\n") == b"data: one\n\n"
        upstream.sse_gate.set()
        assert await resp.content.readuntil(b"\n\n") == b"data: two\n\n"
        assert await resp.read() == b""


async def test_a_response_head_is_relayed_before_its_body_exists(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    # Small complete responses leave in one write, head and body together; a head whose body
    # is still on its way must not wait for it.
    gw = await make_gateway()
    async with asyncio.timeout(5):
        resp = await gw.get("/head-first")
        assert resp.status == 200
        assert resp.headers["X-Head"] == "first"
        assert not upstream.body_gate.is_set()
        upstream.body_gate.set()
        assert await resp.read() == b"later"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_download_framing_is_kept(make_gateway: MakeGateway, chunked: bool) -> None:
    gw = await make_gateway()
    resp = await gw.get("/stream/100000" + ("?chunked" if chunked else ""))
    assert resp.status == 200
    if chunked:
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in resp.headers
    else:
        assert resp.headers["Content-Length"] == "100000"
        assert "Transfer-Encoding" not in resp.headers
    assert len(await resp.read()) == 100000


async def test_response_hop_by_hop_headers_are_removed(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    resp = await gw.get("/hop")
    assert resp.status == 200
    for name in ("X-Internal", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in resp.headers, name
    assert resp.headers["X-Kept"] == "1"
    assert resp.headers["Set-Cookie"] == "a=1"


async def test_large_upload_streams_with_content_length(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    size = 64 * MiB
    gw = await make_gateway()
    resp = await gw.post(
        "/upload",
        data=achunks(pattern(size)),
        headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
    )
    assert resp.status == 200
    assert await resp.json() == {"size": size, "sha256": pattern_sha256(size)}
    assert upstream.last.value("Content-Length") == str(size)


async def test_large_chunked_upload(make_gateway: MakeGateway, upstream: ProxyUpstream) -> None:
    size = 64 * MiB + 123
    gw = await make_gateway()
    resp = await gw.put("/upload", data=achunks(pattern(size)))
    assert resp.status == 200
    assert await resp.json() == {"size": size, "sha256": pattern_sha256(size)}
    assert upstream.last.value("Transfer-Encoding") == "chunked"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_large_download(make_gateway: MakeGateway, chunked: bool) -> None:
    size = 64 * MiB + 7
    gw = await make_gateway()
    resp = await gw.get(f"/stream/{size}" + ("?chunked" if chunked else ""))
    assert resp.status == 200
    digest, received = hashlib.sha256(), 0
    async for chunk in resp.content.iter_any():
        digest.update(chunk)
        received += len(chunk)
    assert received == size
    assert digest.hexdigest() == pattern_sha256(size)


async def test_max_body_by_content_length_is_refused_before_the_upstream(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(max_body=10)
    resp = await gw.post("/upload", data=b"x" * 11)
    assert resp.status == 413
    assert upstream.received == []
    resp = await gw.post("/upload", data=b"x" * 10)
    assert resp.status == 200


async def test_max_body_chunked_overflow_is_413(
    caplog: pytest.LogCaptureFixture, make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(max_body=100 * 1024)
    resp = await gw.post("/upload", data=achunks(pattern(1 * MiB)))
    await expect_refusal(resp, caplog, status=413, reason="body_too_large")
    # The connection pool and the gateway are fine afterwards.
    resp = await gw.post("/upload", data=achunks(pattern(50 * 1024)))
    assert resp.status == 200
    assert (await resp.json())["size"] == 50 * 1024


async def test_expect_100_continue(make_gateway: MakeGateway, upstream: ProxyUpstream) -> None:
    gw = await make_gateway(max_body=100)
    assert gw.port is not None
    first, rest = await raw_exchange(
        gw.port,
        b"POST /upload HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n"
        b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        body=b"hello",
    )
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(
        b'"size": 5, "sha256": "' + hashlib.sha256(b"hello").hexdigest().encode() + b'"}'
    )
    assert upstream.last.value("Expect") is None


async def test_expect_100_continue_too_large_gets_413_without_100(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(max_body=100)
    assert gw.port is not None
    first, _ = await raw_exchange(
        gw.port,
        b"POST /upload HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n"
        b"Content-Length: 101\r\nExpect: 100-continue\r\n\r\n",
        read_rest=False,
    )
    assert first.startswith(b"HTTP/1.1 413 ")
    assert upstream.received == []


async def test_expect_100_continue_not_sent_when_upstream_is_down(
    make_gateway: MakeGateway, closed_port: int
) -> None:
    gw = await make_gateway(upstream_url=f"http://127.0.0.1:{closed_port}")
    assert gw.port is not None
    first, _ = await raw_exchange(
        gw.port,
        b"POST /upload HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n"
        b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        read_rest=False,
    )
    assert first.startswith(b"HTTP/1.1 502 ")


async def test_unknown_expectation_is_417(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    assert gw.port is not None
    first, _ = await raw_exchange(
        gw.port,
        b"POST /upload HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n"
        b"Content-Length: 5\r\nExpect: teapot\r\n\r\n",
        read_rest=False,
    )
    assert first.startswith(b"HTTP/1.1 417 ")
    assert upstream.received == []
