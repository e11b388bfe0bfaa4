"""An independent JOSE implementation (joserfc) verifies our tokens knowing only the JWKS JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from joserfc import jwt as jose_jwt
from joserfc.errors import BadSignatureError, InvalidClaimError, InvalidKeyIdError
from joserfc.jwk import KeySet as JoseKeySet
from joserfc.jwt import JWTClaimsRegistry

from gateway.config.settings import SigningKeySettings
from gateway.tokens import KeySet, TokenMinter, load_keyset
from tests.tokens.token_helpers import (
    ALGORITHMS,
    ISSUER,
    NOW,
    key_file,
    session,
    token_settings,
    user,
)

# RFC 9864 deprecates "EdDSA" for the fully-specified "Ed25519"; the contract names EdDSA, which
# far more verifiers know today, so joserfc's deprecation notice is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")


def verify_with_jwks(jwks_json: bytes, token: str, *, alg: str, audience: str) -> dict[str, Any]:
    """What an upstream does: import the published JWKS, check signature and claims."""
    keys = JoseKeySet.import_key_set(json.loads(jwks_json))
    decoded = jose_jwt.decode(token, keys, algorithms=[alg])
    JWTClaimsRegistry(
        now=int(NOW) + 1,
        leeway=0,
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": audience},
        sub={"essential": True},
        exp={"essential": True},
        nbf={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
    ).validate(decoded.claims)
    return dict(decoded.claims)


def keyset_from(tmp_path: Path, *files: Path) -> KeySet:
    return load_keyset(token_settings(*(SigningKeySettings(file=f) for f in files)), tmp_path)


def mint(keyset: KeySet, audience: str = "app") -> str:
    return TokenMinter(keyset, token_settings()).mint_upstream(
        user(), session(), audience=audience, ttl_s=60, now=NOW
    )


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_upstream_token_verifies_with_only_the_jwks(tmp_path: Path, alg: str) -> None:
    keyset = keyset_from(tmp_path, key_file(tmp_path, alg))
    claims = verify_with_jwks(keyset.jwks_json, mint(keyset), alg=alg, audience="app")
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["admin", "editor"]


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_wrong_audience_fails_joserfc_claims_check(tmp_path: Path, alg: str) -> None:
    keyset = keyset_from(tmp_path, key_file(tmp_path, alg))
    with pytest.raises(InvalidClaimError, match="aud"):
        verify_with_jwks(keyset.jwks_json, mint(keyset, "admin-ui"), alg=alg, audience="app")


@pytest.mark.parametrize(
    ("new_alg", "old_alg"), [("EdDSA", "RS256"), ("ES256", "EdDSA"), ("RS256", "ES256")]
)
def test_key_rotation_new_key_signs_old_tokens_still_verify(
    tmp_path: Path, new_alg: str, old_alg: str
) -> None:
    old_file = key_file(tmp_path, old_alg, "old.pem")
    new_file = key_file(tmp_path, new_alg, "new.pem")
    before = keyset_from(tmp_path, old_file)
    token_before = mint(before)

    after = keyset_from(tmp_path, new_file, old_file)
    token_after = mint(after)
    assert json.loads(after.jwks_json)["keys"][0]["kid"] == after.signing.kid
    assert token_after.split(".")[0] != token_before.split(".")[0]  # a different kid signs

    assert verify_with_jwks(after.jwks_json, token_after, alg=new_alg, audience="app")
    assert verify_with_jwks(after.jwks_json, token_before, alg=old_alg, audience="app")
    # Once the old key is retired from the set, its tokens no longer verify.
    retired = keyset_from(tmp_path, new_file)
    with pytest.raises(InvalidKeyIdError):
        verify_with_jwks(retired.jwks_json, token_before, alg=old_alg, audience="app")


def test_token_from_another_key_with_the_same_kid_fails(tmp_path: Path) -> None:
    ours = keyset_from(tmp_path, key_file(tmp_path, "EdDSA", "ours.pem"))
    theirs = load_keyset(
        token_settings(
            SigningKeySettings(file=key_file(tmp_path, "EdDSA", "theirs.pem"), kid=ours.signing.kid)
        ),
        tmp_path,
    )
    with pytest.raises(BadSignatureError):
        verify_with_jwks(ours.jwks_json, mint(theirs), alg="EdDSA", audience="app")


async def test_jwks_bytes_served_over_http_verify_tokens(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    keyset = keyset_from(tmp_path, key_file(tmp_path, "ES256"), key_file(tmp_path, "EdDSA"))

    async def jwks(request: web.Request) -> web.Response:
        return web.Response(body=keyset.jwks_json, content_type="application/json")

    app = web.Application()
    app.router.add_get("/.gateway/jwks.json", jwks)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    response = await client.get("/.gateway/jwks.json")
    fetched = await response.read()
    assert verify_with_jwks(fetched, mint(keyset), alg="ES256", audience="app")
