"""Signing in and out end to end, on every session backend: what a person and an SPA see."""

from __future__ import annotations

import json

import pytest

from gateway.passwords import hash_password
from tests.configs import PASSWORDS, session_config
from tests.e2e.login.login_harness import (
    COOKIE,
    CSRF_COOKIE,
    JSON,
    LOGIN,
    LOGOUT,
    LOOPBACK,
    Browser,
    login_config,
)

# The journey uses a real argon2id hash with the production parameters (one hash per module).
REAL_USERS = [
    {
        "username": "alice",
        "password_hash": hash_password(PASSWORDS["alice"]),
        "name": "Alice Example",
        "email": "alice@example.com",
        "roles": ["admin"],
    },
]
FAILURE = {"error": "invalid_credentials", "message": "Invalid username or password."}


async def test_sign_in_reach_a_protected_page_sign_out_and_the_old_cookie_is_refused(
    backend, upstream, make_gateway
):
    client = await make_gateway(login_config(upstream.url, backend(), users=REAL_USERS))
    person = Browser(client)

    first = await person.get("/members/page?tab=1")
    assert first.status == 302
    assert first.headers["Location"] == "/.gateway/login?rd=%2Fmembers%2Fpage%3Ftab%3D1"

    login_page = await person.get(first.headers["Location"])
    assert login_page.status == 200
    form = login_page.page
    assert form.forms == [{"method": "post", "action": LOGIN}]
    assert form.field("rd") == "/members/page?tab=1"
    token = form.field("csrf")
    assert len(token) >= 32
    assert person.cookies[CSRF_COOKIE] == token

    signed_in = await person.submit_login("alice", csrf=token, rd=form.field("rd"))
    assert signed_in.status == 303
    assert signed_in.headers["Location"] == "/members/page?tab=1"
    session = signed_in.cookie()
    assert session is not None and session.value
    assert person.session == session.value

    person.cookies["theme"] = "dark"
    reached = await person.get("/members/page?tab=1")
    assert reached.status == 200
    got = reached.upstream
    assert got.raw_path == "/members/page?tab=1"
    assert "theme=dark" in got.value("Cookie")
    assert COOKIE not in got.value("Cookie")
    assert session.value not in got.value("Cookie")
    assert upstream.hits == 1

    logout_page = await person.get(LOGOUT)
    assert "alice" in logout_page.text
    signed_out = await person.post(LOGOUT, data={"csrf": logout_page.page.field("csrf")})
    assert signed_out.status == 303
    assert signed_out.headers["Location"] == LOGIN + "?signed_out=1"
    assert signed_out.headers["Clear-Site-Data"] == '"cookies"'
    expired = signed_out.cookie()
    assert expired is not None and expired.expires_now and expired.value == ""
    assert person.session is None

    replay = await person.get("/members/page?tab=1", cookies={COOKIE: session.value})
    assert replay.status == 302
    assert replay.headers["Location"] == "/.gateway/login?rd=%2Fmembers%2Fpage%3Ftab%3D1"
    api = await person.get("/members/page", accept=JSON, cookies={COOKIE: session.value})
    assert api.status == 401
    assert api.json()["error"] == "unauthenticated"
    assert api.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
    assert upstream.hits == 1


async def test_json_login_answers_with_the_user_and_sets_the_session_cookie(
    backend, upstream, make_gateway
):
    spa = Browser(await make_gateway(login_config(upstream.url, backend())))
    reply = await spa.json_login("bob")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == {
        "user": {
            "username": "bob",
            "name": "Bob Example",
            "email": "bob@example.com",
            "roles": ["dev", "ops"],
        }
    }
    cookie = reply.cookie()
    assert cookie is not None and cookie.value
    reached = await spa.get("/members/x", accept=JSON)
    assert reached.status == 200
    assert reached.upstream.raw_path == "/members/x"
    # the session cookie was the only cookie: no Cookie header reaches the upstream at all
    assert reached.upstream.value("Cookie") is None


async def test_the_gateways_own_cookies_never_reach_the_upstream(backend, upstream, make_gateway):
    person = Browser(await make_gateway(login_config(upstream.url, backend())))
    await person.form_login("alice")
    assert person.session is not None and "gw_csrf" in person.cookies
    person.cookies["app_pref"] = "dark"
    reached = await person.get("/members/x", accept=JSON)
    assert reached.status == 200
    assert reached.upstream.value("Cookie") == "app_pref=dark"


