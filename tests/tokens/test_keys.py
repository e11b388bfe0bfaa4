"""Key loading: supported algorithms, refusals naming the file, kids, the JWKS, generated keys."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from joserfc.jwk import import_key

from gateway.config.settings import SigningKeySettings
from gateway.tokens import (
    GENERATED_KEY_NAME,
    KeyConfigError,
    KeySet,
    generate_private_key,
    jwk_thumbprint,
    load_keyset,
    write_private_key,
)
from tests.tokens.token_helpers import (
    ALGORITHMS,
    key_file,
    keyset_of,
    pem_of,
    token_settings,
)

GARBAGE_PEM = b"-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def load_files(*paths: Path, data_dir: Path | None = None) -> KeySet:
    keys = [SigningKeySettings(file=path) for path in paths]
    return load_keyset(token_settings(*keys), data_dir or paths[0].parent / "data")


def issues_of(*paths: Path) -> list[tuple[str, str]]:
    with pytest.raises(KeyConfigError) as info:
        load_files(*paths)
    return info.value.issues


# --- supported keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "alg", "members"),
    [
        pytest.param(
            lambda: ed25519.Ed25519PrivateKey.generate(),
            "EdDSA",
            {"kty": "OKP", "crv": "Ed25519"},
            id="ed25519",
        ),
        pytest.param(
            lambda: ec.generate_private_key(ec.SECP256R1()),
            "ES256",
            {"kty": "EC", "crv": "P-256"},
            id="p256",
        ),
        pytest.param(
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "RS256",
            {"kty": "RSA", "e": "AQAB"},
            id="rsa2048",
        ),
    ],
)
def test_supported_key_loads_with_its_algorithm(
    tmp_path: Path, key: Callable[[], Any], alg: str, members: dict[str, str]
) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(pem_of(key()))
    keyset = load_files(path)
    assert keyset.signing.alg == alg
    assert keyset.signing.source == str(path)
    (jwk,) = keyset.jwks()["keys"]
    assert jwk.items() >= {**members, "alg": alg, "use": "sig", "kid": keyset.signing.kid}.items()


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_kid_is_the_rfc7638_thumbprint_as_joserfc_computes_it(tmp_path: Path, alg: str) -> None:
    keyset = load_files(key_file(tmp_path, alg))
    (jwk,) = keyset.jwks()["keys"]
    assert keyset.signing.kid == import_key(jwk).thumbprint()


def test_thumbprint_matches_the_rfc7638_example() -> None:
    # RFC 7638 section 3.1.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
        "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-"
        "65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qN"
        "Lyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJ"
        "zKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_configured_kid_overrides_the_thumbprint(tmp_path: Path) -> None:
    key = SigningKeySettings(file=key_file(tmp_path, "EdDSA"), kid="current")
    keyset = load_keyset(token_settings(key), tmp_path)
    assert keyset.signing.kid == "current"
    assert keyset.jwks()["keys"][0]["kid"] == "current"
    assert keyset.verification("current") is not None


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_generate_private_key_gives_a_loadable_key_and_its_kid(tmp_path: Path, alg: str) -> None:
    pem, kid = generate_private_key(alg)  # type: ignore[arg-type]
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    path = tmp_path / "new.pem"
    path.write_bytes(pem)
    keyset = load_files(path)
    assert (keyset.signing.alg, keyset.signing.kid) == (alg, kid)


def test_generate_private_key_refuses_other_algorithms() -> None:
    with pytest.raises(ValueError, match="unsupported algorithm"):
        generate_private_key("HS256")  # type: ignore[arg-type]


# --- refused keys ----------------------------------------------------------------------------


def _encrypted() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


def _public() -> bytes:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _openssh() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            lambda: pem_of(rsa.generate_private_key(65537, 1024)),
            "RSA key of 1024 bits: at least 2048 are required",
            id="rsa1024",
        ),
        pytest.param(
            lambda: pem_of(ec.generate_private_key(ec.SECP384R1())),
            "EC key on curve secp384r1: only P-256 (ES256) is supported",
            id="p384",
        ),
        pytest.param(
            lambda: pem_of(ed448.Ed448PrivateKey.generate()),
            "Ed448 keys are not supported",
            id="ed448",
        ),
        pytest.param(
            lambda: pem_of(dsa.generate_private_key(2048)), "DSA keys are not supported", id="dsa"
        ),
        pytest.param(_encrypted, "the private key is encrypted", id="encrypted"),
        pytest.param(_public, "holds a public key or certificate", id="public-key"),
        pytest.param(_openssh, "not a PEM private key", id="openssh-format"),
        pytest.param(lambda: GARBAGE_PEM, "not a PEM private key", id="garbage-pem"),
        pytest.param(lambda: b"hello, world\n", "not a PEM private key", id="garbage"),
        pytest.param(lambda: b"", "not a PEM private key", id="empty"),
        pytest.param(lambda: b"x" * (65 * 1024), "is larger than 64 KiB", id="huge"),
    ],
)
def test_unusable_key_file_is_refused_naming_the_file(
    tmp_path: Path, content: Callable[[], bytes], expected: str
) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content())
    ((at, message),) = issues_of(path)
    assert at == "tokens.signing_keys[0].file"
    assert message.startswith(f"{path}: ") or message.startswith(f"{path} ")
    assert expected in message


def test_every_unusable_key_is_reported_at_once(tmp_path: Path) -> None:
    good = key_file(tmp_path, "EdDSA")
    small = tmp_path / "old.pem"
    small.write_bytes(pem_of(rsa.generate_private_key(65537, 1024)))
    missing = tmp_path / "gone.pem"
    assert issues_of(good, small, missing) == [
        (
            "tokens.signing_keys[1].file",
            f"{small}: RSA key of 1024 bits: at least 2048 are required",
        ),
        ("tokens.signing_keys[2].file", f"cannot read {missing}: No such file or directory"),
    ]


def test_messages_never_contain_key_material(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    pem = pem_of(rsa.generate_private_key(65537, 1024))
    path.write_bytes(pem)
    message = str(KeyConfigError(issues_of(path)))
    body = b"".join(pem.splitlines()[1:-1]).decode()
    assert body[:16] not in message


def test_the_same_key_twice_is_a_duplicate_kid(tmp_path: Path) -> None:
    path = key_file(tmp_path, "EdDSA")
    copy = tmp_path / "copy.pem"
    copy.write_bytes(path.read_bytes())
    ((at, message),) = issues_of(path, copy)
    assert at == "tokens.signing_keys[1].file"
    assert "duplicate kid" in message and "already at tokens.signing_keys[0]" in message


# --- HMAC ------------------------------------------------------------------------------------


def test_short_hmac_secret_is_refused(tmp_path: Path) -> None:
    settings = token_settings(SigningKeySettings(hmac_secret=b"s" * 31))
    with pytest.raises(KeyConfigError) as info:
        load_keyset(settings, tmp_path)
    ((at, message),) = info.value.issues
    assert at == "tokens.signing_keys[0].hmac_secret_file"
    assert "31 bytes; at least 32" in message
    assert "sss" not in message


def test_hmac_key_gets_a_stable_derived_kid_that_reveals_nothing(tmp_path: Path) -> None:
    secret = b"0123456789abcdef0123456789abcdef"
    first = load_keyset(token_settings(SigningKeySettings(hmac_secret=secret)), tmp_path)
    again = load_keyset(token_settings(SigningKeySettings(hmac_secret=secret)), tmp_path)
    other = load_keyset(token_settings(SigningKeySettings(hmac_secret=secret[::-1])), tmp_path)
    kid = first.signing.kid
    assert kid.startswith("hs256-") and len(kid) == len("hs256-") + 16
    assert kid == again.signing.kid != other.signing.kid
    assert secret.decode()[:8] not in kid and secret.hex()[:8] not in kid
    assert first.signing.alg == "HS256"
    assert first.verification(kid) == (secret, "HS256")
    assert secret not in repr(first).encode() and secret.hex() not in repr(first)


def test_hmac_keys_are_never_in_the_jwks(tmp_path: Path) -> None:
    settings = token_settings(
        SigningKeySettings(hmac_secret=b"h" * 32, kid="legacy"),
        SigningKeySettings(file=key_file(tmp_path, "EdDSA")),
    )
    keyset = load_keyset(settings, tmp_path)
    assert keyset.signing.kid == "legacy"
    assert [jwk["kty"] for jwk in keyset.jwks()["keys"]] == ["OKP"]
    assert b"legacy" not in keyset.jwks_json and b"oct" not in keyset.jwks_json
    assert keyset.api_signing is not None and keyset.api_signing.alg == "EdDSA"


# --- the key set and its JWKS ----------------------------------------------------------------


def test_jwks_has_public_members_only_for_every_asymmetric_key(tmp_path: Path) -> None:
    keyset = keyset_of(tmp_path, "EdDSA", "ES256", "RS256")
    document = json.loads(keyset.jwks_json)
    assert document == keyset.jwks()
    expected = {
        "OKP": {"kty", "use", "alg", "kid", "crv", "x"},
        "EC": {"kty", "use", "alg", "kid", "crv", "x", "y"},
        "RSA": {"kty", "use", "alg", "kid", "n", "e"},
    }
    assert [jwk["alg"] for jwk in document["keys"]] == ["EdDSA", "ES256", "RS256"]
    for jwk in document["keys"]:
        assert set(jwk) == expected[jwk["kty"]]
        assert not PRIVATE_MEMBERS & set(jwk)
        assert jwk["use"] == "sig"
        assert import_key(jwk).is_private is False


def test_jwks_returns_a_fresh_copy(tmp_path: Path) -> None:
    keyset = keyset_of(tmp_path, "EdDSA")
    keyset.jwks()["keys"][0]["d"] = "oops"
    assert "d" not in keyset.jwks()["keys"][0]
    assert b'"d"' not in keyset.jwks_json


def test_verification_finds_only_our_own_kids(tmp_path: Path) -> None:
    keyset = keyset_of(tmp_path, "ES256", "EdDSA")
    for key in keyset.keys:
        found = keyset.verification(key.kid)
        assert found is not None
        public, alg = found
        assert alg == key.alg
        assert isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    assert keyset.verification("someone-else") is None
    assert keyset.verification("") is None


def test_fingerprint_follows_the_signing_key(tmp_path: Path) -> None:
    current = key_file(tmp_path, "EdDSA", "current.pem")
    previous = key_file(tmp_path, "ES256", "previous.pem")
    one = load_files(current, previous)
    assert load_files(current, previous).fingerprint == one.fingerprint
    assert load_files(current).fingerprint == one.fingerprint  # same signer
    assert load_files(previous, current).fingerprint != one.fingerprint


def test_fingerprint_changes_with_the_hmac_secret_even_under_the_same_kid(tmp_path: Path) -> None:
    def fingerprint(secret: bytes) -> str:
        key = SigningKeySettings(hmac_secret=secret, kid="legacy")
        return load_keyset(token_settings(key), tmp_path).fingerprint

    assert fingerprint(b"a" * 32) != fingerprint(b"b" * 32)


def test_key_set_is_immutable(tmp_path: Path) -> None:
    keyset = keyset_of(tmp_path, "EdDSA")
    with pytest.raises(AttributeError):
        keyset.keys = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        keyset._by_kid["x"] = keyset.signing  # type: ignore[index]


# --- the generated key -----------------------------------------------------------------------


def test_without_keys_one_ed25519_key_is_generated_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "state" / "gateway"
    first = load_keyset(token_settings(), data_dir)
    path = data_dir / GENERATED_KEY_NAME
    assert first.signing.alg == "EdDSA" and not first.ephemeral
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    again = load_keyset(token_settings(), data_dir)
    assert again.signing.kid == first.signing.kid
    assert again.fingerprint == first.fingerprint
    assert [entry.name for entry in data_dir.iterdir()] == [GENERATED_KEY_NAME]  # no temp files


def test_generated_key_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_keyset(token_settings(), tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / GENERATED_KEY_NAME).stat().st_mode) == 0o600


def test_check_does_not_write_a_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    keyset = load_keyset(token_settings(), data_dir, generate=False)
    assert keyset.ephemeral
    assert not data_dir.exists()


def test_check_reads_an_existing_generated_key(tmp_path: Path) -> None:
    generated = load_keyset(token_settings(), tmp_path)
    checked = load_keyset(token_settings(), tmp_path, generate=False)
    assert checked.signing.kid == generated.signing.kid and not checked.ephemeral


def test_damaged_generated_key_is_reported_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / GENERATED_KEY_NAME
    path.write_bytes(b"truncated")
    with pytest.raises(KeyConfigError) as info:
        load_keyset(token_settings(), tmp_path)
    ((at, message),) = info.value.issues
    assert at == "server.data_dir"
    assert message.startswith(f"{path}: not a PEM private key")
    assert path.read_bytes() == b"truncated"


def test_a_key_written_by_another_worker_first_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner, _kid = generate_private_key("ES256")
    real_link = os.link

    def link_after_the_other_worker(source: Any, target: Any) -> None:
        Path(target).write_bytes(winner)  # the other worker publishes between our check and link
        real_link(source, target)

    monkeypatch.setattr(os, "link", link_after_the_other_worker)
    keyset = load_keyset(token_settings(), tmp_path)
    assert keyset.signing.alg == "ES256"
    assert (tmp_path / GENERATED_KEY_NAME).read_bytes() == winner
    assert [entry.name for entry in tmp_path.iterdir()] == [GENERATED_KEY_NAME]


def test_data_dir_that_is_not_a_directory_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(KeyConfigError) as info:
        load_keyset(token_settings(), blocker / "data")
    ((at, message),) = info.value.issues
    assert at == "server.data_dir"
    assert message.endswith("Not a directory")


def test_unwritable_data_dir_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(KeyConfigError) as info:
        load_keyset(token_settings(), tmp_path)
    assert info.value.issues == [
        (
            "server.data_dir",
            f"cannot write the generated signing key {tmp_path / GENERATED_KEY_NAME}: "
            "Permission denied",
        )
    ]


# --- write_private_key (gateway keys generate) -----------------------------------------------


def test_write_private_key_is_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    first, _ = generate_private_key("EdDSA")
    write_private_key(path, first)
    assert path.read_bytes() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second, _ = generate_private_key("EdDSA")
    with pytest.raises(FileExistsError):
        write_private_key(path, second)
    assert path.read_bytes() == first
    write_private_key(path, second, overwrite=True)
    assert path.read_bytes() == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [entry.name for entry in tmp_path.iterdir()] == ["key.pem"]


def test_private_key_objects_are_not_in_reprs(tmp_path: Path) -> None:
    keyset = keyset_of(tmp_path, "RS256")
    assert "private_key=" not in repr(keyset.signing)
    assert "RSAPrivateKey" not in repr(keyset)
