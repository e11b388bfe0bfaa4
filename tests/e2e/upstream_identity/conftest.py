"""Fixtures for the end-to-end tests of what an upstream learns about the caller (issue 4).

Builders and the recording upstream live in :mod:`tests.e2e.upstream_identity.identity_harness`.

- ``recorder``: the recording upstream, already serving (``recorder.url``, ``recorder.port``).
- ``make_gateway(settings)``: a :class:`tests.support.GatewayClient` served as ``gateway run``
  serves it, without a cookie jar.
- ``ed_key``: an Ed25519 signing key written into ``tmp_path``.
- ``clock`` (tests/conftest.py): the wall clock, stopped and moved by the test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.e2e.upstream_identity.identity_harness import (
    KeyFile,
    Recorder,
    write_key,
)


@pytest.fixture
async def recorder(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Recorder:
    up = Recorder()
    server = await aiohttp_server(up.app())
    up.url = str(server.make_url("")).rstrip("/")
    up.port = server.port
    return up


@pytest.fixture
def ed_key(tmp_path: Path) -> KeyFile:
    return write_key(tmp_path, "EdDSA")


