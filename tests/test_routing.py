"""Route selection (``gateway.routing``): first match wins, and shadowed-route warnings.

Path normalisation itself is tested in tests/test_paths.py."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from typing import Any

import pytest

from gateway.config.settings import AccessSettings, MatchSettings, RouteSettings
from gateway.paths import matching_path, normalise_path
from gateway.routing import RouteTable, shadowed_routes


def exact(path: str, **match: Any) -> dict[str, Any]:
    return {"path": path, **match}


def prefix(path_prefix: str, **match: Any) -> dict[str, Any]:
    return {"path_prefix": path_prefix, **match}


def regex(path_regex: str, **match: Any) -> dict[str, Any]:
    return {"path_regex": path_regex, **match}


def cases(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Table rows ending in an id -> pytest params with readable ids."""
    return [pytest.param(*row[:-1], id=row[-1]) for row in rows]


def route(name: str, **match: Any) -> RouteSettings:
    if "methods" in match and match["methods"] is not None:
        match["methods"] = frozenset(match["methods"])
    return RouteSettings(
        name=name,
        match=MatchSettings(**match),
        upstream="app",
        access=AccessSettings(kind="public"),
    )


# ------------------------------------------------------------------------------------------
# RouteTable.match / select
# ------------------------------------------------------------------------------------------


def test_a_parameter_segment_cannot_hide_a_prefix_from_its_rule() -> None:
    table = RouteTable([route("admin", path_prefix="/admin"), route("rest", path_prefix="/")])
    for path in ("/;/admin/users", "/;x/admin", "/;/;/admin;y/", "/admin;x/users"):
        matched = table.match("GET", "app.example.com", matching_path(normalise_path(path)))
        assert matched is not None and matched.name == "admin", path


HOST_CASES = [
    # (route host, request Host, matched, id); the route's path is prefix "/"
    ("admin.example.com", "admin.example.com", True, "exact"),
    ("admin.example.com", "ADMIN.Example.COM", True, "case-insensitive"),
    ("admin.example.com", "admin.example.com:8443", True, "no-port-accepts-any-port"),
    ("admin.example.com", "admin.example.com.", True, "trailing-dot"),
    ("admin.example.com", "admin.example.com.:80", True, "trailing-dot-and-port"),
    ("admin.example.com", "admin.example.com:", True, "empty-port"),
    ("admin.example.com", "www.example.com", False, "other-host"),
    ("admin.example.com", "xadmin.example.com", False, "longer-host"),
    ("admin.example.com", "admin.example.com.evil.net", False, "suffix-appended"),
    ("admin.example.com", "", False, "no-host"),
    ("admin.example.com:8443", "admin.example.com:8443", True, "port-same"),
    ("admin.example.com:8443", "admin.example.com:9443", False, "port-other"),
    ("admin.example.com:8443", "admin.example.com", False, "port-absent"),
    ("*.example.com", "a.example.com", True, "wildcard-one-label"),
    ("*.example.com", "A.EXAMPLE.COM:8080", True, "wildcard-case-and-port"),
    ("*.example.com", "a.b.example.com", False, "wildcard-two-labels"),
    ("*.example.com", "example.com", False, "wildcard-bare-domain"),
    ("*.example.com", ".example.com", False, "wildcard-empty-label"),
    ("*.example.com", "aexample.com", False, "wildcard-no-dot"),
    ("*.example.com", "[::1]:443", False, "wildcard-ipv6"),
    (None, "[::1]:443", True, "no-host-accepts-any"),
    (None, "", True, "no-host-accepts-none"),
]


@pytest.mark.parametrize(("pattern", "host", "matched"), cases(HOST_CASES))
def test_match_host(pattern: str | None, host: str, matched: bool) -> None:
    r = route("r", host=pattern, path_prefix="/")
    assert (RouteTable([r]).match("GET", host, "/") is r) is matched


