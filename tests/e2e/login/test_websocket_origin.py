"""WebSockets authenticated by the session cookie only open from the gateway's own origin."""

from __future__ import annotations

import aiohttp
import pytest

from tests.configs import route, session_config
from tests.e2e.login.login_harness import COOKIE, Browser, login_config

PUBLIC_URL = "http://gw.test"


@pytest.fixture
async def signed_in(upstream, make_gateway):
    live = route("live", prefix="/", access="authenticated", websocket=True)
    client = await make_gateway(login_config(upstream.url, session_config("memory"), routes=[live]))
    browser = Browser(client)
    assert (await browser.json_login("alice")).status == 200
    return client, browser.cookies[COOKIE]


@pytest.mark.parametrize("origin", [PUBLIC_URL, None])
async def test_a_websocket_from_our_origin_or_a_non_browser_opens(signed_in, origin):
    client, session = signed_in
    headers = {"Cookie": f"{COOKIE}={session}"}
    if origin is not None:
        headers["Origin"] = origin
    async with client.ws_connect("/ws", headers=headers) as ws:
        await ws.send_str("hi")
        assert (await ws.receive_str()) == "hi"  # echoed by the upstream


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://gw.test.evil.example"])
async def test_a_websocket_started_by_another_site_is_refused(signed_in, origin):
    client, session = signed_in
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws", headers={"Cookie": f"{COOKIE}={session}", "Origin": origin})
    assert refused.value.status == 403
