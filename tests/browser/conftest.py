"""Real Chromium (Debian package `chromium`) driven by Playwright, against `gateway run`."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM") or shutil.which("chromium")


@pytest.fixture
async def browser():
    if CHROMIUM is None:
        message = (
            "needs Chromium: install the Debian package `chromium` "
            "(or set GATEWAY_TEST_CHROMIUM to a Chromium binary)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"Chromium required in CI: {message}")
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield chromium
        finally:
            await chromium.close()
