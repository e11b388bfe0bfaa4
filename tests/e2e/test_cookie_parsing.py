"""Review finding 4: cookie values must not inject a session (RFC 6265: split on ``;`` only)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.harness import GatewayProcess, config, login, raw_exchange, running
from tests.upstreams import Received, Upstream

ROUTES = [
    {"name": "plant", "match": {"path_prefix": "/plant"}, "upstream": "app", "access": "public"},
    {
        "name": "members",
        "match": {"path_prefix": "/"},
        "upstream": "app",
        "access": "authenticated",
        "unauthenticated": "status",
    },
]


async def plant(request: web.Request, received: Received) -> web.Response | None:
    """``/plant?c=...``: a hostile or compromised upstream tries to fixate the gateway's session
    with the Set-Cookie values it is given."""
    if not request.path.startswith("/plant"):
        return None
    response = web.Response(text="planted")
    for value in request.query.getall("c"):
        response.headers.add("Set-Cookie", value)
    return response


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream(plant) as up:
        yield up


@pytest.fixture
async def gateway(tmp_path: Path, upstream: Upstream) -> AsyncIterator[GatewayProcess]:
    async with running(
        tmp_path, config(tmp_path, upstreams={"app": upstream.url}, routes=ROUTES)
    ) as g:
        yield g


async def whoami(gateway: GatewayProcess, cookie_header: str) -> tuple[int, str | None]:
    request = (
        "GET /.gateway/userinfo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Accept: application/json\r\nCookie: {cookie_header}\r\n\r\n"
    ).encode()
    answer = await raw_exchange(gateway.port, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    user = json.loads(body)["user"]["username"] if status == 200 else None
    return status, user


async def test_a_session_inside_another_cookies_value_is_not_a_session(
    gateway: GatewayProcess,
) -> None:
    bob = await login(gateway.base, "bob")
    assert await whoami(gateway, f"pref=x gw_session={bob}") == (401, None)
    assert await whoami(gateway, f"gw_session=garbage; pref=x gw_session={bob}") == (401, None)


async def test_the_real_session_wins_over_an_injected_one(gateway: GatewayProcess) -> None:
    alice = await login(gateway.base, "alice")
    bob = await login(gateway.base, "bob")
    assert await whoami(gateway, f"gw_session={alice}; pref=x gw_session={bob}") == (
        200,
        "alice",
    )


async def test_two_session_cookies_are_believed_neither(gateway: GatewayProcess) -> None:
    alice = await login(gateway.base, "alice")
    bob = await login(gateway.base, "bob")
    # A sibling subdomain can plant a second gw_session with a longer Path (sent first).
    assert await whoami(gateway, f"gw_session={bob}; gw_session={alice}") == (401, None)


async def test_an_injected_session_is_not_what_the_upstream_loses(
    gateway: GatewayProcess, upstream: Upstream
) -> None:
    alice = await login(gateway.base, "alice")
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{gateway.base}/page", headers={"Cookie": f"gw_session={alice}; pref=x gw_session=zzz"}
        ) as resp,
    ):
        assert resp.status == 200
    # The real session cookie is stripped; pref is another cookie and passes untouched.
    assert upstream.last.values("Cookie") == ["pref=x gw_session=zzz"]


@pytest.mark.parametrize(
    "planted", ["gw_session=fixed; Path=/", "=gw_session=fixed; Path=/", "gw_csrf=fixed"]
)
async def test_an_upstream_cannot_set_the_gateways_cookies(
    gateway: GatewayProcess, planted: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway.base}/plant", params={"c": [planted, "theirs=1"]}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers.getall("Set-Cookie") == ["theirs=1"]
