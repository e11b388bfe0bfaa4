"""Builders shared by the token tests: key files, key sets, users, sessions, hand-made JWTs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.config.settings import SigningKeySettings, TokenSettings
from gateway.identity.sessions.base import Session
from gateway.identity.users import User
from gateway.tokens import KeySet, generate_private_key, load_keyset

ISSUER = "https://gw.example.com"
NOW = 1_700_000_000.0
ALGORITHMS = ("EdDSA", "ES256", "RS256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pem_of(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def new_private_key(alg: str) -> Any:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_file(directory: Path, alg: str, name: str | None = None) -> Path:
    """A fresh private key of ``alg`` written to ``directory``."""
    pem, _kid = generate_private_key(alg)  # type: ignore[arg-type]
    path = directory / (name or f"{alg.lower()}.pem")
    path.write_bytes(pem)
    return path


def token_settings(*keys: SigningKeySettings, **kwargs: Any) -> TokenSettings:
    return TokenSettings(issuer=ISSUER, signing_keys=keys, **kwargs)


def keyset_of(directory: Path, *algs: str) -> KeySet:
    """A key set of fresh keys, one per ``alg``, in that order (the first signs)."""
    keys = [
        SigningKeySettings(file=key_file(directory, alg, f"{index}-{alg.lower()}.pem"))
        for index, alg in enumerate(algs)
    ]
    return load_keyset(token_settings(*keys), directory / "data")


def user(**kwargs: Any) -> User:
    fields: dict[str, Any] = {
        "username": "alice",
        "name": "Alice Example",
        "email": "alice@example.com",
        "roles": frozenset({"editor", "admin"}),
        "password_hash": "unused",
    }
    fields.update(kwargs)
    return User(**fields)


def session(sid_hash: str = "a1" * 32) -> Session:
    return Session(sid_hash=sid_hash, username="alice", created_at=NOW, last_seen_at=NOW)


def payload_of(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(unb64url(token.split(".")[1]))
    return result


def header_of(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(unb64url(token.split(".")[0]))
    return result
