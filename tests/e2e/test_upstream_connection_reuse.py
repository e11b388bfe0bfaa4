"""Review finding 2, second half: a response always goes to the request that caused it.

With ``allow_get_body`` on an upstream that in fact ignores GET bodies (a misconfiguration the
gateway cannot see), the body is read by the upstream as a second request and answered: that
stray answer arrives on the pooled connection and must be thrown away with the connection,
never handed to the next request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import config, raw_exchange, running
from tests.e2e.test_get_body_desync import SMUGGLED, request_bytes, routes, status_and_body
from tests.upstreams import KeepAliveHttpServer


@pytest.fixture
def legacy() -> Iterator[KeepAliveHttpServer]:
    with KeepAliveHttpServer().running() as server:
        yield server


async def test_an_upstream_allowed_get_bodies_still_never_answers_the_wrong_request(
    tmp_path: Path, legacy: KeepAliveHttpServer
) -> None:
    # Misconfigured on purpose: allow_get_body on an upstream that ignores bodies. It then
    # answers the smuggled request too; that stray answer must be thrown away with its
    # connection, never handed to the next request.
    document = config(
        tmp_path,
        upstreams={"legacy": {"url": legacy.url, "max_connections": 1, "allow_get_body": True}},
        routes=routes("legacy"),
    )
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
            await asyncio.sleep(0.05)  # let the stray answer arrive on the pooled connection
            answer = await raw_exchange(gateway.port, request_bytes("GET", "/static/next", {}))
            status, payload = status_and_body(answer)
            assert status == 200
            assert json.loads(payload)["path"] == "/static/next", round_
