"""CSRF, Origin checks, session fixation and ``rd`` validation, through the real endpoints."""

from __future__ import annotations

import pytest

from tests.configs import session_config
from tests.e2e.login.login_harness import (
    COOKIE,
    CSRF_COOKIE,
    JSON,
    LOGIN,
    LOGOUT,
    Browser,
    login_config,
)

CSRF_MESSAGE = "The form expired or came from another site. Please try again."


@pytest.fixture
async def client(upstream, make_gateway):
    return await make_gateway(login_config(upstream.url, session_config("memory")))


async def _signed_in(client) -> Browser:
    person = Browser(client)
    reply = await person.form_login("alice")
    assert reply.status == 303
    return person


# --- CSRF on the login form ---------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", "wrong", "other-browser", "no-cookie"])
async def test_a_login_form_without_this_browsers_csrf_token_is_refused(client, case):
    victim = Browser(client)
    own_token = await victim.csrf()
    other_token = await Browser(client).csrf()
    assert other_token != own_token
    submitted = {
        "missing": None,
        "wrong": "A" * 43,
        "other-browser": other_token,
        "no-cookie": other_token,
    }[case]
    if case == "no-cookie":
        victim.cookies.clear()

    reply = await victim.submit_login("alice", csrf=submitted, rd="/members/x")

    assert reply.status == 403
    assert reply.cookie() is None
    page = reply.page
    assert page.errors == [CSRF_MESSAGE]
    assert page.field("rd") == "/members/x"
    # the fresh form carries this browser's token: submitting it again signs in
    assert page.field("csrf") == victim.cookies[CSRF_COOKIE]
    assert (await victim.userinfo()).status == 401
    retry = await victim.submit_login("alice", csrf=page.field("csrf"), rd=page.field("rd"))
    assert retry.status == 303
    assert retry.headers["Location"] == "/members/x"


async def test_a_logout_form_without_a_valid_csrf_token_is_refused_and_the_session_lives(client):
    person = await _signed_in(client)
    for form in ({}, {"csrf": "B" * 43}, {"csrf": await Browser(client).csrf()}):
        reply = await person.post(LOGOUT, data=form, accept=JSON)
        assert reply.status == 403
        assert reply.json()["error"] == "forbidden"
        assert reply.cookie() is None
        assert "Clear-Site-Data" not in reply.headers
    assert (await person.userinfo()).status == 200
    assert (await person.get("/members/")).status == 200


async def test_a_cross_site_text_plain_logout_is_treated_as_a_form_and_refused(client):
    person = await _signed_in(client)
    reply = await person.post(
        LOGOUT, data=b'{"x": 1}', headers={"Content-Type": "text/plain"}, accept=JSON
    )
    assert reply.status == 403
    assert (await person.userinfo()).status == 200


async def test_json_logout_needs_no_csrf_token(client):
    spa = Browser(client)
    await spa.json_login("bob")
    assert CSRF_COOKIE not in spa.cookies
    reply = await spa.post(LOGOUT, json={}, accept=JSON)
    assert reply.status == 204
    assert (await spa.userinfo()).status == 401


# --- Origin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://gw.test.evil.example"])
async def test_a_foreign_origin_cannot_log_in(client, origin):
    person = Browser(client)
    token = await person.csrf()
    form = await person.submit_login("alice", csrf=token, headers={"Origin": origin})
    assert form.status == 403
    assert form.cookie() is None
    spa = await person.json_login("alice", headers={"Origin": origin})
    assert spa.status == 403
    assert spa.cookie() is None
    assert (await person.userinfo()).status == 401


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
async def test_a_foreign_origin_cannot_log_out(client, as_json):
    person = await _signed_in(client)
    foreign = {"Origin": "https://evil.example"}
    if as_json:
        reply = await person.post(LOGOUT, json={}, accept=JSON, headers=foreign)
    else:
        token = person.cookies[CSRF_COOKIE]
        reply = await person.post(LOGOUT, data={"csrf": token}, accept=JSON, headers=foreign)
    assert reply.status == 403
    assert reply.cookie() is None
    assert (await person.userinfo()).status == 200


async def test_our_own_origin_may_log_in_and_out(client):
    same = {"Origin": "http://gw.test"}
    person = Browser(client)
    token = await person.csrf()
    signed_in = await person.submit_login("alice", csrf=token, headers=same)
    assert signed_in.status == 303
    signed_out = await person.post(LOGOUT, data={"csrf": token}, headers=same)
    assert signed_out.status == 303
    assert (await person.userinfo()).status == 401


# --- Session fixation -----------------------------------------------------------------------