PATH_CASES = [
    # (route match, normalised request path, matched, id)
    (exact("/admin"), "/admin", True, "path-exact"),
    (exact("/admin"), "/admin/", False, "path-not-trailing-slash"),
    (exact("/admin"), "/ADMIN", False, "path-case-sensitive"),
    (exact("/admin", ignore_case=True), "/ADMIN", True, "path-ignore-case"),
    (exact("/%7Euser"), "/~user", True, "configured-path-normalised"),
    (prefix("/admin"), "/admin", True, "prefix-itself"),
    (prefix("/admin"), "/admin/", True, "prefix-slash"),
    (prefix("/admin"), "/admin/x/y", True, "prefix-below"),
    (prefix("/admin"), "/administrator", False, "prefix-segment-aware"),
    (prefix("/admin"), "/admin.html", False, "prefix-segment-aware-dot"),
    (prefix("/admin"), "/ADMIN", False, "prefix-case-sensitive"),
    (prefix("/admin"), "/Admin/x", False, "prefix-case-sensitive-below"),
    (prefix("/admin", ignore_case=True), "/ADMIN", True, "prefix-ignore-case"),
    (prefix("/Admin", ignore_case=True), "/aDMIN/x", True, "prefix-ignore-case-mixed"),
    (prefix("/admin", ignore_case=True), "/ADMINISTRATOR", False, "prefix-ignore-case-segment"),
    (prefix("/static/"), "/static/", True, "dir-prefix-itself"),
    (prefix("/static/"), "/static/app.css", True, "dir-prefix-below"),
    (prefix("/static/"), "/static", False, "dir-prefix-needs-slash"),
    (prefix("/static/"), "/staticx/a", False, "dir-prefix-other"),
    (prefix("/"), "/anything/at/all", True, "root-prefix"),
    (regex("^/api/v[0-9]+/.*"), "/api/v1/users", True, "regex-full"),
    (regex("^/api/v[0-9]+/.*"), "/api/v12/", True, "regex-empty-tail"),
    (regex("^/api/v[0-9]+/.*"), "/api/vx/users", False, "regex-no-match"),
    (regex("^/api/v[0-9]+/.*"), "/x/api/v1/users", False, "regex-anchored-start"),
    (regex("^/api/v[0-9]+/"), "/api/v1/", True, "regex-without-tail-exact"),
    (regex("^/api/v[0-9]+/"), "/api/v1/users", False, "regex-is-full-match"),
    (regex("/api/v[0-9]+"), "/api/v1x", False, "regex-anchored-end"),
    (regex("/api/v[0-9]+$"), "/api/v1", True, "regex-dollar"),
    (regex("/api/.*"), "/API/x", False, "regex-case-sensitive"),
    (regex("/api/.*", ignore_case=True), "/API/x", True, "regex-ignore-case"),
]


@pytest.mark.parametrize(("match", "path", "matched"), cases(PATH_CASES))
def test_match_path(match: dict[str, Any], path: str, matched: bool) -> None:
    r = route("r", **match)
    assert (RouteTable([r]).match("GET", "h", path) is r) is matched


METHOD_CASES = [
    # (route methods, request method, matched, id)
    (["GET", "POST"], "POST", True, "listed"),
    (["GET", "POST"], "DELETE", False, "not-listed"),
    (["GET"], "HEAD", True, "head-matches-get"),
    (["POST"], "HEAD", False, "head-needs-get"),
    (["HEAD"], "GET", False, "get-does-not-match-head"),
    (["GET"], "get", True, "request-method-upper-cased"),
    (["get"], "GET", True, "configured-method-upper-cased"),
    (None, "PROPFIND", True, "absent-accepts-any"),
]


@pytest.mark.parametrize(("methods", "method", "matched"), cases(METHOD_CASES))
def test_match_method(methods: list[str] | None, method: str, matched: bool) -> None:
    r = route("r", path_prefix="/", methods=methods)
    assert (RouteTable([r]).match(method, "h", "/") is r) is matched


