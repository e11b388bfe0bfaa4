"""Fixtures for the end-to-end tests of what an upstream learns about the caller (issue 4).

Builders live in :mod:`tests.e2e.upstream_identity.identity_harness`.

- ``recorder``: the recording upstream (``upstream`` of tests/conftest.py), already serving
  (``recorder.url``, ``recorder.port``, ``recorder.received``).
- ``make_gateway(settings)``: a :class:`tests.support.GatewayClient` served as ``gateway run``
  serves it, without a cookie jar.
- ``ed_key``: an Ed25519 signing key written into ``tmp_path``.
- ``clock`` (tests/conftest.py): the wall clock, stopped and moved by the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.upstream_identity.identity_harness import KeyFile, write_key
from tests.upstreams import Upstream


@pytest.fixture
def recorder(upstream: Upstream) -> Upstream:
    """The recording upstream, by the name these tests give it."""
    return upstream


@pytest.fixture
def ed_key(tmp_path: Path) -> KeyFile:
    return write_key(tmp_path, "EdDSA")
