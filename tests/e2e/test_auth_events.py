"""Review hardening: failed and refused sign-ins are logged as auth events (username, client
IP, reason), never with the password."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import GatewayProcess, config, running
from tests.upstreams import Upstream

ROUTES = [{"name": "app", "match": {"path_prefix": "/"}, "upstream": "app", "access": "public"}]
SECRET_GUESS = "hunter2-very-secret-guess"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    upstream = await Upstream().start()
    document = config(
        tmp_path,
        upstreams={"app": upstream.url},
        routes=ROUTES,
        server={"access_log": "json"},
        login={"throttle": {"max_failures": 2, "window": "5m", "lockout": "15m"}},
    )
    async with running(tmp_path, document) as process:
        yield process
    await upstream.stop()


def auth_events(log: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [entry for entry in entries if entry.get("event") == "auth"]


async def test_failed_and_refused_logins_are_auth_events(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as http:
        for username in ("alice", "mallory\nFAKE LINE", "alice"):
            async with http.post(
                gateway.base + "/.gateway/login",
                json={"username": username, "password": SECRET_GUESS},
            ) as resp:
                assert resp.status == 401
        # A form without its CSRF token (and no CSRF cookie).
        async with http.post(
            gateway.base + "/.gateway/login",
            data={"username": "bob", "password": SECRET_GUESS, "csrf": "x" * 43},
        ) as resp:
            assert resp.status == 403
    await gateway.wait_log('"reason": "csrf"')
    events = auth_events(gateway.log)
    assert [(e["user"], e["reason"]) for e in events] == [
        ("alice", "bad_credentials"),
        ("mallory\nFAKE LINE", "bad_credentials"),
        ("alice", "locked_out"),  # the IP reached max_failures
        ("bob", "csrf"),
    ]
    assert {e["client_ip"] for e in events} == {"127.0.0.1"}
    assert SECRET_GUESS not in gateway.log
    # A username cannot forge a log line: the newline stays inside its JSON string.
    assert not any(line.startswith("FAKE LINE") for line in gateway.log.splitlines())
