"""Fixtures shared by the whole suite.

- ``upstream`` (:mod:`tests.upstreams`): the recording upstream, serving on a free port.
- ``make_gateway`` (:mod:`tests.support`): ``await make_gateway(...)`` serves a gateway in this
  process, as ``gateway run`` serves it, and closes it at teardown.
- ``redis_url``, ``redis_prefix``, ``own_redis_server`` (:mod:`tests.redis_support`): the shared
  test Redis (skipped, or failed under CI, when absent), a per-test key prefix, a private
  redis-server a test may stop.
- ``clock``: the wall clock (``time.time``, ``datetime.now``) stopped at a whole second and
  moved only by ``clock.advance(seconds)``, for every reader at once (time-machine; the event
  loop's monotonic clock keeps running, so timeouts and sleeps still work).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import time_machine

from tests.redis_support import own_redis_server, redis_prefix, redis_url
from tests.support import make_gateway
from tests.upstreams import Upstream

__all__ = ["clock", "make_gateway", "own_redis_server", "redis_prefix", "redis_url"]


class Clock:
    """The stopped wall clock of a test."""

    def __init__(self, traveller: time_machine.Coordinates) -> None:
        self._traveller = traveller

    @property
    def now(self) -> float:
        return time.time()

    def advance(self, seconds: float) -> None:
        self._traveller.shift(seconds)


@pytest.fixture
def clock() -> Iterator[Clock]:
    with time_machine.travel(float(int(time.time())), tick=False) as traveller:
        yield Clock(traveller)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """The recording upstream (:class:`tests.upstreams.Upstream`), serving until teardown."""
    async with Upstream() as up:
        yield up


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
