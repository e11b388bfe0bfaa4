"""Fixtures for the operations tests (issue 5); helpers live in :mod:`tests.e2e.ops.ops_harness`.

- ``upstream``: the recording upstream (:class:`tests.upstreams.Upstream`) answering as
  :func:`~tests.e2e.ops.ops_harness.ops_answer` says, already serving on loopback.
- ``make_gateway(settings)``: a :class:`tests.support.GatewayClient`, served like ``gateway run``
  serves it, without a cookie jar.
- ``spawn(config, port)``: a real ``gateway run`` process; killed (with its workers) at teardown
  whatever happened.
- ``all_logs``: ``caplog`` capturing every logger at every level.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import GatewayProcess
from tests.e2e.ops.ops_harness import ops_answer
from tests.upstreams import Upstream

Spawn = Callable[[Path, int], GatewayProcess]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream(ops_answer) as up:
        yield up


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
