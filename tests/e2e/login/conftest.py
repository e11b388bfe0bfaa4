"""Fixtures for the login functional tests: a real gateway in front of a real upstream.

- ``upstream`` (tests/conftest.py): the recording upstream of :mod:`tests.upstreams`.
- ``make_gateway(settings)``: a :class:`tests.support.GatewayClient` served as ``gateway run``
  serves it, with no cookie jar of its own (the :class:`~tests.e2e.login.login_harness.Browser`
  handles cookies explicitly).
- ``backend``: parametrised over ``memory``, ``redis`` (the shared test Redis under a per-test
  key prefix) and ``cookie``; gives a factory of ``session:`` sections for that backend.
- ``clock`` (tests/conftest.py): the wall clock, stopped and moved by the test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.configs import session_config

SessionFactory = Callable[..., dict[str, Any]]


@pytest.fixture(params=["memory", "redis", "cookie"])
def backend(request: pytest.FixtureRequest) -> SessionFactory:
    """``backend(**session_options)`` -> the ``session:`` section for the parametrised backend
    (``session_options`` as the YAML spells them: ``idle_timeout=600``...)."""
    name: str = request.param
    redis: dict[str, str] = {}
    if name == "redis":
        redis = {
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix"),
        }

    def make(**options: Any) -> dict[str, Any]:
        return session_config(name, **redis, **options)

    make.backend = name  # type: ignore[attr-defined]
    return make
