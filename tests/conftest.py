"""Fixtures shared by the whole suite.

- ``clock``: the wall clock (``time.time``, ``datetime.now``) stopped at a whole second and
  moved only by ``clock.advance(seconds)``, for every reader at once (time-machine; the event
  loop's monotonic clock keeps running, so timeouts and sleeps still work).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import time_machine


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
