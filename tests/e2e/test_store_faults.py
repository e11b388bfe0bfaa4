"""Fault run findings 3 and 4: a frozen Redis costs one timeout, not one per request; public
routes keep serving; readyz answers at once; the outage is logged once per interval, counted in
a metric; and the service comes back by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import GatewayProcess, config, login, running
from tests.e2e.ops.ops_harness import parse_metrics, value_of
from tests.redis_support import RedisServer, free_port
from tests.upstreams import Upstream

ROUTES = [
    {"name": "public", "match": {"path_prefix": "/public"}, "upstream": "app", "access": "public"},
    {
        "name": "members",
        "match": {"path_prefix": "/"},
        "upstream": "app",
        "access": "authenticated",
        "unauthenticated": "status",
    },
]


@pytest.fixture
async def setup(
    tmp_path: Path, own_redis_server: RedisServer
) -> AsyncIterator[tuple[GatewayProcess, str, RedisServer]]:
    upstream = await Upstream().start()
    admin = free_port()
    document = config(
        tmp_path,
        upstreams={"app": upstream.url},
        routes=ROUTES,
        server={"admin_listen": f"127.0.0.1:{admin}"},
        session={"backend": "redis", "redis": {"url": own_redis_server.url, "timeout": "300ms"}},
    )
    async with running(tmp_path, document) as gateway:
        yield gateway, f"http://127.0.0.1:{admin}", own_redis_server
    await upstream.stop()


async def timed_status(http: aiohttp.ClientSession, url: str, cookie: str) -> tuple[int, float]:
    started = time.monotonic()
    async with http.get(url, headers={"Cookie": f"gw_session={cookie}"}) as resp:
        await resp.read()
        return resp.status, time.monotonic() - started


async def test_a_frozen_store_fails_fast_and_spares_public_routes(
    setup: tuple[GatewayProcess, str, RedisServer],
) -> None:
    gateway, admin, redis_server = setup
    alice = await login(gateway.base, "alice")
    async with aiohttp.ClientSession() as http:
        assert (await timed_status(http, f"{gateway.base}/page", alice))[0] == 200

        redis_server.freeze()
        try:
            first = await timed_status(http, f"{gateway.base}/page", alice)
            assert first[0] == 503 and first[1] < 1.0, first
            # The breaker is open: the next ones do not wait for Redis at all.
            rest = [await timed_status(http, f"{gateway.base}/page", alice) for _ in range(100)]
            assert {status for status, _ in rest} == {503}
            assert max(took for _, took in rest) < 0.35
            # A public route serves everyone, cookie or not, anonymously.
            public = [
                await timed_status(http, f"{gateway.base}/public/x", alice) for _ in range(20)
            ]
            assert {status for status, _ in public} == {200}
            assert max(took for _, took in public) < 0.35
            started = time.monotonic()
            async with http.get(f"{admin}/readyz") as resp:
                assert resp.status == 503
            assert time.monotonic() - started < 0.5
            # Logged once when it went down, not once per request.
            outage_lines = [line for line in gateway.log.splitlines() if "session store" in line]
            assert 1 <= len(outage_lines) <= 2, outage_lines
            async with http.get(f"{admin}/metrics") as resp:
                samples = parse_metrics(await resp.text())
            assert value_of(samples, "gateway_session_store_outages_total") == 1.0
        finally:
            redis_server.thaw()

        # Back by itself: the breaker's next probe finds Redis answering again.
        deadline = time.monotonic() + 5
        while (await timed_status(http, f"{gateway.base}/page", alice))[0] != 200:
            assert time.monotonic() < deadline, "never recovered"
            await asyncio.sleep(0.1)
    await gateway.wait_log("session store available again")
