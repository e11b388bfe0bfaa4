"""Pages that explain (issue 12): who is refused and what to do about it, that a sign-out
happened, where to type after a failed attempt, and no login noise for the files browsers and
crawlers fetch on their own (``/favicon.ico``, ``/robots.txt``)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources

import pytest

from tests.configs import PASSWORDS, route, session_config
from tests.e2e.login.login_harness import (
    COOKIE,
    HTML,
    JSON,
    LOGIN,
    LOGOUT,
    Browser,
    Reply,
    login_config,
    rules_route,
)

ROUTES = (
    route("public", prefix="/public", access="public"),
    rules_route("admin", "/admin", roles=("admin",)),
    route("closed", prefix="/closed", access="deny"),
    route("site", prefix="/", access="authenticated"),
)
FAVICON = resources.files("gateway.pages").joinpath("favicon.ico").read_bytes()
SIGNED_OUT = "You have signed out."


@pytest.fixture
async def client(upstream, make_gateway):
    return await make_gateway(login_config(upstream.url, session_config("memory"), routes=ROUTES))


async def signed_in(client, username: str) -> Browser:
    person = Browser(client)
    assert (await person.form_login(username)).status == 303
    return person


class _Elements(HTMLParser):
    """Every element's tag and attributes, and the text outside of any attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {key: value or "" for key, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text += data


def elements(reply: Reply) -> _Elements:
    parser = _Elements()
    parser.feed(reply.text)
    parser.close()
    return parser


def forms(reply: Reply) -> list[dict[str, str]]:
    """Each form's hidden fields and its button's text, in page order."""
    found: list[dict[str, str]] = []
    for form in re.findall(r"<form\b.*?</form>", reply.text, re.DOTALL):
        assert '<form method="post" action="/.gateway/logout">' in form
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form))
        [button] = re.findall(r"<button [^>]*>([^<]*)</button>", form)
        found.append({**fields, "button": button})
    return found


def signed_out_notice(reply: Reply) -> list[dict[str, str]]:
    return [attrs for tag, attrs in elements(reply).elements if attrs.get("role") == "status"]


# --- the 403 page ------------------------------------------------------------------------------


async def test_a_refused_user_is_told_who_is_signed_in_and_offered_a_way_out(client, upstream):
    bob = await signed_in(client, "bob")
    page = await bob.get("/admin/panel?tab=2")
    assert page.status == 403
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-store"
    assert page.page.h1 == "Access denied"
    assert "You are signed in as <strong>bob</strong>. This account may not open this page." in (
        page.text
    )
    csrf = bob.cookies["gw_csrf"]
    assert forms(page) == [
        {"csrf": csrf, "rd": "/admin/panel?tab=2", "button": "Sign in as someone else"},
        {"csrf": csrf, "button": "Sign out"},
    ]
    assert upstream.hits == 0
    # An API client still gets the contract's JSON, and a refusal signs nobody out.
    api = await bob.get("/admin/panel", accept=JSON)
    assert api.status == 403
    assert api.json() == {"error": "forbidden", "message": "Access denied"}
    assert (await bob.userinfo()).json()["user"]["username"] == "bob"


async def test_the_403_page_gives_a_browser_without_a_csrf_cookie_one(client):
    bob = await signed_in(client, "bob")
    del bob.cookies["gw_csrf"]  # a browser restart drops it; the session cookie stays
    page = await bob.get("/admin/x")
    assert page.status == 403
    [first, second] = forms(page)
    assert first["csrf"] == second["csrf"] == bob.cookies["gw_csrf"]


async def test_sign_in_as_someone_else_ends_the_session_and_returns_to_the_page(client, upstream):
    bob = await signed_in(client, "bob")
    old_session = bob.session
    [switch, _] = forms(await bob.get("/admin/panel?tab=2"))

    signed_out = await bob.post(LOGOUT, data={"csrf": switch["csrf"], "rd": switch["rd"]})
    assert signed_out.status == 303
    location = signed_out.headers["Location"]
    assert location == "/.gateway/login?signed_out=1&rd=%2Fadmin%2Fpanel%3Ftab%3D2"
    assert bob.session is None
    assert (await bob.userinfo(cookies={COOKIE: str(old_session)})).status == 401

    login_page = await bob.get(location)
    assert login_page.status == 200
    assert re.search(r'<p class="notice" role="status">You have signed out.</p>', login_page.text)
    assert login_page.page.field("rd") == "/admin/panel?tab=2"
    alice = await bob.submit_login(
        "alice", csrf=login_page.page.field("csrf"), rd="/admin/panel?tab=2"
    )
    assert alice.status == 303
    assert alice.headers["Location"] == "/admin/panel?tab=2"
    reached = await bob.get("/admin/panel?tab=2", accept=JSON)
    assert reached.status == 200
    assert reached.upstream.raw_path == "/admin/panel?tab=2"


