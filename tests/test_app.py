"""The request pipeline end to end: real gateway app in front of a real upstream on loopback."""

from __future__ import annotations

import json

import pytest

from tests.configs import config, route
from tests.support import MakeGateway, raw_request
from tests.upstreams import Upstream, echoed


def error_of(body: bytes) -> str:
    """The ``error`` of one of the gateway's own JSON answers."""
    code: str = json.loads(body)["error"]
    return code


@pytest.fixture
async def gateway(make_gateway: MakeGateway, upstream: Upstream):
    routes = [
        route("blocked", prefix="/admin", access="deny"),
        route("members", prefix="/members", access="authenticated"),
        route("api", prefix="/api", access="authenticated", unauthenticated="status"),
        route("forced", prefix="/forced", access="authenticated", unauthenticated="redirect"),
        route("exact", match={"path": "/only"}),
        route("public", prefix="/public"),
    ]
    return await make_gateway(config(upstream.url, routes))


async def test_public_route_reaches_the_upstream_with_the_normalised_path(gateway):
    status, _, body = await raw_request(gateway.port, "/public/a/./b/../c//d?x=1&y=%2F")
    assert status == 200
    assert echoed(body).raw_path == "/public/a/c/d?x=1&y=%2F"


@pytest.mark.parametrize(
    "path",
    ["/public/..%2fadmin", "/admin%2F", "/public/%5cadmin", "/%2e%2e/admin", "/public/x%00"],
)
async def test_refused_paths_get_400_and_never_reach_the_upstream(gateway, upstream, path):
    status, _, body = await raw_request(gateway.port, path, headers={"Accept": "application/json"})
    assert status == 400
    assert error_of(body) == "bad_request"
    assert upstream.hits == 0


@pytest.mark.parametrize("path", ["/admin", "/admin/", "/public/../admin", "//admin", "/%61dmin"])
async def test_deny_routes_answer_403_however_the_path_is_spelled(gateway, upstream, path):
    status, _, body = await raw_request(gateway.port, path, headers={"Accept": "application/json"})
    assert status == 403
    assert error_of(body) == "forbidden"
    assert upstream.hits == 0


async def test_no_matching_route_is_404(gateway):
    resp = await gateway.get("/elsewhere", headers={"Accept": "application/json"})
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


async def test_the_query_never_takes_part_in_matching(gateway):
    status, _, body = await raw_request(gateway.port, "/only?/public/x")
    assert status == 200
    assert echoed(body).raw_path == "/only?/public/x"
    resp = await gateway.get("/elsewhere?path=/public", headers={"Accept": "application/json"})
    assert resp.status == 404


async def test_error_pages_are_html_for_browsers(gateway):
    resp = await gateway.get("/admin", headers={"Accept": "text/html,application/xhtml+xml"})
    assert resp.status == 403
    assert resp.content_type == "text/html"
    body = await resp.text()
    assert "Access denied" in body
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "path", ["/.gateway/anything", "/%2egateway/anything", "//.gateway/x", "/public/../.gateway/x"]
)
async def test_reserved_prefix_is_never_proxied(gateway, upstream, path):
    status, _, body = await raw_request(gateway.port, path, headers={"Accept": "application/json"})
    assert status == 404
    assert error_of(body) == "not_found"
    assert upstream.hits == 0


async def test_anonymous_browser_navigation_is_redirected_to_login(gateway):
    resp = await gateway.get(
        "/members/page?a=1&b=2", headers={"Accept": "text/html"}, allow_redirects=False
    )
    assert resp.status == 302
    assert resp.headers["Location"] == "/.gateway/login?rd=%2Fmembers%2Fpage%3Fa%3D1%26b%3D2"


@pytest.mark.parametrize(
    ("method", "path", "accept"),
    [
        ("GET", "/members/x", "application/json"),
        ("POST", "/members/x", "text/html"),
        ("GET", "/api/x", "text/html"),
    ],
)
async def test_anonymous_api_callers_get_401_json(gateway, method, path, accept):
    resp = await gateway.request(method, path, headers={"Accept": accept}, allow_redirects=False)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
    if accept == "application/json":
        assert (await resp.json())["error"] == "unauthenticated"


async def test_redirect_mode_redirects_even_api_calls(gateway):
    resp = await gateway.post("/forced/x", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"].startswith("/.gateway/login?rd=%2Fforced%2Fx")


async def test_stylesheet_and_health_are_served_by_the_gateway(gateway):
    css = await gateway.get("/.gateway/static/gateway.css")
    assert css.status == 200
    assert css.content_type == "text/css"
    health = await gateway.get("/.gateway/healthz")
    assert (await health.json()) == {"status": "ok"}


@pytest.fixture
async def host_gateway(make_gateway, upstream):
    routes = [
        route(
            "admin-host",
            match={"host": "admin.example.com", "path_prefix": "/"},
            access="deny",
        ),
        route("java-admin", prefix="/admin", access="deny"),
        route("rest", prefix="/"),
    ]
    return await make_gateway(config(upstream.url, routes))


@pytest.mark.parametrize(
    "host",
    [
        "admin.example.com:abc",
        "admin.example.com:80:80",
        "admin.example.com..",
        "admin.example.com, x",
        "admin.example.com@x",
        "admin.example.com/x",
        "",
    ],
)
async def test_a_malformed_host_is_refused_not_routed_elsewhere(host_gateway, host):
    status, _, body = await raw_request(
        host_gateway.port, "/x", headers={"Host": host, "Accept": "application/json"}
    )
    assert status == 400
    assert error_of(body) == "bad_request"


@pytest.mark.parametrize(
    "host", ["admin.example.com", "ADMIN.example.com:8080", "admin.example.com."]
)
async def test_well_formed_hosts_still_meet_their_route(host_gateway, host):
    status, _, _ = await raw_request(
        host_gateway.port, "/x", headers={"Host": host, "Accept": "application/json"}
    )
    assert status == 403


@pytest.mark.parametrize(
    "path", ["/admin;jsessionid=1", "/admin;/users", "/admin;x/users", "/ADMIN;x".lower()]
)
async def test_path_parameters_do_not_slip_past_a_rule(host_gateway, path):
    # Tomcat, Jetty and Spring drop ;parameters: to them these are /admin and /admin/users.
    status, _, _ = await raw_request(
        host_gateway.port, path, headers={"Host": "app.example.com", "Accept": "application/json"}
    )
    assert status == 403


async def test_path_parameters_reach_the_upstream_unchanged(host_gateway):
    status, _, body = await raw_request(
        host_gateway.port, "/shop;jsessionid=ABC/cart?x=1", headers={"Host": "app.example.com"}
    )
    assert status == 200
    assert echoed(body).raw_path == "/shop;jsessionid=ABC/cart?x=1"


@pytest.mark.parametrize("path", ["/.GATEWAY/login", "/.gateway;x/login", "/.Gateway"])
async def test_the_reserved_prefix_is_ours_in_any_case_and_with_parameters(host_gateway, path):
    status, _, body = await raw_request(
        host_gateway.port, path, headers={"Host": "app.example.com", "Accept": "application/json"}
    )
    assert status == 404
    assert error_of(body) == "not_found"
