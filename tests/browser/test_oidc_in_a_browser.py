"""A person with a browser signs in at a real OpenID Connect provider (the npm package
oidc-provider, tests/oidc/provider.mjs) and reaches an app behind `gateway run`; signs out there
and at the provider; is signed out everywhere by the provider's back-channel logout."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp import web

from tests.configs import route, session_config
from tests.e2e.harness import config, running
from tests.oidc_support import CLIENT_SECRET, RealProvider, gateway_client, provider_config
from tests.redis_support import free_port
from tests.upstreams import Received, Upstream

DISCOVERED = "OpenID Connect provider corp discovered"


async def page(request: web.Request, received: Received) -> web.Response:
    """An app page saying who the gateway's JWT names."""
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False}) if token else {}
    return web.Response(
        text="<!doctype html><title>app</title>"
        f"<h1 id=where>app page {request.path}</h1><pre id=claims>{json.dumps(claims)}</pre>",
        content_type="text/html",
    )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream(page) as up:
        yield up


def gateway_document(
    tmp_path: Path, port: int, upstream: Upstream, issuer: str, **sections: Any
) -> dict[str, Any]:
    return config(
        tmp_path,
        port=port,
        upstreams={"app": upstream.url},
        routes=[route("app", prefix="/", access="authenticated")],
        login={"oidc": [provider_config(issuer)]},
        **sections,
    )


async def sign_in_at_provider(page: Any, login: str) -> None:
    """The provider's own login form (oidc-provider's devInteractions: any password)."""
    await page.locator("input[name=login]").fill(login)
    await page.locator("input[name=password]").fill("any password")
    await page.locator("button[type=submit]").click()


async def app_claims(page: Any) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(await page.locator("#claims").inner_text())
    return claims


async def test_sign_in_at_the_provider_reach_the_app_sign_out_at_both(
    browser: Any, tmp_path: Path, upstream: Upstream
) -> None:
    port = free_port()
    gw = f"http://127.0.0.1:{port}"
    provider = RealProvider([gateway_client([gw], backchannel=gw)])
    try:
        async with running(
            tmp_path, gateway_document(tmp_path, port, upstream, provider.issuer)
        ) as g:
            await g.wait_log(DISCOVERED)
            context = await browser.new_context()
            tab = await context.new_page()

            await tab.goto(f"{gw}/reports/q3?view=full")
            assert tab.url.startswith(f"{gw}/.gateway/login?rd=")
            assert await tab.get_by_label("Password").count() == 1  # local users: the form too
            await tab.get_by_role("link", name="Sign in with Corp SSO").click()
            await tab.wait_for_url(f"{provider.issuer}/**")
            await sign_in_at_provider(tab, "alice.sso")

            await tab.wait_for_url(f"{gw}/reports/q3?view=full")
            assert await tab.locator("#where").inner_text() == "app page /reports/q3"
            claims = await app_claims(tab)
            assert claims["sub"] == "alice.sso"
            assert claims["email"] == "alice@corp.example"
            assert claims["name"] == "Alice from SSO"
            assert claims["roles"] == ["admin", "staff"]
            assert claims["idp"] == "corp"
            assert claims["iss"] == gw and claims["aud"] == "app"
            # The token the app got is ours, verifiable with our published keys.
            async with aiohttp.ClientSession() as http, http.get(f"{gw}/.gateway/jwks.json") as r:
                jwks = jwt.PyJWKSet.from_dict(await r.json())
            [received] = [r for r in upstream.received if r.raw_path.startswith("/reports")][-1:]
            token = received.bearer
            key = jwks[jwt.get_unverified_header(token)["kid"]]
            jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience="app")
            cookies = {c["name"]: c for c in await context.cookies()}
            assert cookies["gw_session"]["httpOnly"] is True
            assert "gw_oidc" not in cookies  # the sign-in cookie is gone once used

            await tab.goto(f"{gw}/.gateway/logout")
            await tab.get_by_role("button", name="Sign out").click()
            # RP-initiated logout: the provider asks, then sends the browser back to us.
            await tab.wait_for_url(f"{provider.issuer}/**")
            await tab.locator("button[name=logout]").click()
            await tab.wait_for_url(f"{gw}/.gateway/login")
            assert "gw_session" not in {c["name"] for c in await context.cookies()}

            # Nothing secret reached the log: no code, no token (JWTs start "eyJ"), no secret.
            assert "eyJ" not in g.log and CLIENT_SECRET not in g.log
            assert "code=REDACTED" in g.log or "/.gateway/oidc/callback?code" not in g.log

            # Signed out at the provider too: signing in again asks for the login again.
            await tab.goto(f"{gw}/reports")
            await tab.get_by_role("link", name="Sign in with Corp SSO").click()
            await tab.wait_for_url(f"{provider.issuer}/**")
            assert await tab.locator("input[name=login]").count() == 1
            await context.close()
    finally:
        provider.stop()


