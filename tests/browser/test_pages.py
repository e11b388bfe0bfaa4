"""The gateway's own pages in real Chromium, in the light and the dark colour scheme: each one
screenshotted (PNGs under this run's pytest temporary directory, ``.../screenshots0/``) and
checked for what a keyboard or screen-reader user needs: every field labelled, the error
announced (``role="alert"``), focus where the typing goes, a sensible tab order, and text that
meets WCAG AA contrast (4.5:1; 3:1 for field borders)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.configs import PASSWORDS
from tests.e2e.harness import GatewayProcess, config, running
from tests.upstreams import Received, Upstream

ROUTES = [
    {
        "name": "admin",
        "match": {"path_prefix": "/admin"},
        "upstream": "app",
        "access": {"roles": ["admin"]},
    },
    {"name": "site", "match": {"path_prefix": "/"}, "upstream": "app", "access": "authenticated"},
]
SCHEMES = ["light", "dark"]

# What a page offers a keyboard and screen-reader user, and the contrast of every text on it.
AUDIT = """() => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    const [r, g, b, a] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [r, g, b, a === undefined ? 1 : a];
  };
  const over = (top, under) => top.slice(0, 3).map((v, i) => v * top[3] + under[i] * (1 - top[3]));
  const background = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const bg = parse(getComputedStyle(node).backgroundColor);
      if (bg[3] > 0) layers.push(bg);
      if (bg[3] === 1) break;
    }
    let color = [255, 255, 255];
    for (const layer of layers.reverse()) color = over(layer, color);
    return color;
  };
  const luminance = (rgb) => {
    const [r, g, b] = rgb.map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (fg, bg) => {
    const [hi, lo] = [luminance(fg), luminance(bg)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const visible = (el) =>
    el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const texts = [];
  for (const el of document.body.querySelectorAll("*")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const typed = el.tagName === "INPUT" && el.type !== "hidden" && el.value;
    if (!(own || typed) || !visible(el)) continue;
    const bg = background(el);
    const fg = over(parse(getComputedStyle(el).color), bg);
    texts.push({text: (el.innerText || el.value).trim().slice(0, 40), ratio: ratio(fg, bg)});
  }
  const fields = [...document.querySelectorAll("input:not([type=hidden]), select, textarea")];
  return {
    lang: document.documentElement.lang,
    title: document.title,
    h1: [...document.querySelectorAll("h1")].map((h) => h.innerText),
    unlabelled: fields.filter((f) => f.labels.length === 0).map((f) => f.name),
    labels: fields.map((f) => [f.name, [...f.labels].map((l) => l.innerText)]),
    borders: fields.map(
      (f) => ratio(parse(getComputedStyle(f).borderTopColor), background(f.parentElement))
    ),
    nameless: [...document.querySelectorAll("button, a")].filter((e) => !e.innerText.trim()).length,
    alerts: [...document.querySelectorAll("[role=alert]")].map((e) => e.innerText),
    statuses: [...document.querySelectorAll("[role=status]")].map((e) => e.innerText),
    focused: document.activeElement.id || document.activeElement.tagName,
    texts,
  };
}"""


async def app_page(request: web.Request, received: Received) -> web.Response:
    return web.Response(
        text=f"<!doctype html><title>app</title><h1 id=where>app page {request.path}</h1>",
        content_type="text/html",
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


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


async def audited(page: Any, shot: Path) -> dict[str, Any]:
    """Screenshot the page, then check what every page of ours must offer; the audit."""
    await page.screenshot(path=str(shot), full_page=True)
    audit: dict[str, Any] = await page.evaluate(AUDIT)
    assert audit["lang"] == "en"
    assert audit["title"]
    assert len(audit["h1"]) == 1
    assert audit["unlabelled"] == []
    assert audit["nameless"] == 0
    low = [(t["text"], round(t["ratio"], 2)) for t in audit["texts"] if t["ratio"] < 4.5]
    assert low == [], f"text below 4.5:1 in {shot.name}: {low}"
    assert all(ratio >= 3 for ratio in audit["borders"]), audit["borders"]
    return audit


async def tab_order(page: Any, stops: int) -> list[str]:
    """The elements the Tab key visits from the top of the page, by id or text."""
    # Focus a stand-in placed before everything, so that Tab starts at the top.
    await page.evaluate(
        """() => {
          const start = document.createElement("a");
          start.href = "#"; start.id = "tab-start";
          document.body.prepend(start);
          start.focus();
        }"""
    )
    visited = []
    for _ in range(stops):
        await page.keyboard.press("Tab")
        visited.append(
            await page.evaluate("(e => e.id || e.innerText.trim())(document.activeElement)")
        )
    await page.evaluate("document.getElementById('tab-start').remove()")
    return visited


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_the_login_pages_read_and_work_without_a_mouse(
    browser: Any, gateway: GatewayProcess, screenshots: Path, scheme: str
) -> None:
    base = gateway.base
    context = await browser.new_context(color_scheme=scheme)
    page = await context.new_page()

    await page.goto(f"{base}/reports")
    audit = await audited(page, screenshots / f"login-{scheme}.png")
    assert audit["labels"] == [["username", ["Username"]], ["password", ["Password"]]]
    assert audit["focused"] == "username"
    assert audit["alerts"] == [] and audit["statuses"] == []
    assert await tab_order(page, 3) == ["username", "password", "Sign in"]

    await page.keyboard.press("Shift+Tab")  # back to the username, by keyboard only
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.type("alice")
    await page.keyboard.press("Tab")
    await page.keyboard.type("not-her-password")
    await page.keyboard.press("Enter")
    # The answer comes back to the same URL: wait for the new page itself (waiting for a load
    # state could return before the navigation began, and the audit then ran during it).
    await page.locator("#login-error").wait_for()
    await page.wait_for_load_state()
    audit = await audited(page, screenshots / f"login-failed-{scheme}.png")
    assert audit["alerts"] == ["Invalid username or password."]
    assert audit["focused"] == "password"
    assert await page.get_attribute("#password", "aria-describedby") == "login-error"
    assert await page.input_value("#username") == "alice"

    await page.keyboard.type(PASSWORDS["alice"])
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{base}/reports")

    await page.goto(f"{base}/.gateway/login?rd=%2Freports")
    audit = await audited(page, screenshots / f"signed-in-{scheme}.png")
    assert audit["h1"] == ["Sign in"]
    assert await tab_order(page, 2) == ["Continue", "Sign out"]

    await page.goto(f"{base}/.gateway/logout")
    audit = await audited(page, screenshots / f"logout-{scheme}.png")
    assert audit["h1"] == ["Sign out"]
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{base}/.gateway/login?signed_out=1")
    audit = await audited(page, screenshots / f"signed-out-{scheme}.png")
    assert audit["statuses"] == ["You have signed out."]
    assert audit["focused"] == "username"

    await page.goto(f"{base}/.gateway/logout")
    audit = await audited(page, screenshots / f"logout-not-signed-in-{scheme}.png")
    assert audit["h1"] == ["Not signed in"]
    assert await page.locator("button").count() == 0
    await page.get_by_role("link", name="Sign in").click()
    await page.wait_for_url(f"{base}/.gateway/login")

    response = await page.goto(f"{base}/.gateway/nothing")
    assert response.status == 404
    await audited(page, screenshots / f"error-{scheme}.png")
    await context.close()


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_refused_user_signs_in_as_someone_else_from_the_403_page(
    browser: Any, gateway: GatewayProcess, screenshots: Path, scheme: str
) -> None:
    base = gateway.base
    context = await browser.new_context(color_scheme=scheme)
    page = await context.new_page()
    await page.goto(f"{base}/admin/settings?tab=2")
    await page.get_by_label("Username").fill("bob")
    await page.get_by_label("Password").fill(PASSWORDS["bob"])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/admin/settings?tab=2")

    response = await page.reload()
    assert response.status == 403
    audit = await audited(page, screenshots / f"denied-{scheme}.png")
    assert audit["h1"] == ["Access denied"]
    text = await page.locator("main").inner_text()
    assert "You are signed in as bob. This account may not open this page." in text
    assert await tab_order(page, 2) == ["Sign in as someone else", "Sign out"]

    await page.get_by_role("button", name="Sign in as someone else").click()
    await page.wait_for_url(re.compile(r".*/\.gateway/login\?signed_out=1&rd=.*"))
    audit = await audited(page, screenshots / f"signed-out-for-someone-else-{scheme}.png")
    assert audit["statuses"] == ["You have signed out."]
    assert not [c for c in await context.cookies() if c["name"] == "gw_session"]
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(PASSWORDS["alice"])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/admin/settings?tab=2")
    assert await page.locator("#where").inner_text() == "app page /admin/settings"
    await context.close()


async def test_the_browser_gets_the_gateways_favicon_not_a_login_page(
    browser: Any, gateway: GatewayProcess, upstream: Upstream
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    response = await page.goto(f"{gateway.base}/favicon.ico")
    assert response.status == 200
    assert response.url == f"{gateway.base}/favicon.ico"  # no redirect
    assert response.headers["content-type"] == "image/x-icon"
    size = await page.evaluate(
        "[document.images[0].naturalWidth, document.images[0].naturalHeight]"
    )
    assert size == [32, 32]
    assert upstream.hits == 0
    await context.close()