@pytest.fixture
def contract_routes() -> list[RouteSettings]:
    """The route table of the CONTRACT's example, with the regex written for full match."""
    return [
        route("assets", path_prefix="/static/"),
        route("admin", host="admin.example.com", path_prefix="/admin", methods=["GET", "POST"]),
        route("api", path_regex="^/api/v[0-9]+/.*"),
        route("everything-else", path_prefix="/"),
    ]


@pytest.mark.parametrize(
    ("method", "host", "path", "expected"),
    [
        ("GET", "app.example.com", "/static/app.css", "assets"),
        ("GET", "admin.example.com", "/static/app.css", "assets"),
        ("GET", "admin.example.com", "/admin/users", "admin"),
        ("HEAD", "admin.example.com", "/admin", "admin"),
        ("DELETE", "admin.example.com", "/admin/users", "everything-else"),
        ("GET", "app.example.com", "/admin/users", "everything-else"),
        ("GET", "admin.example.com", "/administrator", "everything-else"),
        ("GET", "app.example.com", "/api/v2/things", "api"),
        ("GET", "app.example.com", "/static", "everything-else"),
        ("GET", "app.example.com", "/", "everything-else"),
    ],
)
def test_first_match_wins(
    contract_routes: list[RouteSettings], method: str, host: str, path: str, expected: str
) -> None:
    table = RouteTable(contract_routes)
    selected = table.match(method, host, path)
    assert selected is not None and selected.name == expected


def test_order_decides_between_overlapping_routes() -> None:
    narrow = route("narrow", path_prefix="/admin")
    broad = route("broad", path_prefix="/")
    assert RouteTable([narrow, broad]).match("GET", "h", "/admin/x") is narrow
    assert RouteTable([broad, narrow]).match("GET", "h", "/admin/x") is broad


def test_no_match_returns_none() -> None:
    table = RouteTable([route("admin", path_prefix="/admin")])
    assert table.match("GET", "h", "/public") is None


def test_empty_table_matches_nothing() -> None:
    assert RouteTable([]).match("GET", "h", "/") is None


def test_routes_property_keeps_order(contract_routes: list[RouteSettings]) -> None:
    assert RouteTable(contract_routes).routes == tuple(contract_routes)


def test_disguised_paths_select_the_route_of_their_normalised_form() -> None:
    # Routing sees the normalised path, so /public/%2e%2e/admin is the admin route.
    table = RouteTable(
        [route("admin", path_prefix="/admin"), route("public", path_prefix="/public")]
    )
    assert table.match("GET", "h", normalise_path("/public/%2e%2e/admin")) is table.routes[0]
    assert table.match("GET", "h", normalise_path("//admin")) is table.routes[0]
    assert table.match("GET", "h", normalise_path("/%61dmin/x")) is table.routes[0]