async def test_logging_in_again_issues_a_new_cookie_and_kills_the_old_one(
    backend, upstream, make_gateway
):
    person = Browser(await make_gateway(login_config(upstream.url, backend())))
    await person.form_login("alice")
    first = person.session
    assert first is not None
    # straight to the POST (no login page in between, which would end the session anyway)
    again = await person.submit_login("alice", csrf=person.cookies[CSRF_COOKIE])
    assert again.status == 303
    second = again.cookie()
    assert second is not None and second.value and second.value != first
    assert (await person.userinfo(cookies={COOKIE: first})).status == 401
    assert (await person.userinfo()).json()["user"]["username"] == "alice"


async def test_a_planted_session_cookie_never_becomes_the_victims_session(
    backend, upstream, make_gateway
):
    client = await make_gateway(login_config(upstream.url, backend()))
    attacker = Browser(client)
    await attacker.json_login("carol")
    planted = attacker.session
    assert planted is not None

    victim = Browser(client)
    token = await victim.csrf()
    victim.cookies[COOKIE] = planted
    reply = await victim.submit_login("alice", csrf=token)
    assert reply.status == 303
    issued = reply.cookie()
    assert issued is not None and issued.value != planted
    assert (await victim.userinfo()).json()["user"]["username"] == "alice"
    # the attacker's copy is worthless: neither alice nor even carol any more
    assert (await attacker.userinfo()).status == 401


async def test_an_attacker_chosen_cookie_value_is_replaced_at_login(
    backend, upstream, make_gateway
):
    victim = Browser(await make_gateway(login_config(upstream.url, backend())))
    token = await victim.csrf()
    chosen = "fixated" + "A" * 36
    victim.cookies[COOKIE] = chosen
    reply = await victim.submit_login("alice", csrf=token)
    assert reply.status == 303
    issued = reply.cookie()
    assert issued is not None and issued.value not in ("", chosen)
    assert (await victim.userinfo(cookies={COOKIE: chosen})).status == 401
    assert (await victim.userinfo()).status == 200


# --- rd ---------------------------------------------------------------------------------------

BAD_RD = [
    "//evil.example",
    "/\\evil.example",
    "/%2F%2Fevil",
    "/%09/evil",
    "https://evil.example",
    "javascript:alert(1)",
    "/\\t/evil",
    "/\t/evil",
    "///evil.example",
    "/%5Cevil.example",
    "/%252F%252Fevil",
    "/%0d%0aSet-Cookie:x=1",
    "evil.example",
    "",
]


@pytest.mark.parametrize("rd", BAD_RD)
async def test_an_unsafe_rd_sends_the_user_to_the_root(client, rd):
    person = Browser(client)
    page = await person.login_page(rd)
    assert page.page.field("rd") == "/"
    reply = await person.submit_login("alice", csrf=page.page.field("csrf"), rd=rd)
    assert reply.status == 303
    assert reply.headers["Location"] == "/"
    assert reply.cookie() is not None


@pytest.mark.parametrize("rd", ["/members/a/b?x=1&y=2", "/", "/members/%C3%A9t%C3%A9"])
async def test_a_safe_rd_is_honoured(client, rd):
    person = Browser(client)
    page = await person.login_page(rd)
    assert page.page.field("rd") == rd
    reply = await person.submit_login("alice", csrf=page.page.field("csrf"), rd=rd)
    assert reply.status == 303
    assert reply.headers["Location"] == rd


async def test_the_login_page_escapes_rd_into_the_hidden_field(client):
    rd = '/x"><script>alert(1)</script>'
    reply = await Browser(client).login_page(rd)
    assert "<script>" not in reply.text
    assert '"><' not in reply.text
    assert "&quot;&gt;&lt;script&gt;" in reply.text
    assert reply.page.field("rd") == rd


async def test_a_failed_login_escapes_the_username_it_shows_again(client):
    person = Browser(client)
    username = '"><img src=x onerror=alert(1)>'
    reply = await person.form_login(username, "wrong")
    assert reply.status == 401
    assert "<img" not in reply.text
    assert reply.page.field("username") == username


async def test_the_login_form_posts_to_the_gateway_only(client):
    page = (await Browser(client).login_page("/members")).page
    assert page.forms == [{"method": "post", "action": LOGIN}]
    assert {i["name"] for i in page.inputs} == {"csrf", "rd", "username", "password"}


async def test_a_raw_non_ascii_rd_is_percent_encoded_in_location(client):
    person = Browser(client)
    page = await person.login_page()
    reply = await person.submit_login("alice", csrf=page.page.field("csrf"), rd="/members/été")
    assert reply.status == 303
    assert reply.headers["Location"] == "/members/%C3%A9t%C3%A9"
