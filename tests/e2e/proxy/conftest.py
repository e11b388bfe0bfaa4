"""Fixtures for the proxy functional tests (see :mod:`tests.e2e.proxy.harness`).

Every test that builds a gateway runs once per upstream client (ids ``aiohttp`` and ``lean``).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from gateway.config.settings import (
    AccessSettings,
    IPNetwork,
    MatchSettings,
    RouteSettings,
    UpstreamSettings,
)
from tests.e2e.proxy.harness import (
    CLIENTS,
    UNTRUSTED,
    MakeGateway,
    ProxyUpstream,
    RecordingFactory,
    start_gateway,
)
from tests.support import GatewayClient


@pytest.fixture
async def upstream() -> AsyncIterator[ProxyUpstream]:
    async with ProxyUpstream() as up:
        yield up


@pytest.fixture(params=sorted(CLIENTS))
def upstream_client(request: pytest.FixtureRequest) -> RecordingFactory:
    """The upstream client under test: what the real application builds for its upstreams (and
    the ``add_headers`` pipeline uses)."""
    return RecordingFactory(CLIENTS[request.param])


@pytest.fixture
async def make_gateway(
    upstream: ProxyUpstream, upstream_client: RecordingFactory
) -> AsyncIterator[MakeGateway]:
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
    ) -> GatewayClient:
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
        built = len(upstream_client.built)
        client = await start_gateway(
            route, up, trusted=trusted, add_headers=add_headers, client_factory=upstream_client
        )
        started.append(client)
        assert len(upstream_client.built) == built + 1, "the gateway runs on another client"
        return client

    started: list[GatewayClient] = []
    yield make
    for client in reversed(started):
        await client.close()


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