async def test_back_channel_logout_ends_the_session_on_every_replica(
    browser: Any, tmp_path: Path, upstream: Upstream, redis_url: str, redis_prefix: str
) -> None:
    """Two `gateway run` processes sharing Redis; the provider tells one of them."""
    port_a, port_b = free_port(), free_port()
    gw_a, gw_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    provider = RealProvider([gateway_client([gw_a, gw_b], backchannel=gw_a)])
    session = session_config("redis", redis_url=redis_url, redis_prefix=redis_prefix)
    try:
        # One data_dir: the replicas share the generated signing key, as replicas must.
        doc_a = gateway_document(tmp_path, port_a, upstream, provider.issuer, session=session)
        doc_b = gateway_document(tmp_path, port_b, upstream, provider.issuer, session=session)
        async with running(tmp_path, doc_a) as replica_a, running(tmp_path, doc_b) as replica_b:
            await replica_a.wait_log(DISCOVERED)
            await replica_b.wait_log(DISCOVERED)
            context = await browser.new_context()
            tab = await context.new_page()
            await tab.goto(f"{gw_a}/a")
            await tab.get_by_role("link", name="Sign in with Corp SSO").click()
            await tab.wait_for_url(f"{provider.issuer}/**")
            await sign_in_at_provider(tab, "bob.sso")
            await tab.wait_for_url(f"{gw_a}/a")
            # The session cookie is the host's (cookies ignore ports): replica B knows it too.
            await tab.goto(f"{gw_b}/b")
            assert (await app_claims(tab))["sub"] == "bob.sso"

            # The user signs out at the provider itself, not through the gateway.
            await tab.goto(f"{provider.issuer}/session/end")
            await tab.locator("button[name=logout]").click()
            try:
                await replica_a.wait_log("back-channel logout from corp ended 1 session(s)")
            except AssertionError:
                raise AssertionError(provider.log) from None

            for gw in (gw_a, gw_b):
                await tab.goto(f"{gw}/again")
                assert tab.url.startswith(f"{gw}/.gateway/login?rd="), gw
            await context.close()
    finally:
        provider.stop()


async def test_a_stolen_code_is_worthless_without_its_pkce_verifier(
    browser: Any, tmp_path: Path, upstream: Upstream
) -> None:
    """The victim's code, injected into the attacker's own sign-in (whose state and cookie are
    valid): the provider refuses to exchange it, since the attacker's verifier is not the one
    the code was issued for."""
    port = free_port()
    gw = f"http://127.0.0.1:{port}"
    provider = RealProvider([gateway_client([gw])])
    try:
        async with running(
            tmp_path, gateway_document(tmp_path, port, upstream, provider.issuer)
        ) as g:
            await g.wait_log(DISCOVERED)
            victim = await browser.new_context()
            tab = await victim.new_page()
            await tab.goto(f"{gw}/.gateway/oidc/corp/start?rd=/")
            # The code gets away from the victim unused: here their own sign-in cookie is
            # lost, so the gateway refuses their callback before it exchanges the code.
            await victim.clear_cookies(name="gw_oidc")
            await sign_in_at_provider(tab, "alice.sso")
            await tab.wait_for_url(f"{gw}/.gateway/oidc/callback?**")
            code = parse_qs(urlsplit(tab.url).query)["code"][0]

            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as attacker:
                async with attacker.get(
                    f"{gw}/.gateway/oidc/corp/start", allow_redirects=False
                ) as resp:
                    own_state = parse_qs(urlsplit(resp.headers["Location"]).query)["state"][0]
                    state_cookie = resp.cookies["gw_oidc"].value
                async with attacker.get(
                    f"{gw}/.gateway/oidc/callback",
                    params={"code": code, "state": own_state, "iss": provider.issuer},
                    headers={"Cookie": f"gw_oidc={state_cookie}", "Accept": "text/html"},
                    allow_redirects=False,
                ) as resp:
                    assert resp.status == 400
                    assert "did not complete the sign-in" in await resp.text()
                    assert "gw_session" not in resp.cookies
            await g.wait_log("refused: the token endpoint refused the code")
            await victim.close()
    finally:
        provider.stop()


async def test_with_same_site_strict_the_user_still_arrives_signed_in(
    browser: Any, tmp_path: Path, upstream: Upstream
) -> None:
    """A Strict cookie set at the end of the provider's (cross-site) redirects is not sent on
    the redirect to the app: the callback continues from a page of our own instead."""
    port = free_port()
    gw = f"http://127.0.0.1:{port}"
    provider = RealProvider([gateway_client([gw])])
    try:
        document = gateway_document(
            tmp_path, port, upstream, provider.issuer, session={"same_site": "strict"}
        )
        async with running(tmp_path, document) as g:
            await g.wait_log(DISCOVERED)
            context = await browser.new_context()
            tab = await context.new_page()
            await tab.goto(f"{gw}/reports")
            await tab.get_by_role("link", name="Sign in with Corp SSO").click()
            await tab.wait_for_url(f"{provider.issuer}/**")
            await sign_in_at_provider(tab, "alice.sso")

            await tab.wait_for_url(f"{gw}/reports")
            assert (await app_claims(tab))["sub"] == "alice.sso"
            await context.close()
    finally:
        provider.stop()
