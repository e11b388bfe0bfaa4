"""Fixtures for the login functional tests: a real gateway in front of a real upstream.

- ``upstream`` (tests/conftest.py): the recording upstream of :mod:`tests.upstreams`.
- ``make_gateway(settings)``: a :class:`tests.support.GatewayClient` served as ``gateway run``
  serves it, with no cookie jar of its own (the :class:`~tests.e2e.login.login_harness.Browser`
  handles cookies explicitly).
- ``backend``: parametrised over ``memory``, ``redis`` (the shared test Redis under a per-test
  key prefix) and ``cookie``; gives a factory of :class:`SessionSettings` for that backend.
- ``clock`` (tests/conftest.py): the wall clock, stopped and moved by the test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.config.settings import SessionSettings, Settings
from tests.e2e.login.login_harness import session_settings
from tests.support import GatewayClient

MakeGateway = Callable[[Settings], Awaitable[GatewayClient]]
SessionFactory = Callable[..., SessionSettings]


@pytest.fixture(params=["memory", "redis", "cookie"])
def backend(request: pytest.FixtureRequest) -> SessionFactory:
    """``backend(**session_options)`` -> SessionSettings for the parametrised backend."""
    name: str = request.param
    redis: dict[str, str] = {}
    if name == "redis":
        redis = {
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix"),
        }

    def make(**options: Any) -> SessionSettings:
        return session_settings(name, **redis, **options)

    make.backend = name  # type: ignore[attr-defined]
    return make