async def test_json_logout_is_204_and_ends_the_session(backend, upstream, make_gateway):
    spa = Browser(await make_gateway(login_config(upstream.url, backend())))
    await spa.json_login("bob")
    old = spa.session
    assert old is not None
    reply = await spa.post(LOGOUT, json={}, accept=JSON)
    assert reply.status == 204
    assert reply.body == b""
    assert reply.headers["Clear-Site-Data"] == '"cookies"'
    cookie = reply.cookie()
    assert cookie is not None and cookie.expires_now
    after = await spa.userinfo(cookies={COOKIE: old})
    assert after.status == 401


async def test_the_logout_page_never_logs_out_by_itself(upstream, make_gateway):
    person = Browser(await make_gateway(login_config(upstream.url, _memory())))
    await person.json_login("dave")
    page = await person.get(LOGOUT)
    assert page.status == 200
    assert page.cookie() is None
    assert "You are signed in as <strong>dave</strong>." in page.text
    assert page.page.forms == [{"method": "post", "action": LOGOUT}]
    assert page.page.field("csrf") == person.cookies[CSRF_COOKIE]
    head = await person.request("HEAD", LOGOUT)
    assert head.status == 200
    assert (await person.userinfo()).json()["user"]["username"] == "dave"


async def test_userinfo_shows_the_signed_in_user_and_401_without_a_session(
    backend, upstream, clock, make_gateway
):
    client = await make_gateway(login_config(upstream.url, backend()))
    anonymous = await Browser(client).userinfo()
    assert anonymous.status == 401
    assert anonymous.json()["error"] == "unauthenticated"
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'

    spa = Browser(client)
    login_at = clock.now
    await spa.json_login("alice")
    clock.advance(5)
    reply = await spa.userinfo()
    assert reply.status == 200
    info = reply.json()
    assert info["user"] == {
        "username": "alice",
        "name": "Alice Example",
        "email": "alice@example.com",
        "roles": ["admin"],
    }
    assert info["session"]["created_at"] == int(login_at)
    # The idle timeout (30 min by default) ends it before the absolute one. Every backend
    # records activity only once the refresh interval (60 s) has passed: not yet here.
    assert info["session"]["expires_at"] == int(login_at + 1800)


async def test_opening_the_login_page_with_a_session_keeps_it(backend, upstream, make_gateway):
    # A link checker or an <img src="/.gateway/login"> must not sign anyone out.
    person = Browser(await make_gateway(login_config(upstream.url, backend())))
    await person.form_login("carol")
    old = person.session
    assert old is not None
    for method in ("GET", "HEAD"):
        page = await person.request(method, LOGIN + "?rd=%2Fmembers%2Fx")
        assert page.status == 200
        assert page.cookie() is None  # nothing cleared
    page = await person.get(LOGIN + "?rd=%2Fmembers%2Fx")
    assert "You are signed in as <strong>carol</strong>." in page.text
    assert "/members/x" in page.page.urls  # continue
    assert page.page.forms == [{"method": "post", "action": LOGOUT}]  # sign out
    assert page.page.field("csrf")
    assert (await person.userinfo(cookies={COOKIE: old})).status == 200
    assert (await person.get("/members/", cookies={COOKIE: old})).status == 200


async def test_the_login_page_with_a_dead_session_shows_the_form_and_clears_it(
    upstream, make_gateway
):
    person = Browser(await make_gateway(login_config(upstream.url, _memory())))
    page = await person.get(LOGIN, cookies={COOKIE: "x" * 43})
    assert page.status == 200
    assert page.page.field("username") == ""
    cleared = page.cookie()
    assert cleared is not None and cleared.expires_now


async def test_every_json_login_failure_is_the_same_401(upstream, make_gateway):
    throttle = {"max_failures": 2, "window": 300, "lockout": 900}
    client = await make_gateway(
        login_config(upstream.url, _memory(), throttle=throttle, trusted_proxies=LOOPBACK)
    )
    replies = []
    for n, (username, password) in enumerate(
        [
            ("nobody", "whatever"),
            ("alice", "wrong"),
            ("alice", "wrong again"),  # alice is now locked out
            ("alice", PASSWORDS["alice"]),  # the right password, while locked out
            ("", ""),
        ]
    ):
        spa = Browser(client, headers={"X-Forwarded-For": f"198.51.100.{n + 1}"})
        replies.append(await spa.json_login(username, password))
    for reply in replies:
        assert reply.status == 401
        assert reply.json() == FAILURE
        assert reply.cookie() is None
    assert len({r.body for r in replies}) == 1
    assert len({r.headers["Content-Type"] for r in replies}) == 1