@pytest.mark.parametrize(
    ("match", "message"),
    [
        (dict(path_regex="("), "path_regex"),
        (dict(path="relative"), "match.path"),
        (dict(path_prefix="/a%2Fb"), "match.path_prefix"),
        (dict(), "needs path"),
    ],
    ids=["bad-regex", "relative-path", "encoded-slash-prefix", "no-path"],
)
def test_invalid_pattern_is_a_value_error(match: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RouteTable([route("bad", **match)])


# ------------------------------------------------------------------------------------------
# shadowed_routes
# ------------------------------------------------------------------------------------------


def test_shadow_warning_text() -> None:
    routes = [
        route("assets", path_prefix="/static/"),
        route("everything-else", path_prefix="/"),
        route("admin", path_prefix="/admin"),
        route("api", path_regex="^/api/.*"),
    ]
    assert shadowed_routes(routes) == [
        'routes[2] "admin": never matches: route "everything-else" (routes[1]) matches every '
        "request it would",
        'routes[3] "api": never matches: route "everything-else" (routes[1]) matches every '
        "request it would",
    ]


def test_shadow_names_the_first_shadowing_route() -> None:
    routes = [
        route("a", path_prefix="/a"),
        route("root", path_prefix="/"),
        route("a-x", path="/a/x"),
    ]
    assert shadowed_routes(routes) == [
        'routes[2] "a-x": never matches: route "a" (routes[0]) matches every request it would'
    ]


def test_contract_example_has_no_shadowed_routes(contract_routes: list[RouteSettings]) -> None:
    assert shadowed_routes(contract_routes) == []


SHADOWED = [
    # (earlier route's match, later route's match, id): the later one never matches
    (prefix("/"), regex("^/x.*", ignore_case=True), "root-prefix-covers-regex"),
    (prefix("/"), exact("/X", ignore_case=True), "root-prefix-covers-ignore-case"),
    (prefix("/admin"), prefix("/admin"), "same-prefix"),
    (prefix("/admin"), prefix("/admin/"), "prefix-covers-dir-prefix"),
    (prefix("/admin"), prefix("/admin/users"), "prefix-covers-deeper"),
    (prefix("/admin/"), prefix("/admin/users"), "dir-prefix-covers-deeper"),
    (prefix("/admin"), exact("/admin"), "prefix-covers-path"),
    (prefix("/admin"), exact("/admin/x"), "prefix-covers-path-below"),
    (exact("/admin"), exact("/admin"), "same-path"),
    (exact("/admin"), exact("/./admin"), "same-path-after-normalising"),
    (regex("/api/v[0-9]+/.*"), exact("/api/v1/users"), "regex-covers-path"),
    (regex("/api/.*"), regex("/api/.*"), "same-regex"),
    # letter case
    (prefix("/admin", ignore_case=True), prefix("/ADMIN/x"), "ignore-case-covers-sensitive"),
    (prefix("/admin", ignore_case=True), prefix("/admin", ignore_case=True), "both-ignore-case"),
    (exact("/admin", ignore_case=True), exact("/Admin"), "ignore-case-path-covers-path"),
    (regex("/api/.*", ignore_case=True), exact("/API/x"), "ignore-case-regex-covers-path"),
    (regex("/api/.*", ignore_case=True), regex("/api/.*"), "ignore-case-regex-covers-same"),
    (prefix("/1"), prefix("/1/x", ignore_case=True), "caseless-prefix-covers-ignore-case"),
    (exact("/1"), exact("/1", ignore_case=True), "caseless-path-covers-ignore-case"),
    (regex("/[0-9]+"), exact("/12", ignore_case=True), "regex-covers-caseless-path"),
    # host
    (prefix("/"), exact("/x", host="a.example.com"), "no-host-covers-host"),
    (prefix("/", host="a.example.com"), exact("/x", host="a.example.com"), "same-host"),
    (prefix("/", host="a.example.com"), exact("/x", host="a.example.com:8443"), "any-port"),
    (prefix("/", host="*.example.com"), exact("/x", host="a.example.com"), "wildcard-label"),
    (prefix("/", host="*.example.com"), exact("/x", host="*.example.com:8443"), "wildcard-port"),
    # methods
    (prefix("/"), exact("/x", methods=["POST"]), "no-methods-covers-methods"),
    (prefix("/", methods=["GET", "POST"]), exact("/x", methods=["POST"]), "method-superset"),
    (prefix("/", methods=["GET"]), exact("/x", methods=["HEAD"]), "get-covers-head"),
    (prefix("/", methods=["GET"]), exact("/x", methods=["GET", "HEAD"]), "get-covers-get-head"),
]

NOT_SHADOWED = [
    # (earlier route's match, later route's match, id): the later one can still match
    (prefix("/admin"), prefix("/administrator"), "prefix-segment-aware"),
    (prefix("/admin/x"), prefix("/admin"), "deeper-prefix-first"),
    (prefix("/static/"), prefix("/static"), "dir-prefix-misses-bare"),
    (prefix("/static/"), exact("/static"), "dir-prefix-misses-bare-path"),
    (exact("/admin"), prefix("/admin"), "path-does-not-cover-prefix"),
    (exact("/admin"), exact("/admin/"), "different-path"),
    (prefix("/api"), regex("/api/.*"), "prefix-vs-regex-unknown"),
    (regex("/api/.*"), regex("/api/v1/.*"), "regex-vs-regex-unknown"),
    (regex("/api/.*"), prefix("/api/"), "regex-vs-prefix-unknown"),
    (regex("/api/v[0-9]+/"), exact("/api/v1/users"), "regex-must-full-match"),
    # letter case
    (prefix("/admin"), prefix("/admin", ignore_case=True), "sensitive-prefix"),
    (exact("/admin"), exact("/admin", ignore_case=True), "sensitive-path"),
    (regex("/api/.*"), regex("/api/.*", ignore_case=True), "sensitive-regex"),
    (regex("/api/.*"), exact("/api/x", ignore_case=True), "sensitive-regex-vs-path"),
    (prefix("/admin"), exact("/ADMIN"), "sensitive-prefix-other-case"),
    # host
    (prefix("/", host="a.example.com"), exact("/x"), "host-does-not-cover-any"),
    (prefix("/", host="a.example.com"), exact("/x", host="b.example.com"), "other-host"),
    (prefix("/", host="a.example.com:8443"), exact("/x", host="a.example.com"), "port-vs-any"),
    (prefix("/", host="a.example.com:8443"), exact("/x", host="a.example.com:9443"), "other-port"),
    (prefix("/", host="*.example.com"), exact("/x", host="example.com"), "wildcard-vs-bare"),
    (prefix("/", host="*.example.com"), exact("/x", host="b.a.example.com"), "two-labels"),
    (prefix("/", host="a.example.com"), exact("/x", host="*.example.com"), "exact-vs-wildcard"),
    # methods
    (prefix("/", methods=["GET"]), exact("/x"), "methods-do-not-cover-any"),
    (prefix("/", methods=["GET"]), exact("/x", methods=["GET", "POST"]), "method-subset"),
    (prefix("/", methods=["HEAD"]), exact("/x", methods=["GET"]), "head-does-not-cover-get"),
]


@pytest.mark.parametrize(("first", "second"), cases(SHADOWED))
def test_shadowed(first: dict[str, Any], second: dict[str, Any]) -> None:
    warnings = shadowed_routes([route("first", **first), route("second", **second)])
    assert len(warnings) == 1
    assert warnings[0].startswith('routes[1] "second": never matches: route "first" (routes[0])')


@pytest.mark.parametrize(("first", "second"), cases(NOT_SHADOWED))
def test_not_shadowed(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert shadowed_routes([route("first", **first), route("second", **second)]) == []


PROBE_METHODS = ("GET", "HEAD", "POST", "DELETE")
PROBE_HOSTS = ("a.example.com", "a.example.com:8443", "x.example.com", "h")
PROBE_PATHS = (
    *("/x", "/X", "/admin", "/Admin", "/ADMIN/x", "/admin/", "/admin/users"),
    *("/api/v1/users", "/API/x", "/static/x", "/1", "/12", "/1/X/y"),
)


@pytest.mark.parametrize(("first", "second"), cases(SHADOWED))
def test_shadowing_agrees_with_matching(first: dict[str, Any], second: dict[str, Any]) -> None:
    # Cross-check the static analysis on sample requests: whatever the later route accepts
    # alone, the pair must give to the earlier route.
    a, b = route("first", **first), route("second", **second)
    pair, alone = RouteTable([a, b]), RouteTable([b])
    for method, host, path in product(PROBE_METHODS, PROBE_HOSTS, PROBE_PATHS):
        if alone.match(method, host, path) is b:
            assert pair.match(method, host, path) is a, (method, host, path)
