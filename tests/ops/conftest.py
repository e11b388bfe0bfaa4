"""Fixtures for the operations tests (issue 5); helpers live in :mod:`tests.ops.ops_harness`.

- ``upstream``: an :class:`~tests.ops.ops_harness.OpsUpstream`, already serving on loopback.
- ``make_gateway(settings)``: a test client for ``build_app(settings)``, served like
  ``gateway run`` serves it (no aiohttp access log of its own), without a cookie jar.
- ``spawn(config, port)``: a real ``gateway run`` process; killed (with its workers) at teardown
  whatever happened.
- ``all_logs``: ``caplog`` capturing every logger at every level.
- ``own_redis_server``: a private redis-server the test may stop (from tests.redis_support).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_app
from gateway.config.settings import Settings
from tests.ops.ops_harness import GatewayProcess, OpsUpstream
from tests.redis_support import own_redis_server

__all__ = ["own_redis_server"]

MakeGateway = Callable[[Settings], Awaitable[TestClient[Any, Any]]]
Spawn = Callable[[Path, int], GatewayProcess]


@pytest.fixture
async def upstream(aiohttp_server: Any) -> OpsUpstream:
    up = OpsUpstream()
    server = await aiohttp_server(up.app(), access_log=None)
    up.url = str(server.make_url("")).rstrip("/")
    up.port = server.port
    return up


@pytest.fixture
def make_gateway(aiohttp_client: Any) -> MakeGateway:
    async def make(settings: Settings) -> TestClient[Any, Any]:
        server = TestServer(build_app(settings))
        # As gateway.server does: the gateway writes its own access log, aiohttp's is off
        # (it would log raw query strings).
        await server.start_server(access_log=None)
        client: TestClient[Any, Any] = await aiohttp_client(
            server, cookie_jar=aiohttp.DummyCookieJar()
        )
        return client

    return make


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    if sys.platform != "linux":
        pytest.skip("needs SO_REUSEPORT, process groups and /proc")
    started: list[GatewayProcess] = []

    def start(config: Path, port: int) -> GatewayProcess:
        process = GatewayProcess(config, port)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog capturing every logger at every level."""
    caplog.set_level(logging.DEBUG)
    return caplog
