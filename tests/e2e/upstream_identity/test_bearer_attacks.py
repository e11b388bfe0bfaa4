"""Attacks on ``accept_bearer`` routes through HTTP, each by its own test.

Every attack is refused with 401 and ``WWW-Authenticate: Bearer realm="gateway",
error="invalid_token", error_description="..."``, and the upstream is never called. The attack
tokens are made by hand with OUR private key wherever possible, so that each differs from an
accepted token (see the control test) in the one property under attack.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from gateway.identity.users import credential_stamp
from tests.configs import USERS
from tests.e2e.upstream_identity.identity_harness import (
    API_AUDIENCE,
    HMAC_KID,
    HMAC_SECRET,
    ISSUER,
    JWKS,
    KeyFile,
    api_token,
    claims_of,
    fetch,
    hmac_key,
    identity_config,
    login,
    sign,
    write_key,
)
from tests.support import GatewayClient
from tests.tokens.token_helpers import b64url, b64url_json, new_private_key, unb64url
from tests.upstreams import Received, Upstream

API = "/api/v1/orders"
# The credential stamp a token of alice's must carry to be hers (see gateway.identity.users).
ALICE_STAMP = credential_stamp("alice", USERS["alice"]["password_hash"])


def challenge(description: str) -> str:
    return f'Bearer realm="gateway", error="invalid_token", error_description="{description}"'


def api_claims(**changes: Any) -> dict[str, Any]:
    """Claims of a valid API token right now; ``None`` removes a claim."""
    now = int(time.time()) - 1
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "hand-made-0123456789",
        "cst": ALICE_STAMP,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def ours(key: KeyFile, header: dict[str, Any] | None = None, **changes: Any) -> str:
    """A token signed with our own key; ``header`` replaces the usual one."""
    if header is None:
        header = {"alg": key.alg, "typ": "JWT", "kid": key.kid}
    return sign(header, api_claims(**changes), key.private_key(), key.alg)


async def gateway(
    make_gateway: Any, recorder: Upstream, tmp_path: Path, key: KeyFile
) -> GatewayClient:
    client: GatewayClient = await make_gateway(
        identity_config(recorder.url, tmp_path, [key.setting], api_tokens=True)
    )
    return client


async def call(
    client: GatewayClient, token: str, *, cookie: str | None = None
) -> tuple[int, Any, bytes]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if cookie is not None:
        headers["Cookie"] = cookie
    async with client.get(API, headers=headers, allow_redirects=False) as resp:
        return resp.status, resp.headers, await resp.read()


async def assert_refused(
    client: GatewayClient,
    recorder: Upstream,
    token: str,
    description: str | set[str],
    **kwargs: Any,
) -> None:
    status, headers, body = await call(client, token, **kwargs)
    assert status == 401, body
    allowed = {description} if isinstance(description, str) else description
    assert headers["WWW-Authenticate"] in {challenge(d) for d in allowed}
    assert json.loads(body)["error"] == "unauthenticated"
    assert recorder.hits == 0, "the upstream was called"


async def test_control_a_hand_made_token_with_our_key_is_accepted(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    status, _headers, body = await call(client, ours(ed_key))
    assert status == 200, body
    assert recorder.hits == 1


@pytest.mark.parametrize(
    ("signature", "description"),
    [("", "malformed token"), ("c2ln", "algorithm not allowed")],
    ids=["empty-signature", "some-signature"],
)
async def test_alg_none_is_refused(
    tmp_path: Path,
    recorder: Upstream,
    make_gateway: Any,
    ed_key: KeyFile,
    signature: str,
    description: str,
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    header = {"alg": "none", "typ": "JWT", "kid": ed_key.kid}
    token = f"{b64url_json(header)}.{b64url_json(api_claims())}.{signature}"
    await assert_refused(client, recorder, token, description)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
@pytest.mark.parametrize("secret_from", ["public-key-pem", "jwks-over-http"])
async def test_hs256_signed_with_our_public_key_is_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, alg: str, secret_from: str
) -> None:
    # Algorithm confusion: HMAC with our PUBLIC key as the secret, hoping "the key" goes to HMAC.
    key = write_key(tmp_path, alg)
    client = await gateway(make_gateway, recorder, tmp_path, key)
    if secret_from == "public-key-pem":
        secret = (
            key.private_key()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    else:
        _status, _headers, secret = await fetch(str(client.make_url(JWKS)))
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{b64url_json(header)}.{b64url_json(api_claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64url(mac)}"
    await assert_refused(client, recorder, forged, "algorithm not allowed")


async def test_unknown_kid_is_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    token = ours(ed_key, {"alg": "EdDSA", "typ": "JWT", "kid": "somebody-elses-key"})
    await assert_refused(client, recorder, token, "unknown signing key")


async def test_expired_token_is_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    now = int(time.time())
    token = ours(ed_key, iat=now - 600, nbf=now - 600, exp=now - 5)
    await assert_refused(client, recorder, token, "token expired")


async def test_not_yet_valid_token_is_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    token = ours(ed_key, nbf=int(time.time()) + 300)
    await assert_refused(client, recorder, token, "token not yet valid")


async def test_wrong_issuer_is_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    token = ours(ed_key, iss="https://evil.example.com")
    await assert_refused(client, recorder, token, "invalid issuer")


@pytest.mark.parametrize(
    "audience",
    ["https://other.example.com", API_AUDIENCE, "app", [API_AUDIENCE, ISSUER]],
    ids=["foreign", "this-routes-audience", "another-upstream", "list-with-issuer"],
)
async def test_wrong_audience_is_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile, audience: Any
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    await assert_refused(client, recorder, ours(ed_key, aud=audience), "invalid audience")


@pytest.mark.parametrize(
    "extra",
    [{"crit": ["exp"], "exp": 1}, {"crit": ["b64"], "b64": True}, {"crit": ["x-custom"]}],
    ids=["registered-name", "b64", "unknown-extension"],
)
async def test_crit_header_is_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile, extra: dict[str, Any]
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    token = ours(ed_key, {"alg": "EdDSA", "typ": "JWT", "kid": ed_key.kid, **extra})
    await assert_refused(client, recorder, token, "unsupported token header")


@pytest.mark.parametrize("byte", [0, 31, -1], ids=["first-byte", "middle-byte", "last-byte"])
async def test_forged_signature_is_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile, byte: int
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    head, body, signature = ours(ed_key).split(".")
    raw = bytearray(unb64url(signature))
    raw[byte] ^= 0x01
    await assert_refused(
        client, recorder, f"{head}.{body}.{b64url(bytes(raw))}", "invalid signature"
    )


async def test_changed_claims_under_our_signature_are_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    genuine = await api_token(client, "carol")
    head, _body, signature = genuine.split(".")
    forged = f"{head}.{b64url_json({**claims_of(genuine), 'sub': 'alice'})}.{signature}"
    await assert_refused(client, recorder, forged, "invalid signature")


async def test_10kb_token_is_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    token = ours(ed_key, padding="x" * 10_000)  # otherwise valid: our key, our claims
    assert len(token) > 10 * 1024
    await assert_refused(client, recorder, token, "token too large")


@pytest.mark.parametrize(
    ("captured_on", "audience"),
    [("/members/x", "app"), ("/api/x", API_AUDIENCE)],
    ids=["from-another-route", "from-this-very-route"],
)
async def test_upstream_token_replayed_as_bearer_is_refused(
    tmp_path: Path,
    recorder: Upstream,
    make_gateway: Any,
    ed_key: KeyFile,
    captured_on: str,
    audience: str,
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    alice = await login(client)
    assert (await alice.get(captured_on)).status == 200
    captured = recorder.last.bearer  # what a leaky or malicious upstream holds
    assert claims_of(captured)["aud"] == audience
    recorder.received.clear()
    await assert_refused(client, recorder, captured, "invalid audience")


async def test_hs256_token_made_with_the_shared_hmac_secret_is_refused(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    # HS256 signs upstream tokens for legacy backends, which therefore hold the secret: a token
    # they can make (even with every claim of a genuine API token) must be no credential.
    document = identity_config(
        recorder.url, tmp_path, [hmac_key(), ed_key.setting], api_tokens=True
    )
    client = await make_gateway(document)
    genuine = await api_token(client)
    assert (await call(client, genuine))[0] == 200  # API tokens are signed by the EdDSA key
    assert recorder.last.bearer.split(".")[0] != genuine.split(".")[0]
    recorder.received.clear()
    header = {"alg": "HS256", "typ": "JWT", "kid": HMAC_KID}
    forged = sign(header, claims_of(genuine), HMAC_SECRET, "HS256")
    await assert_refused(client, recorder, forged, "algorithm not allowed")


def key_server(jwks: dict[str, Any]) -> Upstream:
    """An attacker's server offering a JWKS (and a certificate URL); records every hit."""

    async def offer(request: web.Request, received: Received) -> web.Response:
        return web.json_response(jwks)

    return Upstream(offer)


