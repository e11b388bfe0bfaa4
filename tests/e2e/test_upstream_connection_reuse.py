"""Review finding 2, second half: a response always goes to the request that caused it.

With ``allow_get_body`` and ``keepalive_after_body`` on an upstream that in fact ignores GET
bodies (a misconfiguration the gateway cannot see), the body is read by the upstream as a second
request and answered: that stray answer arrives on the pooled connection and must be thrown away
with the connection, never handed to the next request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import config, raw_exchange, running
from tests.e2e.test_get_body_desync import SMUGGLED, request_bytes, routes, status_and_body
from tests.support import wait_for
from tests.upstreams import KeepAliveHttpServer

SMUGGLED_PATH = SMUGGLED.split()[1].decode()


@pytest.fixture
def legacy() -> Iterator[KeepAliveHttpServer]:
    with KeepAliveHttpServer().running() as server:
        yield server


async def test_an_upstream_allowed_get_bodies_still_never_answers_the_wrong_request(
    tmp_path: Path, legacy: KeepAliveHttpServer
) -> None:
    # Misconfigured on purpose: allow_get_body on an upstream that ignores bodies, trusted to
    # keep its connection after a body (otherwise the gateway asks it to close, and it never
    # reads the body at all). It then answers the smuggled request too; that stray answer must
    # be thrown away with its connection, never handed to the next request.
    legacy_settings = {
        "url": legacy.url,
        "max_connections": 1,
        "allow_get_body": True,
        "keepalive_after_body": True,
    }
    document = config(tmp_path, upstreams={"legacy": legacy_settings}, routes=routes("legacy"))
    async with running(tmp_path, document) as gateway:
        for round_ in range(3):
            answer = await raw_exchange(
                gateway.port,
                request_bytes(
                    "GET", "/static/first", {"Content-Length": str(len(SMUGGLED))}, SMUGGLED
                ),
            )
            status, payload = status_and_body(answer)
            assert status == 200 and json.loads(payload)["path"] == "/static/first", round_
            # The upstream answers the smuggled request too: that stray answer is on its way
            # to the pooled connection before the next request is sent.
            await wait_for(lambda n=round_ + 1: legacy.paths().count(SMUGGLED_PATH) == n)
            answer = await raw_exchange(gateway.port, request_bytes("GET", "/static/next", {}))
            status, payload = status_and_body(answer)
            assert status == 200
            assert json.loads(payload)["path"] == "/static/next", round_
