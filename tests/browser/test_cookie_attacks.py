"""Review findings 3 and 4 in real Chromium: script on any page behind the gateway can neither
read the HttpOnly session cookie through an error page, nor plant a session of its choosing.

The script runs in the page of an app behind the gateway (``page.evaluate``), as script
injected into (or written by) any of those apps would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.configs import PASSWORDS
from tests.e2e.harness import GatewayProcess, config, login, running
from tests.upstreams import Received, Upstream

ROUTES = [
    {"name": "app", "match": {"path_prefix": "/app"}, "upstream": "app", "access": "public"},
    {
        "name": "members",
        "match": {"path_prefix": "/"},
        "upstream": "app",
        "access": "authenticated",
    },
]


async def app_page(request: web.Request, received: Received) -> web.Response:
    """An app's page; ``/app/echo-cookie`` shows the Cookie header the app received."""
    if request.path == "/app/echo-cookie":
        return web.Response(text=request.headers.get("Cookie", ""))
    return web.Response(
        text="<!doctype html><title>app</title><p>an app page", content_type="text/html"
    )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream(app_page) as up:
        yield up


@pytest.fixture
async def gateway(tmp_path: Path, upstream: Upstream) -> AsyncIterator[GatewayProcess]:
    async with running(
        tmp_path, config(tmp_path, upstreams={"app": upstream.url}, routes=ROUTES)
    ) as process:
        yield process


async def sign_in(page: Any, base: str, username: str, password: str) -> None:
    await page.goto(f"{base}/members/home")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/members/home")


async def session_of(context: Any) -> str:
    [cookie] = [c for c in await context.cookies() if c["name"] == "gw_session"]
    assert cookie["httpOnly"] is True
    value: str = cookie["value"]
    return value


async def test_an_oversized_cookie_header_does_not_reveal_the_session(
    browser: Any, gateway: GatewayProcess
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await sign_in(page, gateway.base, "alice", PASSWORDS["alice"])
    secret = await session_of(context)
    await page.goto(f"{gateway.base}/app/page")

    status, text = await page.evaluate(
        """async () => {
            // Script cannot read the HttpOnly cookie, but it can make the browser send a
            // Cookie header too large (or malformed) for the server and read the error page.
            for (let i = 0; i < 5; i++) {
                document.cookie = `pad${i}=${"a".repeat(3900)}; path=/`;
            }
            const response = await fetch("/app/anything");
            return [response.status, await response.text()];
        }"""
    )

    assert secret not in text
    assert "gw_session" not in text and "aaaa" not in text
    assert status == 431
    await context.close()


async def test_a_planted_cookie_value_is_not_a_session(
    browser: Any, gateway: GatewayProcess
) -> None:
    bob = await login(gateway.base, "bob")  # the attacker's own session
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{gateway.base}/app/page")

    planted = await page.evaluate(
        """async (bob) => {
            document.cookie = `pref=x gw_session=${bob}; path=/`;
            const echoed = await (await fetch("/app/echo-cookie")).text();
            const me = await fetch("/.gateway/userinfo", {headers: {Accept: "application/json"}});
            return [echoed, me.status];
        }""",
        bob,
    )
    # The browser does send it (the attack is real)...
    assert planted[0] == f"pref=x gw_session={bob}"
    # ...and the gateway reads it as the cookie "pref", not as bob's session.
    assert planted[1] == 401

    await sign_in(page, gateway.base, "alice", PASSWORDS["alice"])
    await page.goto(f"{gateway.base}/app/page")
    user = await page.evaluate(
        """async () => {
            const me = await fetch("/.gateway/userinfo", {headers: {Accept: "application/json"}});
            return (await me.json()).user.username;
        }"""
    )
    assert user == "alice"
    await context.close()
