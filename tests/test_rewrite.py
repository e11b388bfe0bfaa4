"""gateway.rewrite: the upstream's Location, Content-Location and Set-Cookie Path mapped back
under the route's prefix, and the attacks that mapping must not let through."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from yarl import URL

from gateway.plan import RESERVED_PREFIX
from gateway.rewrite import (
    GATEWAY_PREFIX,
    Mount,
    rewrite_location,
    rewrite_response_headers,
    rewrite_set_cookie,
)

UP = "http://10.1.2.3:9000"
PUBLIC = "https://gw.example"


def mount(**changes: Any) -> Mount:
    """``/pypi/simple`` on https://gw.example, routed to ``UP`` with ``strip_prefix: /pypi``."""
    fields: dict[str, Any] = {
        "upstream_url": UP,
        "public_url": PUBLIC,
        "prefix": "/pypi",
        "upstream_path": "/simple",
        "request_host": "gw.example",
        "request_scheme": "https",
    }
    return Mount(**{**fields, **changes})


def test_the_reserved_prefix_is_the_gateways() -> None:
    assert GATEWAY_PREFIX == RESERVED_PREFIX


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/simple/", "/pypi/simple/"),
        ("/", "/pypi/"),
        ("/simple/?q=a%2Fb&x=1#frag", "/pypi/simple/?q=a%2Fb&x=1#frag"),
        ("/a/../b/./c", "/pypi/b/c"),
        ("/pypi/simple/", "/pypi/simple/"),
        ("/pypi", "/pypi"),
        ("/pypix/y", "/pypi/pypix/y"),
        ("/PYPI/y", "/pypi/PYPI/y"),
        ("/.gateway/logout", "/.gateway/logout"),
        ("/.GATEWAY/login?rd=/pypi/", "/.GATEWAY/login?rd=/pypi/"),
        ("/.gatewayx", "/pypi/.gatewayx"),
    ],
    ids=[
        "absolute-path",
        "root",
        "query-and-fragment-kept",
        "dot-segments-resolved",
        "already-prefixed-not-doubled",
        "prefix-itself",
        "prefix-is-per-segment",
        "prefix-is-case-sensitive",
        "gateway-own-page",
        "gateway-own-page-any-case",
        "not-the-gateway-prefix",
    ],
)
def test_absolute_paths_get_the_prefix(location: str, expected: str) -> None:
    assert rewrite_location(location, mount()) == expected


@pytest.mark.parametrize(
    ("location", "upstream_path", "expected"),
    [
        ("simple/", "/", "/pypi/simple/"),
        ("simple/", "/simple", "/pypi/simple/"),
        ("demo/?q=1#top", "/simple/", "/pypi/simple/demo/?q=1#top"),
        ("../other/", "/simple/demo/", "/pypi/simple/other/"),
        ("./x", "/a/b", "/pypi/a/x"),
        ("../../../../x", "/a/b", "/pypi/x"),
        ("?page=2", "/simple/", "?page=2"),
        ("#top", "/simple/", "#top"),
        ("", "/simple/", ""),
    ],
    ids=[
        "from-the-route-root",
        "sibling",
        "child-with-query",
        "parent",
        "dot",
        "dot-dot-cannot-climb-out",
        "same-document-query",
        "same-document-fragment",
        "empty",
    ],
)
def test_relative_references_are_resolved_as_the_app_meant(
    location: str, upstream_path: str, expected: str
) -> None:
    assert rewrite_location(location, mount(upstream_path=upstream_path)) == expected


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (f"{UP}/simple/", f"{PUBLIC}/pypi/simple/"),
        (f"{UP}", f"{PUBLIC}/pypi/"),
        (f"{UP}?q=1#f", f"{PUBLIC}/pypi/?q=1#f"),
        (f"{UP}/pypi/x", f"{PUBLIC}/pypi/x"),
        ("//10.1.2.3:9000/x", f"{PUBLIC}/pypi/x"),
        ("HTTP://10.1.2.3:9000/x", f"{PUBLIC}/pypi/x"),
        ("http://user@10.1.2.3:9000/x", f"{PUBLIC}/pypi/x"),
        ("https://gw.example/simple/?q=1#f", "https://gw.example/pypi/simple/?q=1#f"),
        ("http://gw.example/simple/", "http://gw.example/pypi/simple/"),
        ("https://GW.example:443/simple/", "https://GW.example:443/pypi/simple/"),
        ("https://gw.example/pypi/simple/", "https://gw.example/pypi/simple/"),
        ("//gw.example/simple/", "//gw.example/pypi/simple/"),
        ("https://gw.example:8443/x", "https://gw.example:8443/x"),
        ("https://other.example/simple/", "https://other.example/simple/"),
        ("http://10.1.2.3:9001/x", "http://10.1.2.3:9001/x"),
        ("https://10.1.2.3:9000/x", "https://10.1.2.3:9000/x"),
        ("mailto:someone@gw.example", "mailto:someone@gw.example"),
        ("http://[bad/x", "http://[bad/x"),
    ],
    ids=[
        "upstream-origin",
        "upstream-bare-origin",
        "upstream-query-fragment",
        "upstream-already-prefixed",
        "upstream-scheme-relative",
        "upstream-scheme-case",
        "upstream-userinfo",
        "request-host",
        "request-host-app-unaware-of-https",
        "request-host-default-port",
        "request-host-already-prefixed",
        "request-host-scheme-relative",
        "request-host-other-port-untouched",
        "foreign-untouched",
        "upstream-other-port-untouched",
        "upstream-other-scheme-untouched",
        "other-scheme-untouched",
        "malformed-untouched",
    ],
)
def test_absolute_urls_on_our_hosts_only(location: str, expected: str) -> None:
    assert rewrite_location(location, mount()) == expected


