"""WebSocket relay: subprotocols, messages both ways, close codes both ways, refusal."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.e2e.proxy.harness import MakeGateway, ProxyUpstream


async def test_messages_relay_both_ways(make_gateway: MakeGateway, upstream: ProxyUpstream) -> None:
    gw = await make_gateway(websocket=True)
    async with gw.ws_connect("/ws", protocols=("superchat", "chat")) as ws:
        assert ws.protocol == "chat"  # what the upstream picked, offered back to the client
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert await ws.receive_bytes(timeout=5) == b"\x00\x01binary"
    async with asyncio.timeout(5):
        await upstream.ws_closed.wait()
    assert upstream.ws_close_codes == [1000]


async def test_websocket_handshake_header_hygiene(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(websocket=True, add_headers={"Authorization": "Bearer minted"})
    headers = {
        "Cookie": "gw_session=secret; theme=dark",
        "Authorization": "Bearer forged",
        "X-Auth-User": "mallory",
        "Origin": "https://gw.example",
    }
    async with gw.ws_connect("/ws", headers=headers) as ws:
        await ws.send_str("ping")
        assert await ws.receive_str(timeout=5) == "ping"
    got = upstream.last
    assert got.values("Cookie") == ["theme=dark"]
    assert got.values("Authorization") == ["Bearer minted"]
    assert "x-auth-user" not in got.names
    assert got.value("Origin") == "https://gw.example"
    assert got.value("Upgrade") == "websocket"
    assert got.value("X-Forwarded-For") == "127.0.0.1"


async def test_upstream_close_code_reaches_client(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(websocket=True)
    async with gw.ws_connect("/ws") as ws:
        await ws.send_str("close:4001")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 4001
        assert msg.extra == "bye"
    assert ws.close_code == 4001


async def test_client_close_code_reaches_upstream(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(websocket=True)
    ws = await gw.ws_connect("/ws")
    await ws.send_str("x")
    assert await ws.receive_str(timeout=5) == "x"
    await ws.close(code=4002, message=b"done")
    async with asyncio.timeout(5):
        await upstream.ws_closed.wait()
    assert upstream.ws_close_codes == [4002]


async def test_client_lost_is_going_away_upstream(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(websocket=True)
    ws = await gw.ws_connect("/ws")
    await ws.send_str("x")
    assert await ws.receive_str(timeout=5) == "x"
    sock = ws.get_extra_info("socket")
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)  # the connection ends without a close frame
    async with asyncio.timeout(5):
        await upstream.ws_closed.wait()
    assert upstream.ws_close_codes == [1001]
    await ws.close()


async def test_upstream_lost_is_bad_gateway_for_client(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(websocket=True)
    async with gw.ws_connect("/ws") as ws:
        await ws.send_str("drop")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 1014


async def test_websocket_not_upgraded_when_route_disallows(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(websocket=False)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.ws_connect("/ws")
    assert info.value.status == 400  # the upstream saw a plain GET and said so
    assert "upgrade" not in upstream.last.names if upstream.received else True


async def test_websocket_refused_by_upstream_passes_status(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(websocket=True)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.ws_connect("/ws-deny")
    assert info.value.status == 403
    assert info.value.headers is not None and info.value.headers["X-Why"] == "nope"
    # SECURITY: filtered like any response: the gateway's own cookies cannot be set this way.
    assert info.value.headers.getall("Set-Cookie") == ["theirs=1; Path=/"]


async def test_websocket_upstream_down_is_502(make_gateway: MakeGateway, closed_port: int) -> None:
    gw = await make_gateway(websocket=True, upstream_url=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.ws_connect("/ws")
    assert info.value.status == 502


async def test_plain_request_on_websocket_route_is_proxied(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(websocket=True)
    resp = await gw.get("/plain")
    assert resp.status == 200
    assert upstream.last.raw_path == "/plain"
