"""Fixtures for the proxy functional tests (see :mod:`tests.proxy.harness`)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.config.settings import (
    AccessSettings,
    IPNetwork,
    MatchSettings,
    RouteSettings,
    UpstreamSettings,
)
from tests.proxy.harness import (
    UNTRUSTED,
    MakeGateway,
    ProductionLikeServer,
    Upstream,
    gateway_app,
    upstream_app,
)


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Upstream:
    rec = Upstream()
    server = await aiohttp_server(upstream_app(rec))
    rec.url = f"http://127.0.0.1:{server.port}"
    return rec


@pytest.fixture
def make_gateway(aiohttp_client: Any, upstream: Upstream) -> MakeGateway:
    """``await make_gateway(**route_options, upstream_url=..., trusted=..., add_headers=...,
    connect_timeout_s=..., read_timeout_s=..., preserve_host=...)`` -> a test client."""

    async def make(
        *,
        upstream_url: str | None = None,
        trusted: tuple[IPNetwork, ...] = UNTRUSTED,
        add_headers: Mapping[str, str] | None = None,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 5.0,
        preserve_host: bool = False,
        max_connections: int = 10,
        **route_options: Any,
    ) -> TestClient[web.Request, web.Application]:
        up = UpstreamSettings(
            name="app",
            url=upstream_url or upstream.url,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            preserve_host=preserve_host,
            max_connections=max_connections,
        )
        route = RouteSettings(
            name="test",
            match=MatchSettings(path_prefix="/"),
            upstream="app",
            access=AccessSettings(kind="public"),
            **route_options,
        )
        app = gateway_app(route, up, trusted=trusted, add_headers=add_headers)
        client: TestClient[web.Request, web.Application] = await aiohttp_client(
            ProductionLikeServer(app)
        )
        return client

    return make


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def full_backlog_port() -> Iterator[int]:
    """A loopback port that never completes a TCP handshake: listen(0), backlog filled, never
    accepted. Linux drops further SYNs, so connecting times out (all on loopback)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port: int = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()