def test_public_url_host_counts_as_ours_on_another_request_host() -> None:
    other_host = mount(request_host="pypi.internal.example")
    assert rewrite_location("https://gw.example/x", other_host) == "https://gw.example/pypi/x"
    assert rewrite_location("https://pypi.internal.example/x", other_host) == (
        "https://pypi.internal.example/pypi/x"
    )


@pytest.mark.parametrize(
    "location",
    [
        "/..",
        "/../../etc",
        "/%2e%2e/%2E%2E/x",
        "/.%2e/x",
        "/pypi/../admin",
        "/pypi/%2e%2e/admin",
        "/pypi/..\\admin",
        "/pypi/.\t./admin",
        "\\..\\admin",
        "/.//evil.example",
        "/pypi/..//evil.example",
        "..",
        "../../..",
        "..\\..\\x",
        "%2e%2e/%2e%2e/x",
        ".\t./.\t./x",
    ],
)
def test_paths_never_leave_the_route(location: str) -> None:
    out = rewrite_location(location, mount(upstream_path="/simple/demo/"))
    assert out.startswith("/pypi/") or out == "/pypi", out
    assert "//" not in out and "\\" not in out and "/." not in out, out


@pytest.mark.parametrize(
    "location",
    [
        "//evil.example/x",
        "/\\evil.example/x",
        "\\\\evil.example/x",
        "\\/evil.example",
        " //evil.example",
        "/\t/evil.example",
        "https://evil.example/",
        "https:/\\evil.example/",
        "https://gw.example.evil.example/",
        "https://evil.example\\@gw.example/",
        "javascript:alert(1)",
    ],
)
def test_foreign_locations_are_never_rewritten(location: str) -> None:
    """Open redirects stay the upstream's own: a URL naming another host is passed on as it
    came (a browser would go there with or without the gateway), never mapped onto our host
    nor anything mapped onto theirs."""
    out = rewrite_location(location, mount())
    assert out == location


@pytest.mark.parametrize(
    "location",
    ["//xn--a/x", "https://xn--/", "http://xn--zz.example/", "//gw.example@xn--a/"],
)
def test_hosts_that_are_no_valid_idna_are_passed_on(location: str) -> None:
    """A host no IDNA decoder accepts (an app's open redirect to a link's ``next``) names
    neither the upstream nor the gateway: passed on as it came, never an error."""
    assert rewrite_location(location, mount()) == location
    assert rewrite_location(location, mount(prefix="")) == location


def test_long_non_ascii_hosts_cost_no_idna_work() -> None:
    """A response full of ``Location: //<16 KiB of non-ASCII>`` (the most an upstream head
    holds) is passed on at once: such hosts are never IDNA-encoded only to be compared."""
    headers = [("Location", "//" + "\xe4" * 16_000 + str(i)) for i in range(50)]
    expected = list(headers)
    started = time.perf_counter()
    rewrite_response_headers(headers, mount())
    assert time.perf_counter() - started < 1.0
    assert headers == expected


