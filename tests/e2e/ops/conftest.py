"""Fixtures for the operations tests (issue 5); helpers live in :mod:`tests.e2e.ops.ops_harness`.

- ``upstream``: an :class:`~tests.e2e.ops.ops_harness.OpsUpstream`, already serving on loopback.
- ``make_gateway(settings)``: a :class:`tests.support.GatewayClient`, served like ``gateway run``
  serves it, without a cookie jar.
- ``spawn(config, port)``: a real ``gateway run`` process; killed (with its workers) at teardown
  whatever happened.
- ``all_logs``: ``caplog`` capturing every logger at every level.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.ops.ops_harness import GatewayProcess, OpsUpstream

Spawn = Callable[[Path, int], GatewayProcess]


@pytest.fixture
async def upstream(aiohttp_server: Any) -> OpsUpstream:
    up = OpsUpstream()
    server = await aiohttp_server(up.app(), access_log=None)
    up.url = str(server.make_url("")).rstrip("/")
    up.port = server.port
    return up


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