async def test_sign_out_on_the_403_page_lands_on_the_login_page_saying_so(client):
    bob = await signed_in(client, "bob")
    [_, sign_out] = forms(await bob.get("/admin/x"))
    reply = await bob.post(LOGOUT, data={"csrf": sign_out["csrf"]})
    assert reply.status == 303
    assert reply.headers["Location"] == "/.gateway/login?signed_out=1"
    assert bob.session is None
    page = await bob.get(reply.headers["Location"])
    assert SIGNED_OUT in page.text
    assert page.page.field("rd") == "/"


@pytest.mark.parametrize(
    "rd",
    ["//evil.example/x", "https://evil.example/", "/\\evil.example", "/%2F%2Fevil.example"],
    ids=["protocol-relative", "absolute", "backslash", "encoded-slashes"],
)
async def test_sign_out_never_sends_the_browser_to_another_site(client, rd):
    bob = await signed_in(client, "bob")
    reply = await bob.post(LOGOUT, data={"csrf": bob.cookies["gw_csrf"], "rd": rd})
    assert reply.status == 303
    assert reply.headers["Location"] == "/.gateway/login?signed_out=1&rd=%2F"


async def test_the_refused_path_is_never_shown_as_text_on_the_403_page(client):
    # A link can choose the path; the page must not read out words of the link's choosing.
    bob = await signed_in(client, "bob")
    page = await bob.get("/admin/Call-555-0100-to-restore-access")
    assert page.status == 403
    assert "555-0100" not in elements(page).text
    assert [form.get("rd") for form in forms(page)] == [
        "/admin/Call-555-0100-to-restore-access",
        None,
    ]


async def test_a_caller_without_a_session_gets_the_plain_403(upstream, make_gateway):
    # Nobody to sign out: an API token holder, and an anonymous caller on a closed route.
    routes = [
        rules_route("admin", "/admin", roles=("admin",)) | {"accept_bearer": True},
        route("closed", prefix="/closed", access="deny"),
    ]
    settings = login_config(
        upstream.url,
        session_config("memory"),
        routes=routes,
        tokens={"api_tokens": {"enabled": True}},
    )
    client = await make_gateway(settings)
    api = Browser(client)
    credentials = {"username": "bob", "password": PASSWORDS["bob"]}
    issued = await api.post("/.gateway/token", json=credentials, accept=JSON)
    token = issued.json()["access_token"]
    page = await api.get("/admin/x", headers={"Authorization": f"Bearer {token}"})
    assert page.status == 403
    assert page.page.h1 == "403"
    assert "bob" not in page.text
    assert "<form" not in page.text
    closed = await Browser(client).get("/closed/x")
    assert closed.status == 403
    assert "<form" not in closed.text and "signed in" not in closed.text


# --- the login and logout pages ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("signed_out=1", True),
        ("signed_out=1&rd=%2Fmembers", True),
        ("", False),
        ("signed_out=0", False),
        ("signed_out=%3Cb%3EYour+account+is+locked%3C%2Fb%3E", False),
    ],
    ids=["flag", "flag-and-rd", "none", "other-value", "text-in-the-flag"],
)
async def test_the_login_page_says_you_have_signed_out_only_for_the_fixed_flag(
    client, query, shown
):
    page = await Browser(client).get(f"{LOGIN}?{query}")
    assert page.status == 200
    assert (SIGNED_OUT in page.text) is shown
    assert len(signed_out_notice(page)) == int(shown)
    assert "locked" not in page.text


async def test_with_a_live_session_the_signed_out_flag_is_not_believed(client):
    carol = await signed_in(client, "carol")
    page = await carol.get(f"{LOGIN}?signed_out=1")
    assert "You are signed in as <strong>carol</strong>." in page.text
    assert SIGNED_OUT not in page.text


