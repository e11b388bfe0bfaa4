"""API bearer token verification: what passes, and every attack refused, each by its own test."""

from __future__ import annotations

import hashlib
import hmac
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import time_machine
from cryptography.hazmat.primitives import serialization

from gateway.config.settings import SigningKeySettings
from gateway.errors import Unauthenticated
from gateway.tokens import InvalidBearer, KeySet, TokenMinter, load_keyset, verify_api_token
from gateway.tokens.verify import MAX_BEARER_BYTES
from tests.tokens.token_helpers import (
    ISSUER,
    NOW,
    b64url,
    b64url_json,
    key_file,
    keyset_of,
    new_private_key,
    session,
    token_settings,
    unb64url,
    user,
)

T0 = int(NOW)
DESCRIPTIONS = {
    "token too large",
    "malformed token",
    "unsupported token header",
    "unknown signing key",
    "algorithm not allowed",
    "invalid signature",
    "invalid audience",
    "invalid issuer",
    "missing claim",
    "invalid token",
    "token expired",
    "token not yet valid",
    "token issued in the future",
}


@pytest.fixture(autouse=True)
def clock() -> Iterator[time_machine.Traveller]:
    """The wall clock pyjwt reads, stopped one second after the tokens' ``iat``; tests move it."""
    with time_machine.travel(NOW + 1, tick=False) as traveller:
        yield traveller


@pytest.fixture
def keyset(tmp_path: Path) -> KeySet:
    return keyset_of(tmp_path, "EdDSA")