@pytest.mark.parametrize(
    ("kid_of", "description"),
    [("attacker", "unknown signing key"), ("ours", "invalid signature")],
    ids=["attacker-kid", "our-kid"],
)
async def test_jku_x5u_and_jwk_headers_are_ignored_and_nothing_is_fetched(
    tmp_path: Path,
    recorder: Upstream,
    make_gateway: Any,
    ed_key: KeyFile,
    kid_of: str,
    description: str,
) -> None:
    attacker = new_private_key("EdDSA")
    jwk = pyjwt.algorithms.OKPAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    kid = "attacker-key" if kid_of == "attacker" else ed_key.kid
    jwks = {"keys": [{**jwk, "kid": kid, "alg": "EdDSA", "use": "sig"}]}
    async with key_server(jwks) as attackers:
        client = await gateway(make_gateway, recorder, tmp_path, ed_key)
        header = {
            "alg": "EdDSA",
            "typ": "JWT",
            "kid": kid,
            "jku": f"{attackers.url}/jwks.json",
            "x5u": f"{attackers.url}/cert.pem",
            "jwk": {**jwk, "kid": kid},
        }
        token = sign(header, api_claims(), attacker, "EdDSA")
        await assert_refused(client, recorder, token, description)
        assert attackers.received == []


@pytest.mark.parametrize(
    ("bad", "description"),
    [("junk", "malformed token"), ("", "malformed token"), ("expired", "token expired")],
    ids=["junk", "empty", "expired"],
)
async def test_a_failed_bearer_never_falls_back_to_the_session_cookie(
    tmp_path: Path,
    recorder: Upstream,
    make_gateway: Any,
    ed_key: KeyFile,
    bad: str,
    description: str,
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    alice = await login(client)
    cookie = f"gw_session={alice.session}"
    if bad == "expired":
        now = int(time.time())
        bad = ours(ed_key, iat=now - 600, nbf=now - 600, exp=now - 5)
    await assert_refused(client, recorder, bad, description, cookie=cookie)
    # The same cookie alone is a valid caller on the same route.
    async with client.get(API, headers={"Cookie": cookie, "Accept": "application/json"}) as resp:
        assert resp.status == 200
    assert claims_of(recorder.last.bearer)["sub"] == "alice"
