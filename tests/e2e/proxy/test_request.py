"""What the upstream receives: method, target, body and headers (CONTRACT section 4)."""

from __future__ import annotations

import re

import pytest

from tests.e2e.proxy.harness import (
    TRUSTED,
    UNTRUSTED,
    MakeGateway,
    ProxyUpstream,
    achunks,
    raw_exchange,
)

HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("GET", b""),
        ("POST", b"post body"),
        ("PUT", b"put body"),
        ("PATCH", b'{"patch": true}'),
        ("DELETE", b""),
        ("OPTIONS", b""),
        ("PURGE", b"custom method body"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_method_path_query_and_body_pass_through(
    make_gateway: MakeGateway, upstream: ProxyUpstream, method: str, body: bytes
) -> None:
    gw = await make_gateway()
    resp = await gw.request(method, "/a/b%20c/?q=1&q=2&e=%20x+y&&flag", data=body or None)
    assert resp.status == 200
    got = upstream.last
    assert got.method == method
    assert got.raw_path == "/a/b%20c/?q=1&q=2&e=%20x+y&&flag"
    assert got.body == body
    if body:
        assert got.value("Content-Length") == str(len(body))
        assert got.value("Transfer-Encoding") is None


async def test_no_body_adds_no_framing_or_default_headers(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    port = gw.port
    assert port is not None
    first, _ = await raw_exchange(
        port, b"GET /plain HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"
    )
    assert first.startswith(b"HTTP/1.1 200")
    # Only what the client sent plus the gateway's own headers: aiohttp adds nothing of its own.
    assert upstream.last.names == {
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    }


async def test_chunked_request_body_streams_chunked(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    resp = await gw.post("/chunked", data=achunks(iter([b"one ", b"two ", b"three"])))
    assert resp.status == 200
    got = upstream.last
    assert got.body == b"one two three"
    assert got.value("Transfer-Encoding") == "chunked"
    assert got.value("Content-Length") is None


async def test_empty_query_mark_is_dropped(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    assert gw.port is not None
    await raw_exchange(gw.port, b"GET /x? HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
    assert upstream.last.raw_path == "/x"


async def test_head_has_no_body_but_keeps_length(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    resp = await gw.head("/head")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(len("hello head"))
    assert resp.headers["X-Method"] == "HEAD"
    assert await resp.read() == b""
    assert upstream.last.method == "HEAD"


@pytest.mark.parametrize(
    ("strip", "path", "upstream_path", "prefix"),
    [
        ("/api", "/api/v1/x?y=1", "/v1/x?y=1", "/api"),
        ("/api", "/api", "/", "/api"),
        ("/api", "/api/", "/", "/api"),
        ("/api", "/apix/v1", "/apix/v1", None),
        (None, "/api/v1", "/api/v1", None),
    ],
    # A prefix written "/api/" is refused by the loader; strip_route_prefix's handling of it
    # is tested in tests/test_paths.py.
    ids=["nested", "exact", "trailing-slash", "not-a-segment", "no-strip"],
)
async def test_strip_prefix(
    make_gateway: MakeGateway,
    upstream: ProxyUpstream,
    strip: str | None,
    path: str,
    upstream_path: str,
    prefix: str | None,
) -> None:
    gw = await make_gateway(strip_prefix=strip)
    assert (await gw.get(path)).status == 200
    assert upstream.last.raw_path == upstream_path
    assert upstream.last.value("X-Forwarded-Prefix") == prefix


async def test_hop_by_hop_headers_are_removed(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    assert gw.port is not None
    head = (
        b"POST /hop HTTP/1.1\r\n"
        b"Host: gw.test\r\n"
        b"Connection: close, X-Named-Hop, x_underscored_hop\r\n"
        b"X-Named-Hop: 1\r\n"
        b"X-Underscored-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Proxy-Authorization: Basic cHJveHk6cHc=\r\n"
        b"Proxy-Anything: 1\r\n"
        b"TE: trailers\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"X-End-To-End: kept\r\n"
        b"\r\n"
    )
    first, _ = await raw_exchange(gw.port, head + b"5\r\nhello\r\n0\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    got = upstream.last
    assert got.body == b"hello"
    for name in (
        "x-named-hop",
        "x-underscored-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-anything",
        "te",
        "trailer",
    ):
        assert name not in got.names, name
    # None of the client's Connection tokens; the lean client's own "close" after a body.
    assert got.value("Connection") in (None, "close")
    assert got.value("Transfer-Encoding") == "chunked"  # re-framed by the gateway's client
    assert got.value("X-End-To-End") == "kept"


async def test_upgrade_is_removed_outside_websocket(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    assert gw.port is not None
    await raw_exchange(
        gw.port,
        b"GET /up HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade, close\r\nUpgrade: h2c\r\n\r\n",
    )
    assert "upgrade" not in upstream.last.names
    assert "connection" not in upstream.last.names


async def test_connection_header_cannot_strip_gateway_headers(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(add_headers={"Authorization": "Bearer gw-token"})
    resp = await gw.get(
        "/x", headers={"Connection": "X-Forwarded-For, Authorization, X-Request-ID, Host"}
    )
    assert resp.status == 200
    got = upstream.last
    assert got.value("Authorization") == "Bearer gw-token"
    assert got.value("X-Forwarded-For") == "127.0.0.1"
    assert got.value("X-Request-ID") is not None
    assert got.value("Host") is not None


async def test_client_authorization_is_never_forwarded(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    await gw.get("/x", headers={"Authorization": "Bearer forged"})
    assert upstream.last.value("Authorization") is None


async def test_client_authorization_is_replaced_by_the_gateways(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(add_headers={"Authorization": "Bearer minted"})
    await gw.get("/x", headers={"Authorization": "Bearer forged"})
    assert upstream.last.values("Authorization") == ["Bearer minted"]


async def test_underscore_header_variant_is_stripped(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    assert gw.port is not None
    await raw_exchange(
        gw.port,
        b"GET /x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n"
        b"X-Auth-User: mallory\r\nx_auth_user: mallory\r\nX_Auth_Email: m@evil\r\n"
        b"X-AUTH-ROLES: admin\r\nx-auth-anything: 1\r\nX-Authorized: kept\r\n\r\n",
    )
    got = upstream.last
    assert not {n for n in got.names if n.replace("_", "-").startswith("x-auth-")}
    assert got.value("X-Authorized") == "kept"


async def test_identity_headers_come_only_from_the_gateway(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(add_headers={"X-Auth-User": "alice", "X-Auth-Roles": "admin"})
    await gw.get("/x", headers={"X-Auth-User": "mallory", "x_auth_roles": "root"})
    got = upstream.last
    assert got.values("X-Auth-User") == ["alice"]
    assert got.values("X-Auth-Roles") == ["admin"]
    assert "x_auth_roles" not in got.names


@pytest.mark.parametrize(
    ("cookie", "forwarded"),
    [
        ('a=1; gw_session=secret; b="x y"', 'a=1; b="x y"'),
        ("gw_session=secret; a=1", "a=1"),
        ("a=1;gw_session=secret", "a=1"),
        ("gw_session=secret", None),
        ("a=%41; gw_session_other=1", "a=%41; gw_session_other=1"),
    ],
    ids=["middle", "first", "last-no-space", "only", "similar-name-kept"],
)
async def test_session_cookie_is_stripped_others_byte_exact(
    make_gateway: MakeGateway, upstream: ProxyUpstream, cookie: str, forwarded: str | None
) -> None:
    gw = await make_gateway()
    await gw.get("/x", headers={"Cookie": cookie})
    assert upstream.last.value("Cookie") == forwarded


async def test_untrusted_peer_forwarding_headers_are_replaced(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(trusted=UNTRUSTED)
    await gw.get(
        "/x",
        headers={
            "Host": "app.example.com",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Port": "443",
            "X_Forwarded_For": "7.7.7.7",
            "Forwarded": "for=6.6.6.6",
            "X-Real-IP": "6.6.6.6",
            "X-Request-ID": "client-chosen",
        },
    )
    got = upstream.last
    assert got.values("X-Forwarded-For") == ["127.0.0.1"]
    assert got.values("X-Forwarded-Proto") == ["http"]
    assert got.values("X-Forwarded-Host") == ["app.example.com"]
    request_id = got.value("X-Request-ID")
    assert request_id is not None and HEX32.fullmatch(request_id)
    for name in ("x-forwarded-port", "x_forwarded_for", "forwarded", "x-real-ip"):
        assert name not in got.names


async def test_trusted_peer_forwarding_headers_are_believed(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(trusted=TRUSTED)
    await gw.get(
        "/x",
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "app.example.com",
            "X-Request-ID": "req-123.abc_DEF",
        },
    )
    got = upstream.last
    assert got.values("X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    assert got.values("X-Forwarded-Proto") == ["https"]
    assert got.values("X-Forwarded-Host") == ["app.example.com"]
    assert got.values("X-Request-ID") == ["req-123.abc_DEF"]


async def test_trusted_peer_insane_request_id_is_regenerated(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway(trusted=TRUSTED)
    await gw.get("/x", headers={"X-Request-ID": "<script>alert(1)</script>"})
    request_id = upstream.last.value("X-Request-ID")
    assert request_id is not None and HEX32.fullmatch(request_id)


@pytest.mark.parametrize("preserve_host", [True, False])
async def test_preserve_host(
    make_gateway: MakeGateway, upstream: ProxyUpstream, preserve_host: bool
) -> None:
    gw = await make_gateway(preserve_host=preserve_host)
    await gw.get("/x", headers={"Host": "app.example.com"})
    expected = "app.example.com" if preserve_host else upstream.url.removeprefix("http://")
    assert upstream.last.values("Host") == [expected]


@pytest.mark.parametrize(
    "name",
    [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
        "X-Original-URL",
        "X-Rewrite-URL",
        "x_original_url",
    ],
)
async def test_method_and_url_override_headers_never_reach_the_upstream(
    make_gateway: MakeGateway, upstream: ProxyUpstream, name: str
) -> None:
    # A request authorised as GET /x must not act upstream as a DELETE or on another path.
    gw = await make_gateway()
    assert gw.port is not None
    head = f"GET /x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n{name}: DELETE /admin\r\n"
    await raw_exchange(gw.port, head.encode() + b"\r\n")
    got = upstream.last
    assert got.raw_path == "/x"
    assert name.lower().replace("_", "-") not in {n.replace("_", "-") for n in got.names}


async def test_an_upstream_cannot_set_the_gateways_own_cookies(
    make_gateway: MakeGateway, upstream: ProxyUpstream
) -> None:
    gw = await make_gateway()
    resp = await gw.get("/set-cookies")
    assert resp.status == 200
    set_cookies = resp.headers.getall("Set-Cookie")
    assert set_cookies == ["app_pref=dark; Path=/", "gw_session_other=kept; Path=/"]
