"""Redis unreachable: requests that need a session fail closed with 503, never anonymous.

Two ways to lose Redis: a URL nobody listens on (from the start), and a private redis-server
stopped after a user signed in.
"""

from __future__ import annotations

from tests.configs import session_config
from tests.e2e.login.login_harness import (
    COOKIE,
    JSON,
    LOGOUT,
    READYZ,
    Browser,
    login_config,
)
from tests.redis_support import closed_port_url

WELL_FORMED = "Q" * 43  # looks like a session id, so the store must be asked


async def _down_gateway(upstream, make_gateway):
    session = session_config("redis", redis_url=closed_port_url(), redis_prefix="gwtest:down:")
    return await make_gateway(login_config(upstream.url, session))


def _assert_unavailable(reply) -> None:
    assert reply.status == 503
    assert reply.cookie() is None  # the session is not thrown away for a passing outage


async def test_a_protected_route_with_a_session_cookie_is_503_never_the_upstream(
    upstream, make_gateway
):
    person = Browser(await _down_gateway(upstream, make_gateway), cookies={COOKIE: WELL_FORMED})
    api = await person.get("/members/x", accept=JSON)
    _assert_unavailable(api)
    assert api.json()["error"] == "unavailable"
    page = await person.get("/members/x")
    _assert_unavailable(page)
    assert "Location" not in page.headers
    assert page.headers["Content-Type"].startswith("text/html")
    assert upstream.hits == 0


async def test_login_is_503_while_the_store_is_down(upstream, make_gateway):
    person = Browser(await _down_gateway(upstream, make_gateway))
    _assert_unavailable(await person.json_login("alice"))
    form = await person.form_login("alice")  # the login page itself still renders
    _assert_unavailable(form)


async def test_readyz_is_503_while_the_store_is_down(upstream, make_gateway):
    reply = await Browser(await _down_gateway(upstream, make_gateway)).get(READYZ, accept=JSON)
    assert reply.status == 503
    assert reply.json() == {"status": "not ready"}  # the details are the admin listener's


async def test_a_public_route_still_serves_while_the_store_is_down(upstream, make_gateway):
    client = await _down_gateway(upstream, make_gateway)
    anonymous = await Browser(client).get("/public/x", accept=JSON)
    assert anonymous.status == 200
    with_cookie = await Browser(client, cookies={COOKIE: WELL_FORMED}).get("/public/x")
    assert with_cookie.status == 200
    assert with_cookie.upstream.raw_path == "/public/x"
    assert WELL_FORMED not in (with_cookie.upstream.value("Cookie") or "")
    assert upstream.hits == 2


async def test_redis_stopping_mid_session_fails_closed(upstream, make_gateway, own_redis_server):
    session = session_config("redis", redis_url=own_redis_server.url, redis_prefix="gwtest:stop:")
    client = await make_gateway(login_config(upstream.url, session))
    person = Browser(client)
    assert (await person.json_login("alice")).status == 200
    assert (await person.get("/members/x")).status == 200
    assert (await person.get(READYZ, accept=JSON)).status == 200
    hits = upstream.hits

    own_redis_server.stop()

    _assert_unavailable(await person.get("/members/x"))
    _assert_unavailable(await person.get("/members/x", accept=JSON))
    _assert_unavailable(await person.userinfo())
    _assert_unavailable(await person.post(LOGOUT, json={}, accept=JSON))
    _assert_unavailable(await Browser(client).json_login("bob"))
    assert (await person.get(READYZ, accept=JSON)).status == 503
    assert upstream.hits == hits
    public = await person.get("/public/x")
    assert public.status == 200
    assert upstream.hits == hits + 1
    assert person.session is not None  # still held: nothing told the browser to drop it
