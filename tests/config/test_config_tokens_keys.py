"""`gateway check` parses signing keys: weak or unsupported keys are errors naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.bundle import build
from gateway.config import ConfigError, Settings, load_settings_from_text
from gateway.tokens import GENERATED_KEY_NAME, generate_private_key

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def document(tokens: dict[str, Any] | None = None, **server: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "server": {"public_url": "http://127.0.0.1:8080", **server},
        "users": {"inline": [{"username": "alice", "password_hash": HASH}]},
        "upstreams": {"app": {"url": "http://127.0.0.1:9000"}},
        "routes": [
            {
                "name": "all",
                "match": {"path_prefix": "/"},
                "upstream": "app",
                "access": "authenticated",
            }
        ],
    }
    if tokens is not None:
        doc["tokens"] = tokens
    return doc


def load(doc: dict[str, Any], base_dir: Path) -> Settings:
    """Through the whole loader, which parses the key files."""
    return build(load_settings_from_text(yaml.safe_dump(doc), env={}, base_dir=base_dir)).settings


def problems(doc: dict[str, Any], base_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(doc, base_dir)
    return [str(issue) for issue in info.value.issues]


def pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def write_key(path: Path, alg: str = "EdDSA") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(generate_private_key(alg)[0])  # type: ignore[arg-type]
    return path


def test_valid_keys_load(tmp_path: Path) -> None:
    write_key(tmp_path / "keys" / "current.pem", "ES256")
    write_key(tmp_path / "keys" / "previous.pem", "RS256")
    (tmp_path / "hs256").write_bytes(b"h" * 32 + b"\n")
    settings = load(
        document(
            {
                "signing_keys": [
                    {"file": "keys/current.pem"},
                    {"file": "keys/previous.pem"},
                    {"hmac_secret_file": "hs256", "kid": "legacy"},
                ]
            }
        ),
        tmp_path,
    )
    assert len(settings.tokens.signing_keys) == 3


def test_weak_key_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    write_key(tmp_path / "keys" / "current.pem")
    old = tmp_path / "keys" / "old.pem"
    old.write_bytes(pem(rsa.generate_private_key(65537, 1024)))
    doc = document({"signing_keys": [{"file": "keys/current.pem"}, {"file": "keys/old.pem"}]})
    assert problems(doc, tmp_path) == [
        f"tokens.signing_keys[1].file: {old}: RSA key of 1024 bits: at least 2048 are required"
    ]


def test_every_bad_key_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.pem").write_bytes(pem(ec.generate_private_key(ec.SECP521R1())))
    (tmp_path / "b.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    doc = document({"signing_keys": [{"file": "a.pem"}, {"file": "b.pem"}]})
    found = problems(doc, tmp_path)
    assert len(found) == 2
    assert (
        f"tokens.signing_keys[0].file: {tmp_path / 'a.pem'}: EC key on curve secp521r1: "
        "only P-256 (ES256) is supported"
    ) in found
    assert any(
        problem.startswith(f"tokens.signing_keys[1].file: {tmp_path / 'b.pem'}: holds a public")
        for problem in found
    )


def test_keys_are_not_parsed_when_the_section_is_already_wrong(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("garbage")
    doc = document({"ttl": "forever", "signing_keys": [{"file": "bad.pem"}]})
    found = problems(doc, tmp_path)
    assert len(found) == 1 and found[0].startswith("tokens.ttl")


def test_check_does_not_generate_a_key(tmp_path: Path) -> None:
    settings = load(document(data_dir="state"), tmp_path)
    assert settings.server.data_dir == tmp_path / "state"
    assert not (tmp_path / "state").exists()


def test_damaged_generated_key_is_reported_under_data_dir(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / GENERATED_KEY_NAME).write_text("oops")
    found = problems(document(data_dir="state"), tmp_path)
    assert found == [
        f"server.data_dir: {tmp_path / 'state' / GENERATED_KEY_NAME}: not a PEM private key; "
        "create one with `gateway keys generate`"
    ]


def test_api_tokens_need_a_private_key_not_only_hmac(tmp_path: Path) -> None:
    (tmp_path / "hs256").write_bytes(b"h" * 32)
    doc = document(
        {"signing_keys": [{"hmac_secret_file": "hs256"}], "api_tokens": {"enabled": True}}
    )
    (problem,) = problems(doc, tmp_path)
    assert problem.startswith("tokens.api_tokens.enabled: API tokens need a private key")
    write_key(tmp_path / "key.pem")
    doc["tokens"]["signing_keys"].append({"file": "key.pem"})
    assert load(doc, tmp_path).tokens.api_tokens.enabled


def test_api_tokens_with_the_generated_key_are_fine(tmp_path: Path) -> None:
    assert load(document({"api_tokens": {"enabled": True}}), tmp_path).tokens.api_tokens.enabled