def claims(**changes: Any) -> dict[str, Any]:
    """The claims of a valid API token, with ``changes`` (``None`` removes a claim)."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": ISSUER,
        "iat": T0,
        "nbf": T0,
        "exp": T0 + 3600,
        "jti": "3q2-7wAAAAAAAAAAAAAAAA",
        "cst": "c3RhbXAtb2YtYWxpY2U",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def sign(header: dict[str, Any], payload: dict[str, Any], key: Any, alg: str) -> str:
    """A token signed exactly as given (pyjwt's encode adds and checks things we must not)."""
    signing_input = f"{b64url_json(header)}.{b64url_json(payload)}"
    signature = jwt.get_algorithm_by_name(alg).sign(signing_input.encode(), key)
    return f"{signing_input}.{b64url(signature)}"


def ours(keyset: KeySet, header: dict[str, Any] | None = None, **changes: Any) -> str:
    """A token signed with our own signing key; ``header`` replaces the usual one."""
    key = keyset.signing
    if header is None:
        header = {"alg": key.alg, "typ": "JWT", "kid": key.kid}
    return sign(header, claims(**changes), key.private_key, key.alg)


def verify(token: str, keyset: KeySet, **kwargs: Any) -> Any:
    return verify_api_token(token, keyset, issuer=ISSUER, **kwargs)


def refused(token: str, keyset: KeySet, **kwargs: Any) -> InvalidBearer:
    with pytest.raises(InvalidBearer) as info:
        verify(token, keyset, **kwargs)
    error = info.value
    assert error.status == 401 and isinstance(error, Unauthenticated)
    assert error.error == "invalid_token"
    assert error.description in DESCRIPTIONS
    if len(token) >= 8:
        assert token[:20] not in str(error)  # nothing from the token, ever
    return error


# --- what passes -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_api_token_minted_by_the_gateway_is_accepted(tmp_path: Path, alg: str) -> None:
    keyset = keyset_of(tmp_path, alg)
    token, _ = TokenMinter(keyset, token_settings()).mint_api(user(), now=NOW)
    accepted = verify(token, keyset)
    assert accepted.subject == "alice"
    assert (accepted.issued_at, accepted.expires_at) == (T0, T0 + 3600)
    assert accepted.claims["aud"] == ISSUER
    assert accepted.sid_hash.startswith("api-") and accepted.jti not in accepted.sid_hash


def test_token_signed_by_an_older_key_still_in_the_set_is_accepted(tmp_path: Path) -> None:
    old = key_file(tmp_path, "ES256", "old.pem")
    before = load_keyset(token_settings(SigningKeySettings(file=old)), tmp_path)
    token, _ = TokenMinter(before, token_settings()).mint_api(user(), now=NOW)
    after = load_keyset(
        token_settings(
            SigningKeySettings(file=key_file(tmp_path, "EdDSA", "new.pem")),
            SigningKeySettings(file=old),
        ),
        tmp_path,
    )
    assert verify(token, after).subject == "alice"


def test_leeway_tolerates_a_little_clock_skew(
    keyset: KeySet, clock: time_machine.Traveller
) -> None:
    token = ours(keyset, exp=T0 + 10)
    clock.move_to(T0 + 15)
    assert verify(token, keyset, leeway_s=10).subject == "alice"
    assert refused(token, keyset).reason == "bearer_expired"


def test_leeway_tolerates_a_token_from_a_clock_slightly_ahead(
    keyset: KeySet, clock: time_machine.Traveller
) -> None:
    token = ours(keyset, iat=T0 + 5, nbf=T0 + 5)
    clock.move_to(T0)
    assert verify(token, keyset, leeway_s=10).subject == "alice"
    assert refused(token, keyset).reason == "bearer_iat_future"


# --- attacks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("signature", ["", "c2ln"], ids=["empty-signature", "any-signature"])
def test_alg_none_is_refused(keyset: KeySet, signature: str) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": keyset.signing.kid}
    token = f"{b64url_json(header)}.{b64url_json(claims())}.{signature}"
    error = refused(token, keyset)
    assert error.reason in ("bearer_malformed", "bearer_alg")


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_hs256_signed_with_our_public_key_is_refused(tmp_path: Path, alg: str) -> None:
    # Algorithm confusion: the attacker HMACs with our PUBLIC key (PEM or JWK JSON) as the
    # secret, hoping the verifier feeds "the key" to HMAC. pyjwt refuses to build this, so by hand.
    keyset = keyset_of(tmp_path, alg)
    public = keyset.signing.verification_key
    assert not isinstance(public, bytes)
    secrets = [
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        keyset.jwks_json,
    ]
    for secret in secrets:
        header = {"alg": "HS256", "typ": "JWT", "kid": keyset.signing.kid}
        signing_input = f"{b64url_json(header)}.{b64url_json(claims())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        error = refused(f"{signing_input}.{b64url(mac)}", keyset)
        assert (error.reason, error.description) == ("bearer_alg", "algorithm not allowed")


def test_hs256_signed_with_our_hmac_secret_is_refused(tmp_path: Path) -> None:
    # HMAC secrets are shared with (legacy) upstreams: a token they can make is no credential.
    secret = b"s" * 32
    keyset = load_keyset(
        token_settings(
            SigningKeySettings(hmac_secret=secret, kid="legacy"),
            SigningKeySettings(file=key_file(tmp_path, "EdDSA")),
        ),
        tmp_path,
    )
    token = sign({"alg": "HS256", "typ": "JWT", "kid": "legacy"}, claims(), secret, "HS256")
    assert refused(token, keyset).reason == "bearer_alg"


def test_rs256_es256_mixup_is_refused(tmp_path: Path) -> None:
    keyset = keyset_of(tmp_path, "ES256", "RS256")
    es_key, rs_key = keyset.keys
    # Signed by our RSA key but claiming the EC key's kid (and the other way round).
    token = sign(
        {"alg": "RS256", "typ": "JWT", "kid": es_key.kid}, claims(), rs_key.private_key, "RS256"
    )
    assert refused(token, keyset).reason == "bearer_alg"
    token = sign(
        {"alg": "ES256", "typ": "JWT", "kid": rs_key.kid}, claims(), es_key.private_key, "ES256"
    )
    assert refused(token, keyset).reason == "bearer_alg"


def test_unknown_kid_is_refused(keyset: KeySet) -> None:
    header = {"alg": "EdDSA", "typ": "JWT", "kid": "somebody-elses-key"}
    error = refused(ours(keyset, header), keyset)
    assert (error.reason, error.description) == ("bearer_unknown_kid", "unknown signing key")


def test_missing_kid_is_refused(keyset: KeySet) -> None:
    error = refused(ours(keyset, {"alg": "EdDSA", "typ": "JWT"}), keyset)
    assert error.reason == "bearer_no_kid"


def test_expired_token_is_refused(keyset: KeySet, clock: time_machine.Traveller) -> None:
    token = ours(keyset, exp=T0 + 60)
    clock.move_to(T0 + 59.9)
    assert verify(token, keyset).subject == "alice"
    clock.shift(0.1)  # exp is the first instant at which the token is refused
    error = refused(token, keyset)
    assert (error.reason, error.description) == ("bearer_expired", "token expired")
    clock.shift(1)
    assert refused(token, keyset).reason == "bearer_expired"


def test_not_yet_valid_token_is_refused(keyset: KeySet, clock: time_machine.Traveller) -> None:
    token = ours(keyset, nbf=T0 + 300)
    error = refused(token, keyset)
    assert (error.reason, error.description) == ("bearer_not_yet_valid", "token not yet valid")
    clock.move_to(T0 + 300)
    assert verify(token, keyset).subject == "alice"


def test_token_issued_in_the_future_is_refused(
    keyset: KeySet, clock: time_machine.Traveller
) -> None:
    # pyjwt raises ImmatureSignatureError for a future iat as for a future nbf: told apart here.
    token = ours(keyset, iat=T0 + 300)
    error = refused(token, keyset)
    assert (error.reason, error.description) == ("bearer_iat_future", "token issued in the future")
    clock.move_to(T0 + 300)
    assert verify(token, keyset).subject == "alice"


def test_wrong_issuer_is_refused(keyset: KeySet) -> None:
    error = refused(ours(keyset, iss="https://evil.example.com"), keyset)
    assert (error.reason, error.description) == ("bearer_issuer", "invalid issuer")


def test_wrong_audience_is_refused(keyset: KeySet) -> None:
    error = refused(ours(keyset, aud="https://other.example.com"), keyset)
    assert (error.reason, error.description) == ("bearer_audience", "invalid audience")


def test_audience_list_holding_the_issuer_is_refused(keyset: KeySet) -> None:
    assert refused(ours(keyset, aud=[ISSUER, "app"]), keyset).reason == "bearer_audience"


def test_upstream_token_replayed_as_bearer_is_refused(keyset: KeySet) -> None:
    # An upstream that leaks or replays the token it received must not call other routes.
    upstream = TokenMinter(keyset, token_settings()).mint_upstream(
        user(), session(), audience="app", ttl_s=60, now=NOW
    )
    error = refused(upstream, keyset)
    assert (error.reason, error.description) == ("bearer_audience", "invalid audience")


@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp"], "exp": 1},
        {"crit": ["b64"], "b64": True},
        {"crit": ["x-custom"]},
        {"crit": []},
        {"crit": "b64"},
    ],
    ids=["unknown-extension", "b64-extension", "absent-extension", "empty", "not-a-list"],
)
def test_crit_header_is_refused(keyset: KeySet, extra: dict[str, Any]) -> None:
    header = {"alg": "EdDSA", "typ": "JWT", "kid": keyset.signing.kid, **extra}
    error = refused(ours(keyset, header), keyset)
    assert error.reason in ("bearer_crit", "bearer_header")  # ours, or pyjwt's own check first
    assert error.description == "unsupported token header"