async def test_every_form_login_failure_shows_the_same_message_and_a_fresh_form(
    upstream, make_gateway
):
    throttle = {"max_failures": 2, "window": 300, "lockout": 900}
    client = await make_gateway(
        login_config(upstream.url, _memory(), throttle=throttle, trusted_proxies=LOOPBACK)
    )
    attempts = [
        ("nobody", "whatever"),
        ("alice", "wrong"),
        ("alice", "wrong again"),
        ("alice", PASSWORDS["alice"]),
        ("", ""),
    ]
    errors = set()
    for n, (username, password) in enumerate(attempts):
        person = Browser(client, headers={"X-Forwarded-For": f"198.51.100.{n + 1}"})
        reply = await person.form_login(username, password, rd="/members/a")
        assert reply.status == 401
        assert reply.cookie() is None
        page = reply.page
        assert page.field("username") == username
        assert page.field("rd") == "/members/a"
        assert page.field("csrf") == person.cookies["gw_csrf"]
        errors.add(tuple(page.errors))
    assert errors == {("Invalid username or password.",)}


async def test_empty_or_missing_credentials_never_sign_in(upstream, make_gateway):
    client = await make_gateway(login_config(upstream.url, _memory()))
    person = Browser(client)
    form = await person.form_login("", "")
    assert form.status == 401
    assert form.page.errors == ["Invalid username or password."]
    token = person.cookies["gw_csrf"]
    only_csrf = await person.post(LOGIN, data={"csrf": token})
    assert only_csrf.status == 401
    assert only_csrf.page.errors == ["Invalid username or password."]
    blank_password = await person.json_login("alice", "")
    assert blank_password.status == 401
    assert blank_password.json() == FAILURE
    missing = await person.post(LOGIN, json={"username": "alice"}, accept=JSON)
    assert missing.status == 400
    assert missing.json()["error"] == "bad_request"
    for reply in (form, only_csrf, blank_password, missing):
        assert reply.cookie() is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"username": "alice", "password": ',
        b"\xff\xfe{}",
        b'["alice", "pw"]',
        b'{"username": "alice", "password": 12345}',
    ],
    ids=["truncated", "not-utf8", "array", "number-password"],
)
async def test_malformed_json_login_is_400(upstream, make_gateway, body):
    client = await make_gateway(login_config(upstream.url, _memory()))
    reply = await Browser(client).post(
        LOGIN, data=body, headers={"Content-Type": "application/json"}, accept=JSON
    )
    assert reply.status == 400
    assert reply.json()["error"] == "bad_request"
    assert reply.cookie() is None


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
async def test_an_oversized_login_body_is_413(upstream, make_gateway, content_type):
    client = await make_gateway(login_config(upstream.url, _memory()))
    person = Browser(client)
    token = await person.csrf()
    padding = "x" * 20_000
    if content_type == "application/json":
        body = json.dumps({"username": "alice", "password": PASSWORDS["alice"], "pad": padding})
    else:
        body = f"username=alice&password={PASSWORDS['alice']}&csrf={token}&pad={padding}"
    reply = await person.post(
        LOGIN, data=body.encode(), headers={"Content-Type": content_type}, accept=JSON
    )
    assert reply.status == 413
    assert reply.json()["error"] == "body_too_large"
    assert reply.cookie() is None


async def test_an_oversized_chunked_login_body_is_413(upstream, make_gateway):
    client = await make_gateway(login_config(upstream.url, _memory()))

    async def chunks():
        yield b'{"username": "alice", "password": "'
        for _ in range(10):
            yield b"p" * 4096
        yield b'"}'

    reply = await Browser(client).post(
        LOGIN, data=chunks(), headers={"Content-Type": "application/json"}, accept=JSON
    )
    assert reply.status == 413
    assert reply.cookie() is None


def _memory():
    return session_config("memory")
