"""A person with a browser: the example configuration, sign in, reach a page, sign out."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from tests.test_server import free_port, wait_listening
from tests.upstreams import Received, Upstream

REPO = Path(__file__).resolve().parents[2]


async def page(request: web.Request, received: Received) -> web.Response:
    """An app page showing what the app got: its path, the cookies, whether a token came."""
    has_token = "yes" if "Authorization" in request.headers else "no"
    return web.Response(
        text=f"<!doctype html><title>app</title><h1 id=where>app page {request.path}</h1>"
        f"<p id=cookies>{request.headers.get('Cookie', '')}</p><p id=auth>{has_token}</p>",
        content_type="text/html",
    )


@pytest.fixture
async def upstream():
    async with Upstream(page) as up:
        yield up


@pytest.fixture
async def gateway(tmp_path, upstream, request):
    """`gateway run` on the example configuration, moved to free ports."""
    backend = getattr(request, "param", "memory")
    port = free_port()
    text = (REPO / "config.example.yaml").read_text()
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    text = text.replace("http://127.0.0.1:9000", f"http://127.0.0.1:{upstream.port}")
    text = text.replace("data_dir: ./.gateway", f"data_dir: {tmp_path}")
    if backend == "redis":
        text = text.replace("backend: memory", "backend: redis")
        text = text.replace(
            'url: "redis://127.0.0.1:6379/0"', f'url: "{request.getfixturevalue("redis_url")}"'
        )
        text = text.replace(
            'key_prefix: "gw:"', f'key_prefix: "{request.getfixturevalue("redis_prefix")}"'
        )
    if backend == "cookie":
        (tmp_path / "session.key").write_bytes(bytes(range(32)))
        text = text.replace("backend: memory", "backend: cookie")
        text = text.replace(
            "    # secret_file: /run/secrets/session-key",
            f"    secret_file: {tmp_path / 'session.key'}",
        )
    config = tmp_path / "config.yaml"
    config.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 15)


@pytest.mark.parametrize("gateway", ["memory", "redis", "cookie"], indirect=True)
async def test_sign_in_reach_a_page_sign_out_and_the_old_cookie_is_worthless(browser, gateway):
    context = await browser.new_context()
    page = await context.new_page()

    await page.goto(f"{gateway}/reports/q3?view=full")
    assert page.url == f"{gateway}/.gateway/login?rd=%2Freports%2Fq3%3Fview%3Dfull"
    assert await page.locator("h1").inner_text() == "Sign in"

    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill("wonderland")
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{gateway}/reports/q3?view=full")
    assert await page.locator("#where").inner_text() == "app page /reports/q3"
    assert "gw_session" not in await page.locator("#cookies").inner_text()

    [session] = [c for c in await context.cookies() if c["name"] == "gw_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"

    await page.goto(f"{gateway}/.gateway/logout")
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{gateway}/.gateway/login?signed_out=1")
    assert not [c for c in await context.cookies() if c["name"] == "gw_session"]

    # Someone who kept a copy of the old cookie gets the login page, not the app.
    thief = await browser.new_context()
    await thief.add_cookies([{**session, "expires": -1}])
    stolen = await thief.new_page()
    await stolen.goto(f"{gateway}/reports/q3")
    assert stolen.url.startswith(f"{gateway}/.gateway/login?rd=")
    await thief.close()
    await context.close()


async def test_a_wrong_password_shows_the_generic_error_and_no_session(browser, gateway):
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{gateway}/.gateway/login")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill("not-the-password")
    await page.get_by_role("button", name="Sign in").click()
    assert await page.get_by_role("alert").inner_text() == "Invalid username or password."
    assert await page.get_by_label("Username").input_value() == "alice"
    assert not [c for c in await context.cookies() if c["name"] == "gw_session"]
    await context.close()
