"""Review finding 1: ``;`` path parameters that leave an empty segment must not bypass a rule.

A servlet container strips ``;parameters`` from every segment and collapses the empty segments
that leaves, so ``/;/admin/users`` is ``/admin/users`` to it. The gateway must match the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import GatewayProcess, config, login, running
from tests.upstreams import ServletUpstream

JSON = {"Accept": "application/json"}

ROUTES = [
    {
        "name": "admin",
        "match": {"path_prefix": "/admin"},
        "upstream": "servlet",
        "access": {"roles": ["admin"]},
        "unauthenticated": "status",
    },
    {
        "name": "internal",
        "match": {"path_prefix": "/internal"},
        "upstream": "servlet",
        "access": "deny",
    },
    {"name": "site", "match": {"path_prefix": "/"}, "upstream": "servlet", "access": "public"},
]

DISGUISES = ["/;/admin/users", "/;x/admin/users", "/;a=1/;/admin", "/;jsessionid=1/admin;x/"]


@pytest.fixture
async def servlet() -> AsyncIterator[ServletUpstream]:
    upstream = await ServletUpstream().start()
    yield upstream
    await upstream.stop()


@pytest.fixture
async def gateway(tmp_path: Path, servlet: ServletUpstream) -> AsyncIterator[GatewayProcess]:
    document = config(tmp_path, upstreams={"servlet": servlet.url}, routes=ROUTES)
    async with running(tmp_path, document) as process:
        yield process


async def status_of(url: str, cookie: str | None = None) -> int:
    headers = dict(JSON)
    if cookie is not None:
        headers["Cookie"] = f"gw_session={cookie}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers=headers, allow_redirects=False) as resp,
    ):
        return resp.status


def admin_served(servlet: ServletUpstream) -> list[str]:
    return [entry["raw_path"] for entry in servlet.served if entry["servlet"] == "admin"]


@pytest.mark.parametrize("path", DISGUISES)
async def test_anonymous_caller_never_reaches_the_admin_servlet(
    gateway: GatewayProcess, servlet: ServletUpstream, path: str
) -> None:
    assert await status_of(gateway.base + path) == 401
    assert admin_served(servlet) == []


@pytest.mark.parametrize("path", DISGUISES)
async def test_a_user_without_the_role_is_refused(
    gateway: GatewayProcess, servlet: ServletUpstream, path: str
) -> None:
    bob = await login(gateway.base, "bob")
    assert await status_of(gateway.base + path, bob) == 403
    assert admin_served(servlet) == []


async def test_the_admin_still_reaches_the_servlet_through_the_disguise(
    gateway: GatewayProcess, servlet: ServletUpstream
) -> None:
    alice = await login(gateway.base, "alice")
    assert await status_of(gateway.base + "/;/admin/users", alice) == 200
    assert servlet.served[-1]["mapped"] == "/admin/users"
    assert servlet.served[-1]["servlet"] == "admin"


@pytest.mark.parametrize("path", ["/;/internal/x", "/;x/internal", "/;/;/internal;y/z"])
async def test_a_deny_route_cannot_be_bypassed(
    gateway: GatewayProcess, servlet: ServletUpstream, path: str
) -> None:
    alice = await login(gateway.base, "alice")
    assert await status_of(gateway.base + path, alice) == 403
    assert [e for e in servlet.served if e["mapped"].startswith("/internal")] == []


@pytest.mark.parametrize("path", ["/;/.gateway/jwks.json", "/;x/.gateway/login", "/;/.GATEWAY/x"])
async def test_the_reserved_prefix_is_never_proxied(
    gateway: GatewayProcess, servlet: ServletUpstream, path: str
) -> None:
    await status_of(gateway.base + path)
    assert servlet.served == []
