"""Liveness and readiness (CONTRACT section 3): under /.gateway/, or on server.admin_listen.

healthz says the process answers; readyz says config and keys are loaded, the session store is
reachable and the process is not draining, with one boolean per check.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import redis

from tests.configs import session_config
from tests.e2e.ops.ops_harness import (
    free_port,
    get,
    label_values,
    ops_config,
    parse_metrics,
    value_of,
    write_config,
)
from tests.redis_support import closed_port_url
from tests.support import wait_for
from tests.upstreams import echoed

HEALTHZ = "/.gateway/healthz"
READYZ = "/.gateway/readyz"
ALL_CHECKS = {"config", "keys", "session_store", "not_draining"}
ADMIN = "127.0.0.1:0"  # in process: the admin listener takes a free port of its own


async def test_healthz_and_readyz_answer_200_with_every_check_true(
    upstream, make_gateway, tmp_path
):
    client = await make_gateway(ops_config(upstream.url, tmp_path, admin_listen=ADMIN))
    async with client.get(HEALTHZ) as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        assert (await resp.json())["status"] == "ok"
    async with client.get(READYZ) as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        # SECURITY: the public listener says ready, and nothing about what is inside.
        assert await resp.json() == {"status": "ready"}
    async with client.session.get(client.admin_url("/readyz")) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ready"
    assert body["checks"] == dict.fromkeys(ALL_CHECKS, True)
    assert upstream.received == []  # answered by the gateway itself, never proxied


async def test_readyz_is_503_when_redis_is_unreachable_while_healthz_stays_200(
    upstream, make_gateway, tmp_path
):
    session = session_config("redis", redis_url=closed_port_url(), redis_prefix="gwtest:ops:")
    client = await make_gateway(
        ops_config(upstream.url, tmp_path, session=session, admin_listen=ADMIN)
    )
    async with client.get(READYZ) as resp:
        assert resp.status == 503
        assert await resp.json() == {"status": "not ready"}
    async with client.session.get(client.admin_url("/readyz")) as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["status"] == "not ready"
    assert body["checks"]["session_store"] is False
    assert {k for k, ok in body["checks"].items() if ok} == ALL_CHECKS - {"session_store"}
    async with client.get(HEALTHZ) as resp:
        assert resp.status == 200  # alive: restarting the process would not bring Redis back


async def test_readyz_follows_redis_going_away_and_coming_back(
    upstream, make_gateway, tmp_path, own_redis_server
):
    session = session_config(
        "redis", redis_url=own_redis_server.url, redis_prefix="gwtest:ops-ready:"
    )
    client = await make_gateway(
        ops_config(upstream.url, tmp_path, session=session, admin_listen=ADMIN)
    )
    async with client.get(READYZ) as resp:
        assert resp.status == 200, await resp.text()

    own_redis_server.stop()

    async with client.get(READYZ) as resp:
        assert resp.status == 503
    async with client.session.get(client.admin_url("/readyz")) as resp:
        assert resp.status == 503
        assert (await resp.json())["checks"]["session_store"] is False
    async with client.get(HEALTHZ) as resp:
        assert resp.status == 200

    # A Redis on the same address again: ready again, without restarting the gateway.
    binary = shutil.which("redis-server")
    assert binary is not None
    port = own_redis_server.port
    again = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "the second redis-server did not start"
                time.sleep(0.05)
        probe.close()

        # Ready again as soon as the breaker's next probe (within a second) finds it.
        async def ready() -> bool:
            async with client.get(READYZ) as resp:
                return resp.status == 200

        await wait_for(ready, timeout=5, interval=0.1)
    finally:
        again.terminate()
        again.wait(timeout=10)


async def test_with_admin_listen_details_and_metrics_are_on_the_admin_port_only(
    upstream, spawn, tmp_path
):
    port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path / "config.yaml",
        port=port,
        upstream_port=upstream.port,
        data_dir=tmp_path,
        admin_port=admin_port,
    )
    gateway = spawn(config, port)
    admin = f"http://127.0.0.1:{admin_port}"
    await gateway.wait_ready(f"{admin}/healthz")

    status, body = await get(f"{gateway.base}/public/hello")
    assert (status, echoed(body).raw_path) == (200, "/public/hello")
    # access_log: text, timestamped by the process's log format
    await gateway.wait_log('"GET /public/hello"')
    assert re.search(
        r"(?m)^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO gateway\.access: 127\.0\.0\.1 - "
        r'"GET /public/hello" 200 ',
        gateway.log,
    ), gateway.log

    status, body = await get(f"{admin}/readyz")
    assert status == 200, body
    assert json.loads(body)["checks"] == dict.fromkeys(ALL_CHECKS, True)
    status, body = await get(f"{admin}/metrics")
    assert status == 200
    samples = parse_metrics(body.decode())
    requests = value_of(samples, "gateway_requests_total", route="public", method="GET", code="200")
    assert requests == 1.0
    # The admin listener's own traffic is not proxied traffic.
    assert label_values(samples, "gateway_requests_total", "route") == {"public"}

    # On the main port: health without details, no metrics, never proxied.
    seen = len(upstream.received)
    assert await get(f"{gateway.base}/.gateway/healthz") == (200, b'{"status": "ok"}')
    assert await get(f"{gateway.base}/.gateway/readyz") == (200, b'{"status": "ready"}')
    status, _ = await get(f"{gateway.base}/.gateway/metrics")
    assert status == 404
    assert len(upstream.received) == seen
    # And the admin port serves only those three.
    for path in ("/.gateway/healthz", "/public/hello", "/"):
        status, _ = await get(f"{admin}{path}")
        assert status == 404, path
    assert len(upstream.received) == seen
