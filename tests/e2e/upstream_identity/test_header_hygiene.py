"""CONTRACT section 4, end to end: what a client sends can never pose as the gateway's identity.

Every case is its own test: a client-sent ``Authorization`` (any scheme), ``X-Auth-*`` in any
letter case and with ``_`` for ``-``, the session cookie in ``Cookie``, a custom token header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.upstream_identity.identity_harness import (
    SESSION_COOKIE,
    KeyFile,
    claims_of,
    identity_config,
    login,
)
from tests.support import GatewayClient, raw_request
from tests.upstreams import Upstream

CLIENT_AUTHORIZATIONS = {
    "bearer-junk": "Bearer anything",
    "bearer-jwt-shaped": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.c2ln",
    "bearer-lowercase": "bearer anything",
    "basic": "Basic YWRtaW46YWRtaW4=",
    "negotiate": "Negotiate YIIGhgYJKoZIhvcSAQICAQBuggZ1MIIGcaADAgEFoQMCAQ6iBwMFACAAAACjggR",
}
SPOOFED = [
    "X-Auth-User",
    "x-auth-user",
    "X_Auth_User",
    "X-AUTH-ROLES",
    "x_auth_email",
    "X-Auth-Tenant",
]
SPOOFED_ALL = {name: f"forged-{index}" for index, name in enumerate(SPOOFED)}
BOB_HEADERS = [
    ("X-Auth-User", "bob"),
    ("X-Auth-Email", "bob@example.com"),
    ("X-Auth-Roles", "dev,ops"),
]


async def gateway(
    make_gateway: Any, recorder: Upstream, tmp_path: Path, key: KeyFile, **options: Any
) -> GatewayClient:
    client: GatewayClient = await make_gateway(
        identity_config(recorder.url, tmp_path, [key.setting], **options)
    )
    return client


async def send(client: GatewayClient, path: str, headers: Any) -> int:
    async with client.get(path, headers=headers, allow_redirects=False) as resp:
        await resp.read()
        return resp.status


# --- Authorization ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", CLIENT_AUTHORIZATIONS.values(), ids=CLIENT_AUTHORIZATIONS.keys())
async def test_client_authorization_is_removed_for_an_anonymous_caller_on_a_public_route(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile, value: str
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    assert await send(client, "/public/x", {"Authorization": value}) == 200
    assert recorder.hits == 1
    assert recorder.last.values("Authorization") == []


@pytest.mark.parametrize("value", CLIENT_AUTHORIZATIONS.values(), ids=CLIENT_AUTHORIZATIONS.keys())
async def test_client_authorization_is_replaced_by_the_gateways_token_when_signed_in(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile, value: str
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    alice = await login(client)
    reply = await alice.get("/members/x", headers={"Authorization": value})
    assert reply.status == 200
    forwarded = recorder.last.one("Authorization")
    assert forwarded != value
    token = recorder.last.bearer
    assert claims_of(token)["sub"] == "alice"
    assert value.split(" ", 1)[1] not in forwarded


async def test_several_client_authorization_headers_are_all_removed(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    headers = {"Authorization": "Basic YTpi", "authorization": "Bearer x.y.z"}
    status, _headers, _body = await raw_request(client.port, "/public/x", headers=headers)
    assert status == 200
    assert recorder.last.values("Authorization") == []


# --- X-Auth-* --------------------------------------------------------------------------------


async def test_control_every_spoofed_name_reaches_an_upstream_when_sent_directly(
    recorder: Upstream,
) -> None:
    # Without this, a client library folding or dropping e.g. X_Auth_User would make the
    # hygiene tests below pass without testing anything (aiohttp's client folds names that
    # differ only in case, hence raw requests wherever several variants go at once).
    status, _headers, _body = await raw_request(recorder.port, "/direct", headers=SPOOFED_ALL)
    assert status == 200
    assert recorder.last.auth_like() == list(SPOOFED_ALL.items())


@pytest.mark.parametrize("name", SPOOFED)
async def test_spoofed_x_auth_header_is_removed_when_identity_headers_is_off(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile, name: str
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    bob = await login(client, "bob")
    assert (await bob.get("/members/x", headers={name: "admin"})).status == 200
    assert recorder.last.auth_like() == []
    assert claims_of(recorder.last.bearer)["sub"] == "bob"  # signed in, yet no X-Auth-*


@pytest.mark.parametrize("name", SPOOFED)
async def test_spoofed_x_auth_header_leaves_only_the_gateways_values_when_identity_headers_is_on(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile, name: str
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    bob = await login(client, "bob")
    assert (await bob.get("/ident/x", headers={name: "admin"})).status == 200
    assert recorder.last.auth_like() == BOB_HEADERS


@pytest.mark.parametrize("name", SPOOFED)
async def test_spoofed_x_auth_header_is_removed_for_an_anonymous_caller(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile, name: str
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    assert await send(client, "/pubident/x", {name: "admin"}) == 200
    assert recorder.last.auth_like() == []


async def test_every_spoofed_variant_at_once_leaves_only_the_gateways_values(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    bob = await login(client, "bob")
    headers = {**SPOOFED_ALL, "Cookie": f"{SESSION_COOKIE}={bob.session}"}
    status, _headers, _body = await raw_request(client.port, "/ident/x", headers=headers)
    assert status == 200
    assert recorder.last.auth_like() == BOB_HEADERS
    assert not any(value.startswith("forged-") for _name, value in recorder.last.headers)


# --- Cookie ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ('a=1; {s}; b="two words"', 'a=1; b="two words"'),
        ("{s}; theme=dark;lang=en-GB", "theme=dark;lang=en-GB"),
        ("x=1;{s}", "x=1"),
        ("xgw_session=keep; {s}; gw_session_x=keep2", "xgw_session=keep; gw_session_x=keep2"),
        ("q=a%3Db;  {s};  r=", "q=a%3Db;  r="),
        ("{s}", None),
    ],
    ids=["middle", "first", "last", "similar-names", "odd-spacing", "alone"],
)
async def test_session_cookie_is_stripped_and_other_cookies_pass_byte_exact(
    tmp_path: Path,
    recorder: Upstream,
    make_gateway: Any,
    ed_key: KeyFile,
    layout: str,
    expected: str | None,
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    alice = await login(client)
    raw = layout.format(s=f"{SESSION_COOKIE}={alice.session}")
    assert await send(client, "/members/x", {"Cookie": raw}) == 200
    assert claims_of(recorder.last.bearer)["sub"] == "alice"  # the session was used ...
    assert recorder.last.values("Cookie") == ([] if expected is None else [expected])  # ... and cut


async def test_a_dead_session_cookie_is_stripped_on_a_public_route_too(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    raw = f"a=1; {SESSION_COOKIE}=not-a-session-{'x' * 40}; b=2"
    assert await send(client, "/public/x", {"Cookie": raw}) == 200
    assert recorder.last.values("Cookie") == ["a=1; b=2"]
    assert recorder.last.values("Authorization") == []


# --- a custom token header ---------------------------------------------------------------------


async def test_custom_token_header_carries_the_bare_token_and_client_authorization_is_removed(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key, header="X-Identity")
    alice = await login(client)
    headers = {"Authorization": "Bearer client-junk", "X-Identity": "forged"}
    assert (await alice.get("/members/x", headers=headers)).status == 200
    token = recorder.last.one("X-Identity")
    assert not token.lower().startswith("bearer")
    assert token.count(".") == 2
    assert claims_of(token)["sub"] == "alice" and claims_of(token)["aud"] == "app"
    assert recorder.last.values("Authorization") == []


async def test_custom_token_header_sent_by_an_anonymous_client_is_not_forwarded(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    # The upstream reads X-Identity as the gateway's token: a client must not get to set it,
    # whether or not the gateway has a token of its own to put there (as with Authorization).
    client = await gateway(make_gateway, recorder, tmp_path, ed_key, header="X-Identity")
    alice = await login(client)
    assert (await alice.get("/members/x")).status == 200
    captured = recorder.last.one("X-Identity")  # a genuine token, e.g. leaked by an upstream
    anonymous = {"X-Identity": captured, "x_identity": "forged", "Authorization": "Bearer x"}
    assert await send(client, "/public/x", anonymous) == 200
    leaked = [
        (name, value)
        for name, value in recorder.last.headers
        if name.lower().replace("_", "-") in ("x-identity", "authorization")
    ]
    assert leaked == []


# --- public routes ---------------------------------------------------------------------------


async def test_public_route_with_a_valid_session_forwards_identity_and_jwt(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    bob = await login(client, "bob")
    assert (await bob.get("/pubident/x", headers={"X-Auth-User": "admin"})).status == 200
    claims = claims_of(recorder.last.bearer)
    assert (claims["sub"], claims["aud"]) == ("bob", "app")
    assert recorder.last.auth_like() == BOB_HEADERS


async def test_public_route_without_a_session_forwards_no_jwt_and_no_identity(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    await login(client, "bob")  # someone else is signed in; this caller is not
    assert await send(client, "/pubident/x", {"Accept": "text/html"}) == 200
    assert recorder.last.values("Authorization") == []
    assert recorder.last.auth_like() == []
