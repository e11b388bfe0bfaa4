"""The session cookie (CONTRACT section 5), the login page's headers, tampered and expired
cookies."""

from __future__ import annotations

import re

import pytest

from tests.configs import session_config
from tests.e2e.login.login_harness import (
    COOKIE,
    JSON,
    LOGOUT,
    SESSION_ID,
    Browser,
    login_config,
)

URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


async def test_http_session_cookie_attributes(backend, upstream, make_gateway):
    settings = login_config(upstream.url, backend(absolute_timeout=7200))
    person = Browser(await make_gateway(settings))
    cookie = (await person.form_login("alice")).cookie()
    assert cookie is not None
    assert cookie.name == "gw_session"
    assert cookie.attributes == {
        "path": "/",
        "httponly": "",
        "samesite": "Lax",
        "max-age": "7200",
    }
    assert cookie.raw == f"gw_session={cookie.value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=7200"
    if backend.backend == "cookie":
        assert URL_SAFE.fullmatch(cookie.value)
        assert len(cookie.raw) < 4096
    else:
        # 256 bits from the CSPRNG: 43 base64url characters
        assert SESSION_ID.fullmatch(cookie.value)


async def test_https_session_cookie_is_secure_host_only_and_named_host(
    backend, upstream, make_gateway
):
    settings = login_config(
        upstream.url, backend(cookie_name="__Host-gw_session"), public_url="https://gw.test"
    )
    person = Browser(await make_gateway(settings))
    page = await person.login_page()
    csrf = page.cookie("__Host-gw_csrf")
    assert csrf is not None
    assert "secure" in csrf.attributes and "domain" not in csrf.attributes
    assert csrf.attributes["path"] == "/"

    reply = await person.submit_login("alice", csrf=page.page.field("csrf"))
    assert reply.status == 303
    assert reply.cookie("gw_session") is None
    cookie = reply.cookie("__Host-gw_session")
    assert cookie is not None
    assert cookie.attributes == {
        "path": "/",
        "httponly": "",
        "samesite": "Lax",
        "max-age": "28800",
        "secure": "",
    }
    reached = await person.get("/members/x")
    assert reached.status == 200
    assert "__Host-gw_session" not in (reached.upstream.value("Cookie") or "")

    out = await person.post(LOGOUT, data={"csrf": page.page.field("csrf")})
    expired = out.cookie("__Host-gw_session")
    assert expired is not None and expired.expires_now
    assert "secure" in expired.attributes and "domain" not in expired.attributes


@pytest.mark.parametrize(
    ("same_site", "public_url", "name", "shown"),
    [
        ("strict", "http://gw.test", "gw_session", "Strict"),
        ("none", "https://gw.test", "__Host-gw_session", "None"),  # the https default name
    ],
)
async def test_same_site_setting_is_reflected(
    upstream, make_gateway, same_site, public_url, name, shown
):
    settings = login_config(
        upstream.url, session_config("memory", same_site=same_site), public_url=public_url
    )
    person = Browser(await make_gateway(settings))
    reply = await person.form_login("alice")
    cookie = reply.cookie(name)
    assert cookie is not None
    assert cookie.attributes["samesite"] == shown
    out = await person.post(LOGOUT, json={}, accept=JSON)
    expired = out.cookie(name)
    assert expired is not None and expired.expires_now
    assert expired.attributes["samesite"] == shown


async def test_every_login_issues_a_different_session_id(upstream, make_gateway):
    client = await make_gateway(login_config(upstream.url, session_config("memory")))
    values = set()
    for _ in range(5):
        reply = await Browser(client).json_login("alice")
        cookie = reply.cookie()
        assert cookie is not None
        values.add(cookie.value)
    assert len(values) == 5


# --- the login page ---------------------------------------------------------------------------


async def test_login_page_security_headers(upstream, make_gateway):
    client = await make_gateway(login_config(upstream.url, session_config("memory")))
    person = Browser(client)
    replies = [
        await person.login_page("/members"),
        await person.form_login("alice", "wrong"),  # the failure page
        await person.submit_login("alice", csrf="x" * 43),  # the CSRF refusal page
        await person.get(LOGOUT),
    ]
    assert [r.status for r in replies] == [200, 401, 403, 200]
    for reply in replies:
        headers = reply.headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "form-action 'self'" in csp
        assert "script-src" not in csp or "'unsafe-inline'" not in csp
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"


async def test_login_page_has_no_external_assets_and_labels_every_input(upstream, make_gateway):
    client = await make_gateway(login_config(upstream.url, session_config("memory")))
    person = Browser(client)
    reply = await person.login_page("/members")
    text = reply.text
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "<script" not in text.lower()
    page = reply.page
    for url in page.urls:
        assert url.startswith("/") and not url.startswith("//")
        asset = await person.get(url)  # our own assets are served, never proxied
        assert asset.status == 200
    assert upstream.hits == 0
    visible = [i for i in page.inputs if i.get("type") != "hidden"]
    assert {i["name"] for i in visible} == {"username", "password"}
    for field in visible:
        assert field["id"] in page.label_for
    assert next(i for i in visible if i["name"] == "password")["type"] == "password"


