"""Path normalisation (``gateway.paths``): what every request path becomes before routing,
which paths are refused, the servlet container's reading of ``;parameters``, and the path an
upstream receives once a route's ``strip_prefix`` is removed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from gateway.errors import BadRequest
from gateway.paths import matching_path, normalise_path, strip_route_prefix


def cases(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Table rows ending in an id -> pytest params with readable ids."""
    return [pytest.param(*row[:-1], id=row[-1]) for row in rows]


# ------------------------------------------------------------------------------------------
# normalise_path
# ------------------------------------------------------------------------------------------

NORMALISED = [
    ("/", "/", "root"),
    ("/api/v1/users", "/api/v1/users", "plain"),
    ("/admin/", "/admin/", "trailing-slash-kept"),
    ("//admin", "/admin", "double-slash"),
    ("/a///b//", "/a/b/", "many-slashes"),
    ("/./admin", "/admin", "dot"),
    ("/a/./b/../c", "/a/c", "dot-and-dotdot"),
    ("/a/..", "/", "dotdot-to-root"),
    ("/a/b/..", "/a/", "dotdot-keeps-directory"),
    ("/a/.", "/a/", "final-dot"),
    ("/a//../b", "/b", "slashes-collapsed-before-dotdot"),
    ("/public/%2e%2e/admin", "/admin", "encoded-dotdot-resolved"),
    ("/a/b/%2E%2E/c", "/a/c", "upper-encoded-dotdot"),
    ("/a/.%2e/c", "/c", "half-encoded-dotdot"),
    ("/%61dmin", "/admin", "encoded-letter"),
    ("/%7Euser/%2D%5F", "/~user/-_", "encoded-unreserved-symbols"),
    ("/%3a", "/%3A", "reserved-kept-hex-upper-cased"),
    ("/a%20b", "/a%20b", "encoded-space-kept"),
    ("/caf%c3%a9", "/caf%C3%A9", "encoded-utf8-kept"),
    ("/%252F", "/%252F", "decoded-once-only"),
    ("/%252e%252e/x", "/%252e%252e/x", "double-encoded-dots-are-text"),
    ("/.well-known/jwks", "/.well-known/jwks", "dot-file-not-a-dot-segment"),
    ("/a/...", "/a/...", "three-dots-is-a-name"),
    ("/a;b=c/d", "/a;b=c/d", "path-params-kept"),
    ("/x:y@z!$&'()*+,=", "/x:y@z!$&'()*+,=", "sub-delims"),
    ("/a[1]|b^", "/a[1]|b^", "browser-unencoded-chars-tolerated"),
]


@pytest.mark.parametrize(("raw", "expected"), cases(NORMALISED))
def test_normalise_path(raw: str, expected: str) -> None:
    assert normalise_path(raw) == expected


def test_normalised_path_is_a_fixed_point() -> None:
    for raw, expected, _ in NORMALISED:
        assert normalise_path(expected) == expected, raw


REFUSED = [
    ("/public/..%2fadmin", "path_encoded_slash", "encoded-slash-traversal"),
    ("/admin%2F", "path_encoded_slash", "encoded-slash-upper"),
    ("/admin%2f", "path_encoded_slash", "encoded-slash-lower"),
    ("/a%5cb", "path_encoded_slash", "encoded-backslash-lower"),
    ("/a%5Cb", "path_encoded_slash", "encoded-backslash-upper"),
    ("/a\\b", "path_backslash", "raw-backslash"),
    ("/..\\admin", "path_backslash", "raw-backslash-traversal"),
    ("/x%00y", "path_control_char", "encoded-nul"),
    ("/x\x00y", "path_control_char", "raw-nul"),
    ("/\x01", "path_control_char", "raw-control"),
    ("/a%0d%0aSet-Cookie:x", "path_control_char", "encoded-crlf"),
    ("/%1F", "path_control_char", "encoded-unit-separator"),
    ("/%7F", "path_control_char", "encoded-del"),
    ("/\x7f", "path_control_char", "raw-del"),
    ("/%G1", "path_bad_encoding", "bad-hex"),
    ("/a%", "path_bad_encoding", "trailing-percent"),
    ("/a%4", "path_bad_encoding", "truncated-percent"),
    ("/%+1", "path_bad_encoding", "sign-is-not-hex"),
    ("/%%41", "path_bad_encoding", "double-percent"),
    ("", "path_not_absolute", "empty"),
    ("admin", "path_not_absolute", "relative"),
    ("*", "path_not_absolute", "asterisk-form"),
    ("http://example.com/admin", "path_not_absolute", "absolute-form"),
    ("%2Fadmin", "path_not_absolute", "encoded-leading-slash"),
    ("/..", "path_traversal", "dotdot-at-root"),
    ("/../x", "path_traversal", "climbs-above-root"),
    ("/a/../../x", "path_traversal", "climbs-after-descending"),
    ("/%2e%2e/admin", "path_traversal", "encoded-climb"),
    ("/%2E./admin", "path_traversal", "half-encoded-climb"),
    ("/public/..;/admin", "path_traversal", "tomcat-dotdot-params"),
    ("/public/..;x=1/admin", "path_traversal", "tomcat-dotdot-named-params"),
    ("/public/.;/admin", "path_traversal", "tomcat-dot-params"),
    ("/a b", "path_invalid_char", "raw-space"),
    ('/a"b', "path_invalid_char", "raw-quote"),
    ("/a<b>", "path_invalid_char", "raw-angle-brackets"),
    ("/a{b}", "path_invalid_char", "raw-braces"),
    ("/a`b", "path_invalid_char", "raw-backtick"),
    ("/a#b", "path_invalid_char", "raw-hash"),
    ("/a?b", "path_invalid_char", "raw-question-mark"),
    ("/caf\u00e9", "path_invalid_char", "raw-non-ascii"),
    ("/caf\udcc3", "path_invalid_char", "surrogate-escaped-byte"),
]


