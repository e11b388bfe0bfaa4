"""What the client gets back in Location, Content-Location and Set-Cookie: the upstream's own
origin pointed at public_url, and the upstream's paths mapped back under the route's stripped
prefix (the rules themselves, attacks included, are tested in tests/test_rewrite.py)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.e2e.proxy.harness import PUBLIC_URL, MakeGateway, ProxyUpstream


async def test_location_to_upstream_origin_is_rewritten(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    to = f"{upstream.url}/login?next=%2Fhome"
    resp = await gw.get("/redirect?to=" + quote(to, safe=""), allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == f"{PUBLIC_URL}/login?next=%2Fhome"
    assert resp.headers["Content-Location"] == f"{PUBLIC_URL}/login?next=%2Fhome"


async def test_location_gets_the_stripped_prefix_back(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(strip_prefix="/api")
    to = f"{upstream.url}/v1/done"
    resp = await gw.get("/api/redirect?to=" + quote(to, safe=""), allow_redirects=False)
    assert resp.headers["Location"] == f"{PUBLIC_URL}/api/v1/done"


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("/v1/done?x=%2F1#top", "/api/v1/done?x=%2F1#top"),
        ("/api/v1/done", "/api/v1/done"),
        ("../../../v1", "/api/v1"),
        ("/..//evil.example/", "/api/evil.example/"),
        ("https://elsewhere.example/x", "https://elsewhere.example/x"),
    ],
    ids=["absolute-path", "already-prefixed", "relative-climbing", "dot-slash-host", "foreign"],
)
async def test_paths_in_location_stay_in_the_route(
    make_gateway: MakeGateway, to: str, expected: str
) -> None:
    gw = await make_gateway(strip_prefix="/api")
    resp = await gw.get("/api/redirect?to=" + quote(to, safe=""), allow_redirects=False)
    assert resp.headers["Location"] == expected
    assert resp.headers["Content-Location"] == expected


async def test_location_on_the_clients_host_gets_the_prefix(make_gateway: MakeGateway) -> None:
    """An app that builds its URLs from Host (preserve_host) writes the gateway's host."""
    gw = await make_gateway(strip_prefix="/api", preserve_host=True)
    host = gw.make_url("/").authority
    to = f"http://{host}/v1/done"
    resp = await gw.get("/api/redirect?to=" + quote(to, safe=""), allow_redirects=False)
    assert resp.headers["Location"] == f"http://{host}/api/v1/done"


async def test_set_cookie_path_gets_the_stripped_prefix(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(strip_prefix="/api")
    cookies = ["a=1; Path=/; HttpOnly", "b=2; Path=/v1", "c=3; Path=/api/x", "d=4"]
    query = "&".join("set=" + quote(cookie, safe="") for cookie in cookies)
    resp = await gw.get("/api/cookie?" + query)
    assert resp.headers.getall("Set-Cookie") == [
        "a=1; Path=/api; HttpOnly",
        "b=2; Path=/api/v1",
        "c=3; Path=/api/x",
        "d=4",
    ]


@pytest.mark.parametrize("to", ["https://elsewhere.example/x?y=1", "/relative/path", "x/y"])
async def test_other_locations_are_left_alone(make_gateway: MakeGateway, to: str) -> None:
    gw = await make_gateway()
    resp = await gw.get("/redirect?to=" + quote(to, safe=""), allow_redirects=False)
    assert resp.headers["Location"] == to


async def test_cookies_are_left_alone_without_a_prefix(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    resp = await gw.get("/cookie?set=" + quote("a=1; Path=/", safe=""))
    assert resp.headers["Set-Cookie"] == "a=1; Path=/"


@pytest.mark.parametrize("to", ["//xn--a/x", "https://xn--/", "http://xn--zz.example/"])
async def test_a_location_with_an_undecodable_host_is_passed_on(
    make_gateway: MakeGateway, to: str
) -> None:
    """Not a 500: a host no IDNA decoder accepts is nobody's we know, passed on as it came."""
    gw = await make_gateway(strip_prefix="/api")
    resp = await gw.get("/api/redirect?to=" + quote(to, safe=""), allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == to
    assert resp.headers["Content-Location"] == to
