"""Access decisions per route for signed-in users and anonymous callers (CONTRACT section 3)."""

from __future__ import annotations

import pytest

from tests.configs import route, session_config
from tests.e2e.login.login_harness import (
    COOKIE,
    HTML,
    JSON,
    Browser,
    login_config,
    rules_route,
)

ROUTES = (
    route("public", prefix="/public", access="public"),
    route("members", prefix="/members", access="authenticated"),
    rules_route("admin", "/admin", roles=("admin", "ops")),
    rules_route("reports", "/reports", users=("carol",)),
    rules_route("mixed", "/mixed", roles=("dev",), users=("carol",)),
    route("closed", prefix="/closed", access="deny"),
    route("redir", prefix="/redir", access="authenticated", unauthenticated="redirect"),
    route("status", prefix="/status", access="authenticated", unauthenticated="status"),
)


@pytest.fixture
async def client(upstream, make_gateway):
    settings = login_config(upstream.url, session_config("memory"), routes=ROUTES)
    return await make_gateway(settings)


async def _as(client, username: str) -> Browser:
    person = Browser(client)
    assert (await person.json_login(username)).status == 200
    return person


async def _assert_forwarded(person: Browser, path: str, upstream) -> None:
    hits = upstream.hits
    reply = await person.get(path)
    assert reply.status == 200, reply.text
    assert reply.upstream.raw_path == path
    assert upstream.hits == hits + 1


async def _assert_denied(person: Browser, path: str, upstream) -> None:
    hits = upstream.hits
    page = await person.get(path, accept=HTML)
    assert page.status == 403
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Access denied" in page.text
    api = await person.get(path, accept=JSON)
    assert api.status == 403
    assert api.json()["error"] == "forbidden"
    assert upstream.hits == hits
    # denied is not signed out
    assert (await person.userinfo()).status == 200


@pytest.mark.parametrize("username", ["alice", "bob", "carol", "dave"])
async def test_authenticated_admits_any_signed_in_user(client, upstream, username):
    await _assert_forwarded(await _as(client, username), "/members/home", upstream)


@pytest.mark.parametrize(
    ("username", "allowed"),
    [("alice", True), ("bob", True), ("carol", False), ("dave", False)],
    ids=["admin-role", "second-listed-role", "no-roles", "unlisted-role"],
)
async def test_roles_admit_a_user_with_any_listed_role(client, upstream, username, allowed):
    person = await _as(client, username)
    if allowed:
        await _assert_forwarded(person, "/admin/panel", upstream)
    else:
        await _assert_denied(person, "/admin/panel", upstream)


@pytest.mark.parametrize(("username", "allowed"), [("carol", True), ("alice", False)])
async def test_users_admit_only_the_listed_users(client, upstream, username, allowed):
    person = await _as(client, username)
    if allowed:
        await _assert_forwarded(person, "/reports/q1", upstream)
    else:
        await _assert_denied(person, "/reports/q1", upstream)


@pytest.mark.parametrize(
    ("username", "allowed"), [("dave", True), ("carol", True), ("bob", True), ("alice", False)]
)
async def test_roles_and_users_together_admit_either(client, upstream, username, allowed):
    person = await _as(client, username)
    if allowed:
        await _assert_forwarded(person, "/mixed/x", upstream)
    else:
        await _assert_denied(person, "/mixed/x", upstream)


async def test_deny_refuses_even_an_admin_and_anonymous_callers(client, upstream):
    await _assert_denied(await _as(client, "alice"), "/closed/x", upstream)
    anonymous = await Browser(client).get("/closed/x", accept=HTML)
    assert anonymous.status == 403
    assert "Location" not in anonymous.headers


async def test_a_public_route_forwards_a_signed_in_user(client, upstream):
    person = await _as(client, "alice")
    person.cookies["pref"] = "1"
    reply = await person.get("/public/page")
    assert reply.status == 200
    assert reply.upstream.raw_path == "/public/page"
    assert reply.upstream.value("Cookie") is not None
    assert "pref=1" in reply.upstream.value("Cookie")
    assert COOKIE not in reply.upstream.value("Cookie")
    assert reply.cookie() is None  # the session is left alone


async def test_a_public_route_forwards_anonymous_callers(client, upstream):
    reply = await Browser(client).get("/public/page", accept=JSON)
    assert reply.status == 200
    assert reply.upstream.raw_path == "/public/page"
    assert upstream.hits == 1


async def test_anonymous_callers_on_a_rules_route_are_asked_to_sign_in(client, upstream):
    reply = await Browser(client).get("/admin/panel")
    assert reply.status == 302
    assert reply.headers["Location"] == "/.gateway/login?rd=%2Fadmin%2Fpanel"
    assert upstream.hits == 0


REDIRECT = "redirect"
STATUS = "status"


@pytest.mark.parametrize(
    ("path", "method", "accept", "expected"),
    [
        ("/members/x?a=1&b=2", "GET", HTML, REDIRECT),
        ("/members/x?a=1&b=2", "HEAD", HTML, REDIRECT),
        ("/members/x?a=1&b=2", "GET", "text/html", REDIRECT),
        ("/members/x?a=1&b=2", "POST", HTML, STATUS),
        ("/members/x?a=1&b=2", "PUT", HTML, STATUS),
        ("/members/x?a=1&b=2", "GET", JSON, STATUS),
        ("/members/x?a=1&b=2", "GET", "*/*", STATUS),
        ("/redir/x?a=1&b=2", "GET", JSON, REDIRECT),
        ("/redir/x?a=1&b=2", "POST", JSON, REDIRECT),
        ("/status/x?a=1&b=2", "GET", HTML, STATUS),
        ("/status/x?a=1&b=2", "HEAD", HTML, STATUS),
    ],
    ids=[
        "auto-get-html",
        "auto-head-html",
        "auto-get-bare-html",
        "auto-post-html",
        "auto-put-html",
        "auto-get-json",
        "auto-get-any",
        "redirect-get-json",
        "redirect-post-json",
        "status-get-html",
        "status-head-html",
    ],
)
async def test_unauthenticated_modes(client, upstream, path, method, accept, expected):
    reply = await Browser(client).request(method, path, accept=accept)
    if expected == REDIRECT:
        assert reply.status == 302
        prefix = path.split("/")[1]
        assert reply.headers["Location"] == f"/.gateway/login?rd=%2F{prefix}%2Fx%3Fa%3D1%26b%3D2"
    else:
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
        # CONTRACT section 3: whoever is not redirected gets the JSON answer, browsers included
        assert reply.headers["Content-Type"].startswith("application/json")
        if method != "HEAD":
            assert reply.json()["error"] == "unauthenticated"
    assert upstream.hits == 0
