"""Location / Content-Location pointing at the upstream's own origin are rewritten to public_url."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from gateway.proxy import _rewrite_location
from tests.e2e.proxy.harness import PUBLIC_URL, MakeGateway, ProxyUpstream

UP = "http://10.1.2.3:9000"


@pytest.mark.parametrize(
    ("location", "upstream_url", "prefix", "expected"),
    [
        (f"{UP}/login?next=/a%2Fb#frag", UP, "", f"{PUBLIC_URL}/login?next=/a%2Fb#frag"),
        (f"{UP}", UP, "", f"{PUBLIC_URL}/"),
        (f"{UP}?q=1", UP, "", f"{PUBLIC_URL}/?q=1"),
        ("HTTP://10.1.2.3:9000/x", UP, "", f"{PUBLIC_URL}/x"),
        ("//10.1.2.3:9000/x", UP, "", f"{PUBLIC_URL}/x"),
        ("http://user@10.1.2.3:9000/x", UP, "", f"{PUBLIC_URL}/x"),
        (f"{UP}/v1/login", UP, "/api", f"{PUBLIC_URL}/api/v1/login"),
        ("http://app.internal/base/x", "http://app.internal/base", "", f"{PUBLIC_URL}/x"),
        ("http://app.internal:80/base", "http://app.internal/base", "/p", f"{PUBLIC_URL}/p/"),
        ("http://app.internal/basement", "http://app.internal/base", "", f"{PUBLIC_URL}/basement"),
        ("http://10.1.2.3:9001/x", UP, "", "http://10.1.2.3:9001/x"),
        ("https://10.1.2.3:9000/x", UP, "", "https://10.1.2.3:9000/x"),
        ("https://other.example/x", UP, "", "https://other.example/x"),
        ("/login", UP, "/api", "/login"),
        ("login", UP, "", "login"),
        ("http://[bad/x", UP, "", "http://[bad/x"),
    ],
    ids=[
        "own-origin",
        "bare-origin",
        "origin-query",
        "scheme-case",
        "scheme-relative",
        "userinfo",
        "prefix-re-added",
        "base-path-removed",
        "default-port-base-only",
        "base-path-not-a-segment",
        "other-port",
        "other-scheme",
        "foreign",
        "root-relative-untouched",
        "relative-untouched",
        "malformed-untouched",
    ],
)
def test_rewrite_location(location: str, upstream_url: str, prefix: str, expected: str) -> None:
    assert _rewrite_location(location, upstream_url, PUBLIC_URL, prefix) == expected


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


@pytest.mark.parametrize("to", ["https://elsewhere.example/x?y=1", "/relative/path"])
async def test_other_locations_are_left_alone(make_gateway: MakeGateway, to: str) -> None:
    gw = await make_gateway()
    resp = await gw.get("/redirect?to=" + quote(to, safe=""), allow_redirects=False)
    assert resp.headers["Location"] == to