def test_backslash_ends_the_host_as_browsers_read_it() -> None:
    """A browser ends the host at "\\": gw.example\\@evil.example is gw.example with the path
    /@evil.example, so that one is ours (and written without the backslash, so that no other
    URL parser can read evil.example as its host), and evil.example\\@gw.example is not."""
    assert rewrite_location("https://gw.example\\@evil.example/", mount()) == (
        "https://gw.example/pypi/@evil.example/"
    )
    assert rewrite_location("https://evil.example\\@gw.example/", mount()) == (
        "https://evil.example\\@gw.example/"
    )


def test_paths_produced_never_start_with_two_slashes() -> None:
    """Even with no prefix, an upstream base path taken off never leaves //host."""
    base_only = mount(upstream_url=f"{UP}/base", prefix="", upstream_path="/x")
    for location in ("/base//evil.example/x", "/base/.//evil.example", "/base/..//evil.example"):
        out = rewrite_location(location, base_only)
        assert out.startswith("/") and not out.startswith("//"), (location, out)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/base/x", "/pypi/x"),
        ("/base", "/pypi/"),
        ("/basement", "/pypi/basement"),
        ("/other", "/pypi/other"),
        ("x", "/pypi/sub/x"),
        (f"{UP}/base/x?q", f"{PUBLIC}/pypi/x?q"),
        ("https://gw.example/base/x", "https://gw.example/pypi/x"),
    ],
)
def test_upstream_base_path_is_taken_off(location: str, expected: str) -> None:
    """``url: http://10.1.2.3:9000/base``: the app saw /base/sub/y for /pypi/sub/y."""
    based = mount(upstream_url=f"{UP}/base", upstream_path="/sub/y")
    assert rewrite_location(location, based) == expected


@pytest.mark.parametrize(
    "location",
    ["/simple/", "simple/", "../x", "https://gw.example/x", "/..//evil.example"],
)
def test_without_prefix_only_the_upstream_origin_changes(location: str) -> None:
    plain = mount(prefix="", upstream_path="/pypi/simple")
    assert rewrite_location(location, plain) == location
    assert rewrite_location(f"{UP}/x", plain) == f"{PUBLIC}/x"


def test_ignore_case_route_keeps_paths_under_the_prefix_in_any_case() -> None:
    insensitive = mount(prefix="/PyPI", ignore_case=True)
    assert rewrite_location("/pypi/simple/", insensitive) == "/pypi/simple/"
    assert rewrite_location("/simple/", insensitive) == "/PyPI/simple/"


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ("sid=1; Path=/; HttpOnly", "sid=1; Path=/pypi; HttpOnly"),
        ("sid=1; Path=/x", "sid=1; Path=/pypi/x"),
        ("sid=1; Path=/x/", "sid=1; Path=/pypi/x/"),
        ("sid=1; path=/", "sid=1; path=/pypi"),
        ("sid=1;Path = / ;Secure", "sid=1;Path =/pypi;Secure"),
        ("sid=1; Path=/pypi", "sid=1; Path=/pypi"),
        ("sid=1; Path=/pypi/x", "sid=1; Path=/pypi/x"),
        ("sid=1; Path=/pypix", "sid=1; Path=/pypi/pypix"),
        ("sid=1; HttpOnly", "sid=1; HttpOnly"),
        ("sid=1; Path=", "sid=1; Path="),
        ("sid=1; Path=x", "sid=1; Path=x"),
        ("sid=a=b; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT", None),
        ("__Host-sid=1; Path=/; Secure", "__Host-sid=1; Path=/; Secure"),
        ("__host-sid=1; Path=/; Secure", "__host-sid=1; Path=/; Secure"),
        ("__Secure-sid=1; Path=/; Secure", "__Secure-sid=1; Path=/pypi; Secure"),
        ("sid=1; Domain=gw.example; Path=/", "sid=1; Domain=gw.example; Path=/pypi"),
    ],
    ids=[
        "root",
        "sub-path",
        "trailing-slash",
        "attribute-name-any-case",
        "spacing",
        "already-prefixed",
        "already-prefixed-sub-path",
        "prefix-per-segment",
        "no-path-default-inside-route",
        "empty-path-default",
        "invalid-path-default",
        "expiry-kept",
        "host-prefix-needs-root",
        "host-prefix-any-case",
        "secure-prefix-rewritten",
        "domain-kept",
    ],
)
def test_set_cookie_path(cookie: str, expected: str | None) -> None:
    if expected is None:
        expected = cookie.replace("Path=/;", "Path=/pypi;")
    assert rewrite_set_cookie(cookie, mount()) == expected


