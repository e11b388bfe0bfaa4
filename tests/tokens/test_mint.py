"""Minting: the exact header and claims of CONTRACT section 4, claim selection, API tokens."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.config.settings import ApiTokenSettings, SigningKeySettings
from gateway.identity.users import User
from gateway.tokens import KeySet, TokenMinter, load_keyset, session_claim
from tests.tokens.token_helpers import (
    ALGORITHMS,
    ISSUER,
    NOW,
    header_of,
    key_file,
    keyset_of,
    payload_of,
    session,
    token_settings,
    user,
)

REGISTERED = {"iss", "sub", "aud", "iat", "nbf", "exp", "jti"}


@pytest.fixture
def keyset(tmp_path: Path) -> KeySet:
    return keyset_of(tmp_path, "EdDSA")


def minter(keyset: KeySet, **kwargs: object) -> TokenMinter:
    return TokenMinter(keyset, token_settings(**kwargs))


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_header_is_alg_typ_kid_and_pyjwt_verifies_the_token(tmp_path: Path, alg: str) -> None:
    keys = keyset_of(tmp_path, alg)
    token = minter(keys).mint_upstream(user(), session(), audience="app", ttl_s=60, now=NOW)
    assert header_of(token) == {"alg": alg, "typ": "JWT", "kid": keys.signing.kid}
    public, _alg = keys.verification(keys.signing.kid) or (None, None)
    claims = jwt.decode(
        token,
        public,
        algorithms=[alg],
        audience="app",
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims == payload_of(token)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_minting_never_parses_a_pem_key(
    tmp_path: Path, alg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = keyset_of(tmp_path, alg)  # parsed here, once

    def must_not_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parsed a PEM key while minting")

    monkeypatch.setattr(serialization, "load_pem_private_key", must_not_parse)
    monkeypatch.setattr(jwt.algorithms, "load_pem_private_key", must_not_parse)
    mint = minter(keys)
    for _ in range(3):
        mint.mint_upstream(user(), session(), audience="app", ttl_s=60, now=NOW)
    mint.mint_api(user(), now=NOW)


def test_non_ascii_identity_claims_round_trip(keyset: KeySet) -> None:
    account = user(name="Zoë Ünal-Łukasiewicz", email="zoë@exämple.com")
    token = minter(keyset).mint_upstream(account, session(), audience="app", ttl_s=60, now=NOW)
    assert token.isascii()
    claims = payload_of(token)
    assert (claims["name"], claims["email"]) == (account.name, account.email)


def test_upstream_claims_are_exactly_the_contract(keyset: KeySet) -> None:
    token = minter(keyset).mint_upstream(
        user(), session(), audience="admin-ui", ttl_s=30, now=NOW + 0.75
    )
    claims = payload_of(token)
    assert set(claims) == REGISTERED | {"sid", "name", "email", "roles"}
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "alice"
    assert claims["aud"] == "admin-ui"
    assert claims["iat"] == claims["nbf"] == int(NOW)
    assert claims["exp"] == int(NOW) + 30
    for name in ("iat", "nbf", "exp"):
        assert type(claims[name]) is int
    assert claims["name"] == "Alice Example"
    assert claims["email"] == "alice@example.com"
    assert claims["roles"] == ["admin", "editor"]  # sorted


def test_jti_is_128_random_url_safe_bits_and_unique(keyset: KeySet) -> None:
    mint = minter(keyset)
    jtis = {
        payload_of(mint.mint_upstream(user(), session(), audience="app", ttl_s=60, now=NOW))["jti"]
        for _ in range(50)
    }
    assert len(jtis) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", jti) for jti in jtis)


def test_sid_is_a_one_way_hash_of_the_session(keyset: KeySet) -> None:
    session_id = "the-cookie-value"
    one = session("5e" * 32)
    sid = payload_of(minter(keyset).mint_upstream(user(), one, audience="app", ttl_s=60, now=NOW))[
        "sid"
    ]
    assert sid == session_claim(one.sid_hash)
    assert sid not in (one.sid_hash, session_id)
    assert one.sid_hash not in sid and sid.lower() != one.sid_hash
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid)
    again = minter(keyset).mint_upstream(user(), one, audience="other", ttl_s=5, now=NOW + 9)
    assert payload_of(again)["sid"] == sid  # stable per session: upstreams can correlate
    other = minter(keyset).mint_upstream(
        user(), session("77" * 32), audience="app", ttl_s=60, now=NOW
    )
    assert payload_of(other)["sid"] != sid


@pytest.mark.parametrize(
    ("ttl_s", "lifetime"),
    [(60.0, 60), (30.0, 30), (0.5, 1), (59.2, 60), (86400.0, 86400)],
    ids=["60s", "30s", "500ms-rounds-up", "fraction-rounds-up", "1d"],
)
def test_exp_is_iat_plus_the_ttl_in_whole_seconds(
    keyset: KeySet, ttl_s: float, lifetime: int
) -> None:
    claims = payload_of(
        minter(keyset).mint_upstream(user(), session(), audience="app", ttl_s=ttl_s, now=NOW)
    )
    assert claims["exp"] - claims["iat"] == lifetime


@pytest.mark.parametrize(
    ("selected", "account", "identity"),
    [
        pytest.param((), user(), {}, id="none-selected"),
        pytest.param(("email",), user(email=None), {}, id="email-none-omitted"),
        pytest.param(("name",), user(), {"name": "Alice Example"}, id="name-only"),
        pytest.param(("roles",), user(roles=frozenset()), {"roles": []}, id="no-roles-empty-list"),
        pytest.param(
            ("name", "email", "roles"),
            user(name=None, email=None, roles=frozenset({"b", "a"})),
            {"roles": ["a", "b"]},
            id="all-with-none-values",
        ),
    ],
)
def test_identity_claims_follow_tokens_claims(
    keyset: KeySet, selected: tuple[str, ...], account: User, identity: dict[str, object]
) -> None:
    token = minter(keyset, claims=selected).mint_upstream(
        account, session(), audience="app", ttl_s=60, now=NOW
    )
    claims = payload_of(token)
    assert {name: claims[name] for name in set(claims) - REGISTERED - {"sid"}} == identity


def test_upstream_audience_equal_to_the_issuer_is_refused(keyset: KeySet) -> None:
    with pytest.raises(ValueError, match="audience must differ from the issuer"):
        minter(keyset).mint_upstream(user(), session(), audience=ISSUER, ttl_s=60, now=NOW)


def test_first_key_signs_after_rotation(tmp_path: Path) -> None:
    keys = keyset_of(tmp_path, "ES256", "EdDSA")
    token = minter(keys).mint_upstream(user(), session(), audience="app", ttl_s=60, now=NOW)
    assert header_of(token)["kid"] == keys.keys[0].kid


def test_hmac_signing_key_mints_hs256_tokens(tmp_path: Path) -> None:
    secret = b"k" * 32
    keys = load_keyset(
        token_settings(SigningKeySettings(hmac_secret=secret, kid="legacy")), tmp_path
    )
    token = TokenMinter(keys, token_settings()).mint_upstream(
        user(), session(), audience="app", ttl_s=60, now=NOW
    )
    assert header_of(token) == {"alg": "HS256", "typ": "JWT", "kid": "legacy"}
    claims = jwt.decode(
        token,
        secret,
        algorithms=["HS256"],
        audience="app",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == "alice"


# --- API tokens ------------------------------------------------------------------------------


def test_api_token_is_for_the_gateway_itself(keyset: KeySet) -> None:
    settings = dataclasses.replace(
        token_settings(), api_tokens=ApiTokenSettings(enabled=True, ttl_s=3600.0)
    )
    token, expires_in = TokenMinter(keyset, settings).mint_api(user(), now=NOW + 0.4)
    claims = payload_of(token)
    assert expires_in == 3600
    # No sid (no session), no identity claims (looked up afresh); the credential stamp.
    assert set(claims) == REGISTERED | {"cst"}
    assert claims["cst"] == user().stamp
    assert claims["aud"] == claims["iss"] == ISSUER
    assert claims["sub"] == "alice"
    assert claims["iat"] == claims["nbf"] == int(NOW)
    assert claims["exp"] == int(NOW) + 3600
    assert header_of(token) == {"alg": "EdDSA", "typ": "JWT", "kid": keyset.signing.kid}


def test_api_tokens_are_signed_by_the_first_asymmetric_key(tmp_path: Path) -> None:
    keys = load_keyset(
        token_settings(
            SigningKeySettings(hmac_secret=b"k" * 32, kid="legacy"),
            SigningKeySettings(file=key_file(tmp_path, "ES256")),
        ),
        tmp_path,
    )
    token, _ = TokenMinter(keys, token_settings()).mint_api(user(), now=NOW)
    assert header_of(token)["alg"] == "ES256"
    assert header_of(token)["kid"] == keys.keys[1].kid


def test_api_tokens_need_an_asymmetric_key(tmp_path: Path) -> None:
    keys = load_keyset(token_settings(SigningKeySettings(hmac_secret=b"k" * 32)), tmp_path)
    with pytest.raises(RuntimeError, match="asymmetric"):
        TokenMinter(keys, token_settings()).mint_api(user(), now=NOW)