def test_non_string_kid_is_refused(keyset: KeySet) -> None:
    header = {"alg": "EdDSA", "typ": "JWT", "kid": 7}
    assert refused(ours(keyset, header), keyset).reason == "bearer_header"


def test_forged_signature_is_refused(keyset: KeySet) -> None:
    token = ours(keyset)
    head, body, signature = token.split(".")
    raw = bytearray(unb64url(signature))
    raw[10] ^= 0x01
    error = refused(f"{head}.{body}.{b64url(bytes(raw))}", keyset)
    assert (error.reason, error.description) == ("bearer_signature", "invalid signature")


def test_changed_claims_under_our_signature_are_refused(keyset: KeySet) -> None:
    head, _body, signature = ours(keyset).split(".")
    forged = f"{head}.{b64url_json(claims(sub='admin'))}.{signature}"
    assert refused(forged, keyset).reason == "bearer_signature"


def test_10kb_token_is_refused_before_any_parsing(
    keyset: KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parsed an oversized token")

    monkeypatch.setattr(jwt, "get_unverified_header", must_not_parse)
    monkeypatch.setattr(jwt, "decode", must_not_parse)
    token = ours(keyset, padding="x" * 10_000)
    assert len(token) > 10_000
    error = refused(token, keyset)
    assert (error.reason, error.description) == ("bearer_too_large", "token too large")
    assert refused("a" * (MAX_BEARER_BYTES + 1), keyset).reason == "bearer_too_large"


def test_jku_pointing_elsewhere_is_ignored_and_nothing_is_fetched(
    keyset: KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[Any] = []

    def record(*args: Any, **kwargs: Any) -> Any:
        fetched.append(args)
        raise AssertionError("the verifier tried to fetch a key")

    monkeypatch.setattr(socket, "create_connection", record)
    monkeypatch.setattr(socket.socket, "connect", record)
    monkeypatch.setattr(urllib.request, "urlopen", record)

    attacker = new_private_key("EdDSA")
    attacker_jwk = jwt.algorithms.OKPAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    for kid in ("attacker-key", keyset.signing.kid):
        header = {
            "alg": "EdDSA",
            "typ": "JWT",
            "kid": kid,
            "jku": "https://evil.example.com/jwks.json",
            "x5u": "https://evil.example.com/cert.pem",
            "jwk": attacker_jwk,
        }
        error = refused(sign(header, claims(), attacker, "EdDSA"), keyset)
        assert error.reason in ("bearer_unknown_kid", "bearer_signature")
    assert fetched == []


def test_token_signed_by_another_ed25519_key_reusing_our_kid_is_refused(keyset: KeySet) -> None:
    attacker = new_private_key("EdDSA")
    header = {"alg": "EdDSA", "typ": "JWT", "kid": keyset.signing.kid}
    error = refused(sign(header, claims(), attacker, "EdDSA"), keyset)
    assert (error.reason, error.description) == ("bearer_signature", "invalid signature")


@pytest.mark.parametrize("missing", ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "cst"])
def test_token_missing_a_required_claim_is_refused(keyset: KeySet, missing: str) -> None:
    assert refused(ours(keyset, **{missing: None}), keyset).reason in (
        "bearer_claims",
        "bearer_audience",
        "bearer_issuer",
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        # pyjwt itself compares int(value), so these pass its checks and are refused by ours.
        ({"exp": float(T0 + 3600)}, "bearer_claims"),
        ({"iat": "1700000000"}, "bearer_claims"),
        ({"nbf": True}, "bearer_claims"),
        ({"iat": float(T0)}, "bearer_claims"),
        ({"sub": ""}, "bearer_claims"),
        ({"sub": 7}, "bearer_invalid"),
        # Not numbers at all: pyjwt refuses them.
        ({"iat": "yesterday"}, "bearer_claims"),
        ({"nbf": "yesterday"}, "bearer_invalid"),
        ({"exp": [T0 + 3600]}, "bearer_invalid"),
    ],
    ids=[
        "float-exp",
        "string-iat",
        "bool-nbf",
        "float-iat",
        "empty-sub",
        "number-sub",
        "word-iat",
        "word-nbf",
        "list-exp",
    ],
)
def test_claims_of_the_wrong_type_are_refused(
    keyset: KeySet, changes: dict[str, Any], reason: str
) -> None:
    assert refused(ours(keyset, **changes), keyset).reason == reason


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "a..c",
        ".b.c",
        "a.b.",
        "a b.c.d",
        "a.b.c=",
        "a.b.c\n",
        "eyJhbGciOiJFZERTQSJ9.e30.c2ln",
        "bm90IGpzb24.e30.c2ln",
        "W10.e30.c2ln",
    ],
    ids=[
        "empty",
        "one-segment",
        "two-segments",
        "four-segments",
        "empty-payload",
        "empty-header",
        "empty-signature",
        "space",
        "padding",
        "newline",
        "header-without-kid",
        "header-not-json",
        "header-not-object",
    ],
)
def test_malformed_token_is_refused(keyset: KeySet, token: str) -> None:
    assert refused(token, keyset).reason in ("bearer_malformed", "bearer_no_kid")