def autofocused(reply: Reply) -> list[str]:
    return [input_["id"] for input_ in reply.page.inputs if "autofocus" in input_]


async def test_after_a_failed_login_the_password_field_has_the_focus(client):
    person = Browser(client)
    fresh = await person.login_page()
    assert autofocused(fresh) == ["username"]
    failed = await person.submit_login("alice", "wrong-password", csrf=fresh.page.field("csrf"))
    assert failed.status == 401
    assert autofocused(failed) == ["password"]
    [password] = [i for i in failed.page.inputs if i.get("id") == "password"]
    assert password["aria-describedby"] == "login-error"
    [error] = [a for _, a in elements(failed).elements if a.get("id") == "login-error"]
    assert error["role"] == "alert"
    # An attempt without a username leaves the focus on the username.
    nameless = await person.post(
        LOGIN, data={"csrf": fresh.page.field("csrf"), "username": "", "password": "x"}
    )
    assert autofocused(nameless) == ["username"]


async def test_the_logout_page_without_a_session_offers_to_sign_in_not_to_sign_out(client):
    page = await Browser(client).get(LOGOUT)
    assert page.status == 200
    assert page.page.h1 == "Not signed in"
    assert "You are not signed in" in page.text
    assert page.page.forms == []
    assert "<button" not in page.text
    assert LOGIN in page.page.urls


# --- /favicon.ico and /robots.txt --------------------------------------------------------------


@pytest.mark.parametrize("accept", [HTML, JSON, "*/*"], ids=["browser", "api", "any"])
async def test_an_anonymous_favicon_fetch_gets_the_gateways_icon(client, upstream, accept):
    for method in ("GET", "HEAD"):
        reply = await Browser(client).request(method, "/favicon.ico?v=2", accept=accept)
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "image/x-icon"
        assert reply.headers["Cache-Control"] == "no-cache"
        assert reply.body == (FAVICON if method == "GET" else b"")
        assert "Location" not in reply.headers and "WWW-Authenticate" not in reply.headers
    assert upstream.hits == 0


async def test_an_anonymous_robots_fetch_gets_a_robots_txt_that_disallows_everything(
    client, upstream
):
    reply = await Browser(client).get("/robots.txt", accept="*/*")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert "User-agent: *\nDisallow: /\n" in reply.text
    assert upstream.hits == 0


async def test_signed_in_callers_get_the_apps_own_favicon_and_robots(client, upstream):
    alice = await signed_in(client, "alice")
    for path in ("/favicon.ico", "/robots.txt"):
        reply = await alice.get(path, accept="*/*")
        assert reply.status == 200
        assert reply.upstream.raw_path == path
    assert upstream.hits == 2


async def test_only_a_get_or_head_of_the_exact_path_gets_the_stand_in(client, upstream):
    anonymous = Browser(client)
    assert (await anonymous.post("/favicon.ico", accept=JSON)).status == 401
    assert (await anonymous.get("/favicon.ico/x", accept=JSON)).status == 401
    assert (await anonymous.get("/static/favicon.ico", accept=JSON)).status == 401
    assert upstream.hits == 0


async def test_a_public_route_passes_the_apps_own_robots_txt(upstream, make_gateway):
    routes = [
        route("robots", match={"path": "/robots.txt"}, access="public"),
        route("site", prefix="/", access="authenticated", unauthenticated="status"),
    ]
    client = await make_gateway(login_config(upstream.url, session_config("memory"), routes=routes))
    robots = await Browser(client).get("/robots.txt", accept="*/*")
    assert robots.status == 200
    assert robots.upstream.raw_path == "/robots.txt"
    # unauthenticated: status changes nothing for the stand-in
    favicon = await Browser(client).get("/favicon.ico", accept="*/*")
    assert favicon.status == 200
    assert favicon.body == FAVICON
    assert upstream.hits == 1


async def test_the_gateways_pages_name_its_own_favicon(client):
    page = await Browser(client).get(LOGIN)
    assert "/.gateway/static/favicon.ico" in page.page.urls
    icon = await Browser(client).get("/.gateway/static/favicon.ico", accept="*/*")
    assert icon.status == 200
    assert icon.body == FAVICON
    assert icon.headers["Cache-Control"] == "public, max-age=3600"
