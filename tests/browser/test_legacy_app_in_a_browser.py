"""Real Chromium in front of a legacy app mounted under /legacy with ``strip_prefix``: the app's
redirects, resolved the way a browser resolves them (backslashes, ``%2e``, ``..``), end inside
the route, and its cookies are not sent to another route.

The app is ``tests/e2e/legacy_app.py``, which knows nothing of its prefix; its ``/go?to=`` is the
naive ``?next=`` redirect of such apps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.configs import route
from tests.e2e.harness import GatewayProcess, config, running
from tests.redis_support import free_port

LEGACY_APP = Path(__file__).parents[1] / "e2e" / "legacy_app.py"


@pytest.fixture
def legacy_app() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(LEGACY_APP), str(port)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the legacy app exited"
            try:
                with urllib.request.urlopen(f"{url}/account", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the legacy app never answered"
                time.sleep(0.05)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
async def gateway(tmp_path: Path, legacy_app: str) -> AsyncIterator[GatewayProcess]:
    routes = [
        route("legacy", prefix="/legacy", upstream="legacy", strip_prefix="/legacy"),
        route("other", prefix="/other", upstream="legacy", strip_prefix="/other"),
    ]
    document = config(tmp_path, upstreams={"legacy": legacy_app}, routes=routes)
    async with running(tmp_path, document) as process:
        yield process


TRICKY = [
    "/simple/",
    "simple/",
    "../../simple/",
    "/..\\..\\simple/",
    "\\..\\simple/",
    "/%2e%2e/%2E%2e/simple/",
    "/.\t./simple/",
    "/.//simple/",
    "/legacy/simple/",
]
"""Locations the app answers to /legacy/go (its /go), each resolved by Chromium."""


async def test_chromium_follows_the_apps_redirects_inside_the_route(
    browser: Any, gateway: GatewayProcess
) -> None:
    page = await browser.new_page()
    for to in TRICKY:
        response = await page.goto(f"{gateway.base}/legacy/go?to={quote(to, safe='')}")
        assert (page.url, response.status) == (f"{gateway.base}/legacy/simple/", 200), to


async def test_chromium_keeps_the_apps_cookies_to_the_app(
    browser: Any, gateway: GatewayProcess
) -> None:
    page = await browser.new_page()
    await page.goto(f"{gateway.base}/legacy")
    assert page.url == f"{gateway.base}/legacy/simple/"  # "simple/" from the app's root
    await page.goto(f"{gateway.base}/legacy/login")
    assert page.url == f"{gateway.base}/legacy/account?welcome=1#top"
    seen = json.loads(await page.inner_text("body"))
    assert sorted(seen["cookie"].split("; ")) == ["sid=s3cret", "tab=2", "theme=dark"]
    await page.goto(f"{gateway.base}/other/account")
    assert json.loads(await page.inner_text("body"))["cookie"] is None