async def test_login_page_shows_the_configured_title_escaped(upstream, make_gateway):
    title = "Acme <b>Portal</b> & Co"
    settings = login_config(upstream.url, session_config("memory"), title=title)
    reply = await Browser(await make_gateway(settings)).login_page()
    assert "<b>" not in reply.text
    assert "Acme &lt;b&gt;Portal&lt;/b&gt; &amp; Co" in reply.text
    assert reply.page.h1 == title


# --- tampered and expired cookies -----------------------------------------------------------


def _flip(value: str) -> str:
    mid = len(value) // 2
    return value[:mid] + ("B" if value[mid] == "A" else "A") + value[mid + 1 :]


async def _assert_anonymous(person: Browser, cookie: str, upstream) -> None:
    """``cookie`` gets no further than a sign-in request, and the gateway drops it."""
    hits = upstream.hits
    page = await person.get("/members/x?y=1", cookies={COOKIE: cookie})
    assert page.status == 302
    assert page.headers["Location"] == "/.gateway/login?rd=%2Fmembers%2Fx%3Fy%3D1"
    dropped = page.cookie()
    assert dropped is not None and dropped.expires_now
    api = await person.get("/members/x", accept=JSON, cookies={COOKIE: cookie})
    assert api.status == 401
    assert api.json()["error"] == "unauthenticated"
    info = await person.userinfo(cookies={COOKIE: cookie})
    assert info.status == 401
    assert upstream.hits == hits


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend"])
async def test_a_tampered_cookie_is_no_session(backend, upstream, make_gateway, damage):
    person = Browser(await make_gateway(login_config(upstream.url, backend())))
    await person.json_login("alice")
    value = person.session
    assert value is not None
    assert (await person.get("/members/x")).status == 200
    tampered = {"flip": _flip(value), "truncate": value[:-2], "extend": value + "AA"}[damage]
    await _assert_anonymous(person, tampered, upstream)
    # a tampered cookie on a public route: served anonymously, cookie dropped, never forwarded
    public = await person.get("/public/x", cookies={COOKIE: tampered})
    assert public.status == 200
    assert tampered not in (public.upstream.value("Cookie") or "")
    dropped = public.cookie()
    assert dropped is not None and dropped.expires_now


async def test_a_cookie_sealed_under_another_secret_is_no_session(upstream, make_gateway):
    mine = session_config("cookie")
    theirs = session_config("cookie", secret=b"z" * 32)
    other = Browser(await make_gateway(login_config(upstream.url, theirs)))
    await other.json_login("alice")
    foreign = other.session
    assert foreign is not None
    person = Browser(await make_gateway(login_config(upstream.url, mine)))
    await _assert_anonymous(person, foreign, upstream)


async def test_an_idle_session_expires(backend, upstream, make_gateway, clock):
    settings = login_config(upstream.url, backend(idle_timeout=600, absolute_timeout=3600))
    person = Browser(await make_gateway(settings))
    await person.json_login("alice")
    value = person.session
    assert value is not None
    clock.advance(601)
    await _assert_anonymous(person, value, upstream)


async def test_activity_keeps_a_session_alive_past_the_idle_timeout(
    backend, upstream, make_gateway, clock
):
    settings = login_config(upstream.url, backend(idle_timeout=600, absolute_timeout=3600))
    person = Browser(await make_gateway(settings))
    await person.json_login("alice")
    for _ in range(3):
        clock.advance(500)
        reply = await person.get("/members/x")
        assert reply.status == 200, reply.text
        refreshed = reply.cookie()
        if backend.backend == "cookie":  # a stateless session is re-sealed to slide its timeout
            assert refreshed is not None
        if refreshed is not None:
            assert not refreshed.expires_now
            assert int(refreshed.attributes["max-age"]) <= 3600 - 500
    value = person.session
    assert value is not None
    clock.advance(601)
    await _assert_anonymous(person, value, upstream)


async def test_the_absolute_timeout_ends_even_an_active_session(
    backend, upstream, make_gateway, clock
):
    settings = login_config(upstream.url, backend(idle_timeout=600, absolute_timeout=1500))
    person = Browser(await make_gateway(settings))
    await person.json_login("alice")
    for step in (500, 500, 400):  # 1400 s after login, never idle for long
        clock.advance(step)
        assert (await person.get("/members/x")).status == 200
    value = person.session
    assert value is not None
    clock.advance(101)  # 1501 s after login, 101 s after the last request
    await _assert_anonymous(person, value, upstream)