@pytest.mark.parametrize(("raw", "reason"), cases(REFUSED))
def test_normalise_path_refuses(raw: str, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        normalise_path(raw)
    assert caught.value.status == 400
    assert caught.value.reason == reason


MATCHING_PATHS = [
    ("/admin/users", "/admin/users", "no-parameters"),
    ("/admin;jsessionid=1/users", "/admin/users", "session-id-parameter"),
    ("/;/admin/users", "/admin/users", "empty-segment-left-by-semicolon"),
    ("/;x/admin/users", "/admin/users", "parameter-only-segment"),
    ("/;a=1;b=2/;/admin", "/admin", "several-parameter-only-segments"),
    ("/admin/;", "/admin/", "trailing-parameter-keeps-the-slash"),
    ("/admin/;x/", "/admin/", "trailing-parameter-segment-and-slash"),
    ("/admin;x", "/admin", "parameter-on-the-last-segment"),
    ("/;", "/", "root-parameter"),
    ("/;/;/", "/", "only-parameters"),
    ("/;/.gateway/login", "/.gateway/login", "reserved-prefix-behind-an-empty-segment"),
]


@pytest.mark.parametrize(("path", "expected"), cases(MATCHING_PATHS))
def test_matching_path_reads_parameters_as_a_servlet_container_does(
    path: str, expected: str
) -> None:
    # Tomcat strips ;parameters from every segment and then collapses the empty segments.
    assert matching_path(normalise_path(path)) == expected


def test_refusal_detail_escapes_control_characters() -> None:
    with pytest.raises(BadRequest) as caught:
        normalise_path("/a\r\nX-Forged: 1")
    assert "\r" not in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------
# strip_route_prefix
# ------------------------------------------------------------------------------------------

STRIPPED = [
    # (strip_prefix, ignore_case, normalised path, upstream path, prefix removed, id)
    ("/api", False, "/api/v1/x", "/v1/x", "/api", "nested"),
    ("/api", False, "/api", "/", "/api", "exact"),
    ("/api", False, "/api/", "/", "/api", "trailing-slash"),
    ("/api/", False, "/api/v1", "/v1", "/api", "prefix-with-slash"),
    ("/api", False, "/apix/v1", "/apix/v1", "", "not-a-segment"),
    ("/api", False, "/API/v1", "/API/v1", "", "case-sensitive"),
    ("/api", True, "/API/v1", "/v1", "/API", "ignore-case-removes-as-sent"),
    ("/", False, "/api/v1", "/api/v1", "", "root"),
    (None, False, "/api/v1", "/api/v1", "", "no-strip"),
]


@pytest.mark.parametrize(("strip", "ignore_case", "path", "upstream", "prefix"), cases(STRIPPED))
def test_strip_route_prefix(
    strip: str | None, ignore_case: bool, path: str, upstream: str, prefix: str
) -> None:
    assert strip_route_prefix(path, strip, ignore_case) == (upstream, prefix)
