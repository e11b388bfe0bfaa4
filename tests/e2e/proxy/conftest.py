"""Fixtures for the proxy functional tests (see :mod:`tests.e2e.proxy.harness`).

Every test that builds a gateway runs once per upstream client (ids ``aiohttp`` and ``lean``).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from tests.e2e.proxy.harness import (
    CLIENTS,
    MakeGateway,
    ProxyUpstream,
    RecordingFactory,
    proxy_config,
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
    """``await make_gateway(upstream_url=..., add_headers=..., **options)`` -> a test client of
    a gateway on :func:`~tests.e2e.proxy.harness.proxy_config` (``options``: ``trusted``,
    ``connect_timeout``, ``read_timeout``, ``preserve_host``, ``max_connections`` and the
    route's ``strip_prefix``, ``websocket``, ``max_body``), in front of ``upstream`` unless
    ``upstream_url`` says otherwise."""

    async def make(
        *,
        upstream_url: str | None = None,
        add_headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> GatewayClient:
        document = proxy_config(upstream_url or upstream.url, **options)
        built = len(upstream_client.built)
        client = await start_gateway(
            document, add_headers=add_headers, client_factory=upstream_client
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
