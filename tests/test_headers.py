"""Header hygiene helpers (gateway.headers)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.headers import (
    cookie_value,
    filter_request_headers,
    filter_response_headers,
    header_tokens,
    last_value,
    normalised_names,
    set_cookie_names,
    strip_cookies,
)

SESSION = frozenset({"gw_session"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a=1; gw_session=s; b=2", "a=1; b=2"),
        ("gw_session=s; a=1", "a=1"),
        ("a=1; gw_session=s", "a=1"),
        ("a=1;gw_session=s;b=2", "a=1;b=2"),
        ("gw_session=s", ""),
        ("gw_session=s; gw_session=t", ""),
        (" gw_session = s ; a=1", "a=1"),
        ('a="x; y"; b=%20', 'a="x; y"; b=%20'),
        ("a=gw_session; b=1", "a=gw_session; b=1"),
        ("gw_session_x=1; x_gw_session=2", "gw_session_x=1; x_gw_session=2"),
        ("GW_SESSION=1", "GW_SESSION=1"),
        ("a=1;;b=2", "a=1;;b=2"),
        ("pref=x gw_session=s; a=1", "pref=x gw_session=s; a=1"),
    ],
    ids=[
        "middle",
        "first",
        "last",
        "no-spaces",
        "only",
        "repeated",
        "spaced-name",
        "untouched-fast-path",
        "name-as-value",
        "similar-names",
        "names-are-case-sensitive",
        "empty-pair-kept",
        "space-is-not-a-separator",
    ],
)
def test_strip_cookies(value: str, expected: str) -> None:
    assert strip_cookies(value, SESSION) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (["gw_session=A"], "A"),
        (["a=1; gw_session=A; b=2"], "A"),
        ([" gw_session = A ;b=2"], "A"),
        (["pref=x gw_session=B"], None),
        (["gw_session=A; pref=x gw_session=B"], "A"),
        (["pref=x; gw_session=B"], "B"),
        (["gw_session=A, gw_session=B"], "A, gw_session=B"),
        (["gw_session=A; gw_session=B"], None),
        (["gw_session=A", "gw_session=B"], None),
        (["gw_session=A; gw_session=A"], "A"),
        (["gw_session="], None),
        (["gw_session"], None),
        (["GW_SESSION=A", "gw_session_x=A"], None),
        (["x=gw_session=A"], None),
        ([], None),
    ],
    ids=[
        "alone",
        "among-others",
        "spaces-around",
        "inside-another-value",
        "injected-after-a-space",
        "after-a-semicolon",
        "comma-is-not-a-separator",
        "two-values-believe-neither",
        "two-headers-believe-neither",
        "same-value-twice",
        "empty-value",
        "no-equals-sign",
        "other-names",
        "as-a-value",
        "no-header",
    ],
)
def test_cookie_value_reads_cookies_as_rfc_6265(headers: list[str], expected: str | None) -> None:
    assert cookie_value(headers, "gw_session") == expected


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("gw_session=x; Path=/", ("gw_session", "")),
        (" gw_session = x", ("gw_session", "")),
        ("=gw_session=x; Path=/", ("", "gw_session")),
        ("= gw_session =x", ("", "gw_session")),
        ("pref=x gw_session=y", ("pref", "")),
        ("gw_session", ("", "")),
        ("=novalue", ("", "")),
    ],
    ids=[
        "named",
        "spaced",
        "nameless-cookie",
        "nameless-spaced",
        "in-a-value",
        "bare",
        "nameless-bare",
    ],
)
def test_set_cookie_names_include_what_a_nameless_cookie_becomes(
    value: str, names: tuple[str, str]
) -> None:
    assert set_cookie_names(value) == names


@pytest.mark.parametrize("value", ["gw_session=x", "=gw_session=x; Path=/", " =gw_session=evil"])
def test_upstream_cannot_plant_the_session_cookie(value: str) -> None:
    # SECURITY: a nameless cookie is sent back by browsers as its bare value.
    headers = filter_response_headers([("Set-Cookie", value)], own_cookies=SESSION)
    assert headers == []


def test_header_tokens() -> None:
    assert header_tokens(["keep-alive, X-Foo", " Upgrade ,, "]) == {
        "keep-alive",
        "x-foo",
        "upgrade",
    }
    assert header_tokens([]) == frozenset()


def test_normalised_names() -> None:
    assert normalised_names(["X_Auth_User", "Authorization"]) == {"x-auth-user", "authorization"}


def _names(headers: list[tuple[str, str]]) -> list[str]:
    return [name for name, _ in headers]


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "authorization",
        "X-Auth-User",
        "x-auth-roles",
        "X_Auth_Email",
        "x_auth_user",
        "X-AUTH-ANYTHING",
        "X-Forwarded-For",
        "X_Forwarded_For",
        "X-Forwarded-Port",
        "Forwarded",
        "X-Real-IP",
        "X-Request-ID",
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Expect",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authorization",
        "Proxy_Authorization",
        "Proxy-Whatever",
        "TE",
        "Trailer",
        "Upgrade",
    ],
)
def test_request_header_is_dropped(name: str) -> None:
    assert filter_request_headers([(name, "v")], frozenset()) == []


@pytest.mark.parametrize(
    "name",
    ["Accept", "User-Agent", "X-Authorized", "X-Auth", "Authorization-Hint", "X-Custom", "Origin"],
)
def test_request_header_is_kept(name: str) -> None:
    assert filter_request_headers([(name, "v")], frozenset()) == [(name, "v")]


def test_request_headers_named_in_connection_are_dropped() -> None:
    headers = [("X-A", "1"), ("X_B", "2"), ("X-C", "3")]
    connection = normalised_names(header_tokens(["close, x-a, X_B"]))
    assert filter_request_headers(headers, connection) == [("X-C", "3")]


def test_request_headers_keep_order_case_and_repeats() -> None:
    headers = [("Accept", "a"), ("x-custom", "1"), ("X-Custom", "2"), ("ACCEPT", "b")]
    assert filter_request_headers(headers, frozenset()) == headers


def test_replaced_names_are_dropped_in_any_spelling() -> None:
    headers = [("X-Token", "forged"), ("x_token", "forged"), ("X-Other", "ok")]
    replaced = normalised_names(["X-Token"])
    assert filter_request_headers(headers, frozenset(), replaced=replaced) == [("X-Other", "ok")]


def test_session_cookie_is_filtered_and_empty_cookie_dropped() -> None:
    headers = [("Cookie", "gw_session=s"), ("Cookie", "a=1; gw_session=s")]
    out = filter_request_headers(headers, frozenset(), strip_cookie_names=SESSION)
    assert out == [("Cookie", "a=1")]


def test_websocket_handshake_headers_are_regenerated() -> None:
    headers = [
        ("Sec-WebSocket-Key", "k"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "chat"),
        ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ("Origin", "https://gw.example"),
    ]
    assert _names(filter_request_headers(headers, frozenset(), websocket=True)) == ["Origin"]
    assert len(filter_request_headers(headers, frozenset(), websocket=False)) == 5


def test_response_hop_by_hop_headers_are_dropped() -> None:
    headers = [
        ("Connection", "keep-alive, X-Internal"),
        ("X-Internal", "secret"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authenticate", "Basic"),
        ("Upgrade", "h2c"),
        ("Trailer", "X-T"),
        ("Content-Length", "5"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    assert filter_response_headers(headers) == [
        ("Content-Length", "5"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]


def test_response_content_length_dropped_when_transfer_encoding_present() -> None:
    headers = [("Transfer-Encoding", "chunked"), ("Content-Length", "5"), ("X-Ok", "1")]
    assert filter_response_headers(headers) == [("X-Ok", "1")]


def test_response_extra_drop() -> None:
    headers = [("Content-Length", "5"), ("X-Ok", "1")]
    assert filter_response_headers(headers, extra_drop={"content-length"}) == [("X-Ok", "1")]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        ([""], None),
        (["https"], "https"),
        (["http, https"], "https"),
        (["http", "https "], "https"),
        (["https", " , "], "https"),
    ],
)
def test_last_value(values: list[str], expected: str | None) -> None:
    headers = CIMultiDict([("X-Forwarded-Proto", v) for v in values])
    assert last_value(headers, "x-forwarded-proto") == expected
