"""Bearer tokens for API clients: ``POST /.gateway/token``, then ``Authorization: Bearer`` on
routes with ``accept_bearer: true``, replaced upstream by a freshly minted upstream token."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet as JoseKeySet
from joserfc.jwt import JWTClaimsRegistry

from tests.configs import PASSWORDS, users
from tests.e2e.login.login_harness import HTML
from tests.e2e.upstream_identity.identity_harness import (
    API_AUDIENCE,
    API_TTL,
    ISSUER,
    JWKS,
    TOKEN,
    Counters,
    KeyFile,
    api_token,
    claims_of,
    fetch,
    header_of,
    identity_config,
)
from tests.support import GatewayClient
from tests.upstreams import Upstream

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")

UNAUTHENTICATED = 'Bearer realm="gateway"'


async def gateway(
    make_gateway: Any,
    recorder: Upstream,
    tmp_path: Path,
    key: KeyFile,
    *,
    api_tokens: bool = True,
    **options: Any,
) -> GatewayClient:
    client: GatewayClient = await make_gateway(
        identity_config(recorder.url, tmp_path, [key.setting], api_tokens=api_tokens, **options)
    )
    return client


async def call(
    client: GatewayClient, path: str, token: str, *, accept: str = "application/json"
) -> tuple[int, Any, bytes]:
    headers = {"Authorization": f"Bearer {token}", "Accept": accept}
    async with client.get(path, headers=headers, allow_redirects=False) as resp:
        return resp.status, resp.headers, await resp.read()


async def post_token(client: GatewayClient, **kwargs: Any) -> tuple[int, Any, bytes]:
    async with client.post(TOKEN, **kwargs) as resp:
        return resp.status, resp.headers, await resp.read()


# --- POST /.gateway/token --------------------------------------------------------------------


async def test_token_endpoint_issues_a_bearer_token_for_json_credentials(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    counters = Counters()
    before = int(time.time())
    status, headers, body = await post_token(
        client, json={"username": "bob", "password": PASSWORDS["bob"]}
    )
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "no-store"  # RFC 6749 5.1: responses holding tokens
    assert "Set-Cookie" not in headers  # an API client gets no browser session
    reply = json.loads(body)
    assert set(reply) == {"access_token", "token_type", "expires_in"}
    assert reply["token_type"] == "Bearer"
    assert reply["expires_in"] == API_TTL
    assert counters.minted == 1

    # An independent verifier with only the JWKS accepts it; it is audienced to the gateway.
    _status, _headers, jwks = await fetch(str(client.make_url(JWKS)))
    keys = JoseKeySet.import_key_set(json.loads(jwks))
    decoded = jose_jwt.decode(reply["access_token"], keys, algorithms=["EdDSA"])
    assert decoded.header["kid"] == ed_key.kid
    JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": ISSUER},
        sub={"essential": True, "value": "bob"},
        exp={"essential": True},
        jti={"essential": True},
    ).validate(decoded.claims)
    assert before <= decoded.claims["iat"] <= int(time.time())
    assert decoded.claims["exp"] == decoded.claims["iat"] + API_TTL
    assert recorder.hits == 0


async def test_token_endpoint_is_404_when_api_tokens_are_disabled(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key, api_tokens=False)
    counters = Counters()
    status, _headers, body = await post_token(
        client, json={"username": "alice", "password": PASSWORDS["alice"]}
    )
    assert status == 404
    assert b"access_token" not in body
    assert counters.minted == 0
    assert recorder.hits == 0


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong-password"), ("mallory", "whatever-password"), ("alice", "")],
    ids=["wrong-password", "unknown-user", "empty-password"],
)
async def test_token_endpoint_refuses_bad_credentials_with_401(
    tmp_path: Path,
    recorder: Upstream,
    make_gateway: Any,
    ed_key: KeyFile,
    username: str,
    password: str,
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    counters = Counters()
    status, _headers, body = await post_token(
        client, json={"username": username, "password": password}
    )
    assert status == 401
    assert json.loads(body) == {
        "error": "invalid_credentials",
        "message": "Invalid username or password.",
    }
    assert counters.minted == 0


async def test_token_endpoint_refuses_form_encoded_credentials_with_400(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    counters = Counters()
    status, _headers, body = await post_token(
        client, data={"username": "alice", "password": PASSWORDS["alice"]}
    )
    assert status == 400
    assert b"access_token" not in body
    assert counters.minted == 0


# --- using the token -------------------------------------------------------------------------


async def test_bearer_on_an_accept_bearer_route_is_replaced_by_a_fresh_upstream_token(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    token = await api_token(client, "bob")
    counters = Counters()
    status, _headers, body = await call(client, "/api/v1/things?x=1", token)
    assert status == 200, body
    assert recorder.hits == 1
    received = recorder.last
    assert received.raw_path == "/api/v1/things?x=1"
    upstream = received.bearer
    assert upstream != token
    assert all(token not in value for _name, value in received.headers)  # never the API token
    assert counters.minted == 1  # minted for this request
    claims = claims_of(upstream)
    assert claims["aud"] == API_AUDIENCE
    assert (claims["iss"], claims["sub"]) == (ISSUER, "bob")
    assert claims["jti"] != claims_of(token)["jti"]
    assert claims["roles"] == ["dev", "ops"] and claims["email"] == "bob@example.com"
    assert header_of(upstream)["kid"] == ed_key.kid
    assert received.auth_like() == [
        ("X-Auth-User", "bob"),
        ("X-Auth-Email", "bob@example.com"),
        ("X-Auth-Roles", "dev,ops"),
    ]
    # The upstream token verifies with the JWKS alone, for the route's audience.
    _status, _headers, jwks = await fetch(str(client.make_url(JWKS)))
    decoded = jose_jwt.decode(
        upstream, JoseKeySet.import_key_set(json.loads(jwks)), algorithms=["EdDSA"]
    )
    JWTClaimsRegistry(aud={"essential": True, "value": API_AUDIENCE}).validate(decoded.claims)


async def test_repeated_calls_with_one_api_token_reuse_one_upstream_token(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    first, second = await api_token(client), await api_token(client)
    counters = Counters()
    for token in (first, first, second, first, second):
        assert (await call(client, "/api/x", token))[0] == 200
    assert (counters.minted, counters.hits) == (2, 3)
    a, a2, b, a3, b2 = (seen.bearer for seen in recorder.received)
    assert a == a2 == a3 and b == b2 and a != b
    assert claims_of(a)["sid"] != claims_of(b)["sid"]


@pytest.mark.parametrize(
    ("path", "accept", "status", "location"),
    [
        ("/plain/x", "application/json", 401, None),
        ("/web/x", HTML, 302, "/.gateway/login?rd=%2Fweb%2Fx"),
    ],
    ids=["status-route", "browser-route"],
)
async def test_bearer_on_a_protected_route_without_accept_bearer_is_anonymous(
    tmp_path: Path,
    recorder: Upstream,
    make_gateway: Any,
    ed_key: KeyFile,
    path: str,
    accept: str,
    status: int,
    location: str | None,
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    token = await api_token(client)
    assert (await call(client, "/api/x", token))[0] == 200  # a good token where accepted
    got, headers, body = await call(client, path, token, accept=accept)
    assert got == status
    assert headers.get("Location") == location
    if status == 401:
        assert headers["WWW-Authenticate"] == UNAUTHENTICATED  # plainly anonymous, no error
        assert json.loads(body)["error"] == "unauthenticated"
    assert recorder.hits == 1


async def test_bearer_on_a_public_route_without_accept_bearer_is_not_forwarded(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    token = await api_token(client)
    status, _headers, _body = await call(client, "/public/x", token)
    assert status == 200
    assert recorder.last.values("Authorization") == []
    assert all(token not in value for _name, value in recorder.last.headers)


async def test_bearer_of_a_user_removed_from_the_directory_is_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    issuing = await gateway(make_gateway, recorder, tmp_path, ed_key)
    token = await api_token(issuing, "bob")
    without_bob = users("alice", "carol", "dave")
    same_keys = await gateway(make_gateway, recorder, tmp_path, ed_key)
    reloaded = await gateway(make_gateway, recorder, tmp_path, ed_key, users=without_bob)

    assert (await call(same_keys, "/api/x", token))[0] == 200  # the same keys accept it ...
    status, headers, _body = await call(reloaded, "/api/x", token)
    assert status == 401  # ... but not once bob is gone
    challenge = headers["WWW-Authenticate"]
    prefix = 'Bearer realm="gateway", error="invalid_token", error_description="'
    assert challenge.startswith(prefix) and challenge.endswith('"')
    assert len(challenge) > len(prefix) + 1  # a description is given
    assert recorder.hits == 1
