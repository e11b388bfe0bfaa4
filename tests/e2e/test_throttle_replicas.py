"""Fault run finding 6: concurrent guesses at several replicas never get more than max_failures
passwords checked (the check and the count are one atomic step in Redis)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp

from tests.e2e.harness import config, running
from tests.redis_support import free_port
from tests.support import wait_for
from tests.upstreams import Upstream

ROUTES = [{"name": "app", "match": {"path_prefix": "/"}, "upstream": "app", "access": "public"}]


async def test_two_replicas_check_exactly_max_failures_guesses(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    upstream = await Upstream().start()
    documents = [
        config(
            tmp_path / name,
            port=free_port(),
            upstreams={"app": upstream.url},
            routes=ROUTES,
            server={"access_log": "json", "trusted_proxies": ["127.0.0.1/32"]},
            session={"backend": "redis", "redis": {"url": redis_url, "key_prefix": redis_prefix}},
            login={"throttle": {"max_failures": 3, "window": "5m", "lockout": "15m"}},
        )
        for name in ("a", "b")
    ]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    async with contextlib.AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(running(tmp_path / name, document))
            for name, document in zip(("a", "b"), documents, strict=True)
        ]

        async def guess(i: int) -> int:
            replica = replicas[i % 2]
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{replica.base}/.gateway/login",
                    json={"username": "alice", "password": f"guess-{i}"},
                    headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},  # one address each
                ) as resp,
            ):
                return resp.status

        statuses = await asyncio.gather(*(guess(i) for i in range(24)))
        assert set(statuses) == {401}

        def counts() -> tuple[int, int]:
            logs = "".join(replica.log for replica in replicas)
            return logs.count('"reason": "bad_credentials"'), logs.count('"reason": "locked_out"')

        # Each replica writes a guess's auth event once it has answered: wait for all 24.
        await wait_for(lambda: sum(counts()) >= 24, what="24 auth events logged")
        assert counts() == (3, 21)
    await upstream.stop()