def test_every_path_attribute_is_rewritten_since_the_last_one_wins() -> None:
    """SECURITY: a second Path=/ after a prefixed one must not widen the cookie to the site."""
    out = rewrite_set_cookie("sid=1; Path=/pypi; Path=/", mount())
    assert out == "sid=1; Path=/pypi; Path=/pypi"


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ("sid=1", "sid=1; Path=/pypi"),
        ("sid=1; HttpOnly", "sid=1; HttpOnly; Path=/pypi"),
        ("sid=1; Path=/; Path=x", "sid=1; Path=/pypi; Path=x; Path=/pypi"),
    ],
)
def test_cookie_without_path_on_the_route_root_stays_in_the_route(
    cookie: str, expected: str
) -> None:
    """On /pypi (the app's /) the browser's default path would be /, the whole site."""
    assert rewrite_set_cookie(cookie, mount(upstream_path="/")) == expected


def test_cookies_are_untouched_without_prefix_or_base_path() -> None:
    assert rewrite_set_cookie("sid=1; Path=/", mount(prefix="")) == "sid=1; Path=/"
    assert rewrite_set_cookie("sid=1", mount(prefix="", upstream_path="/")) == "sid=1"


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ("sid=1; Path=/base", "sid=1; Path=/"),
        ("sid=1; Path=/base/x", "sid=1; Path=/x"),
        ("sid=1; Path=/", "sid=1; Path=/"),
    ],
)
def test_cookie_paths_lose_the_upstream_base_path(cookie: str, expected: str) -> None:
    based = mount(upstream_url=f"{UP}/base", prefix="")
    assert rewrite_set_cookie(cookie, based) == expected


def test_response_headers_rewritten_in_place_by_name_in_any_case() -> None:
    headers = [
        ("location", "/simple/"),
        ("Content-Location", "simple/"),
        ("SET-COOKIE", "a=1; Path=/"),
        ("Link", "</simple/>; rel=next"),
        ("X-Location", "/simple/"),
    ]
    rewrite_response_headers(headers, mount(upstream_path="/"))
    assert headers == [
        ("location", "/pypi/simple/"),
        ("Content-Location", "/pypi/simple/"),
        ("SET-COOKIE", "a=1; Path=/pypi"),
        ("Link", "</simple/>; rel=next"),
        ("X-Location", "/simple/"),
    ]


_PIECES = ("/", "\\", ".", "..", "%2e", "\t", "evil.example", "gw.example", "pypi", "@", "?", ":")


def _combinations(length: int) -> list[str]:
    found = [""]
    for _ in range(length):
        found = [head + piece for head in found for piece in _PIECES]
    return found


def test_whatever_the_upstream_sends_a_rewritten_location_stays_in_the_route() -> None:
    """Every Location made of up to four of the pieces attacks are built from: either it is
    passed on as it came, or the result is inside the route on our own host, in a form that no
    URL parser reads differently (no backslash, tab, dot-segment or empty segment)."""
    for location in [text for n in range(1, 5) for text in _combinations(n)]:
        for head in ("", "https://gw.example/", f"{UP}/", "//gw.example/"):
            value = head + location
            out = rewrite_location(value, mount(upstream_path="/simple/demo/"))
            if out == value:
                continue
            origin = re.match(r"(https?:)?//[^/?#]*", out)
            if origin is not None:
                assert URL(origin.group()).host == "gw.example", (value, out)
                assert "\\" not in origin.group() and "\t" not in origin.group(), (value, out)
            path = out[origin.end() if origin else 0 :].split("?")[0].split("#")[0]
            assert path == "/pypi" or path.startswith("/pypi/"), (value, out)
            assert "\\" not in path and "\t" not in path and "//" not in path, (value, out)
            segments = path.lower().split("/")
            assert not {".", "..", "%2e", "%2e%2e", ".%2e", "%2e."} & set(segments), (value, out)
