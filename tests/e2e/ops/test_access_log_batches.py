"""``gateway run`` writes its access log to stderr in batches: every line of a request answered
before SIGTERM is written before the process exits, and the lines of several workers sharing
one stderr never interleave mid-line."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp

from tests.e2e.ops.conftest import Spawn
from tests.e2e.ops.ops_harness import cookie_session, write_config
from tests.redis_support import free_port
from tests.upstreams import Upstream


def _entries(log: str) -> list[dict[str, object]]:
    """The JSON access-log entries of a gateway's stderr (every line must be whole JSON)."""
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [e for e in entries if "request_id" in e]


async def _burst(base: str, count: int, concurrency: int) -> list[str]:
    """``count`` GETs of ``/public/n<i>`` over ``concurrency`` keep-alive connections."""
    paths = [f"/public/n{i}" for i in range(count)]
    pending = iter(paths)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            for path in pending:
                async with http.get(base + path) as resp:
                    assert resp.status == 200
                    await resp.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return paths


async def test_sigterm_loses_no_access_line(upstream: Upstream, spawn: Spawn, tmp_path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "gateway.yaml",
        port=port,
        upstream_port=upstream.port,
        data_dir=tmp_path,
        access_log="json",
        grace="0s",  # no drain delay: the process exits right after the last answer
    )
    gateway = spawn(config, port)
    await gateway.wait_ready()
    paths = await _burst(gateway.base, 400, 8)
    gateway.signal(signal.SIGTERM)
    assert await gateway.wait_exit() == 0, gateway.log
    logged = [e["path"] for e in _entries(gateway.log) if str(e["path"]).startswith("/public/")]
    assert sorted(logged) == sorted(paths)


async def test_workers_sharing_stderr_never_split_a_line(
    upstream: Upstream, spawn: Spawn, tmp_path
) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "gateway.yaml",
        port=port,
        upstream_port=upstream.port,
        data_dir=tmp_path,
        access_log="json",
        workers=2,
        session=cookie_session(tmp_path),
        grace="1s",
    )
    gateway = spawn(config, port)
    await gateway.wait_workers_listening(2)
    await gateway.wait_ready()
    paths = await _burst(gateway.base, 3000, 16)
    gateway.signal(signal.SIGTERM)
    assert await gateway.wait_exit() == 0, gateway.log
    # json.loads in _entries fails on any line that another worker's write cut in two.
    entries = _entries(gateway.log)
    logged = [e["path"] for e in entries if str(e["path"]).startswith("/public/")]
    assert sorted(logged) == sorted(paths)
    assert len({e["request_id"] for e in entries}) == len(entries)
