"""Fixtures for the login functional tests: a real gateway in front of a real echo upstream.

- ``upstream``: the echo upstream (:class:`~tests.e2e.login.login_harness.Upstream`), already
  serving.
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
from aiohttp.test_utils import TestServer

from gateway.config.settings import SessionSettings, Settings
from tests.e2e.login.login_harness import Upstream, session_settings
from tests.support import GatewayClient

MakeGateway = Callable[[Settings], Awaitable[GatewayClient]]
SessionFactory = Callable[..., SessionSettings]


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Upstream:
    up = Upstream()
    server = await aiohttp_server(up.app())
    up.url = str(server.make_url("")).rstrip("/")
    return up


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


