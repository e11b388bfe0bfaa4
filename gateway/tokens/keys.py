"""Signing keys: PEM files and HMAC secrets parsed once into an immutable :class:`KeySet`.

Ed25519 signs as EdDSA, EC P-256 as ES256, RSA of at least 2048 bits as RS256, an HMAC secret of at
least 32 bytes as HS256. Anything else is refused with a :class:`KeyConfigError` naming the file.
A key's ``kid`` is its RFC 7638 JWK thumbprint unless one is configured. With no key configured,
one Ed25519 key is generated into ``server.data_dir`` once and reused.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import Algorithm as JwtAlgorithm
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from gateway.config.settings import SigningKeySettings, TokenSettings

Algorithm: TypeAlias = Literal["EdDSA", "ES256", "RS256", "HS256"]
AsymmetricAlgorithm: TypeAlias = Literal["EdDSA", "ES256", "RS256"]
PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

ASYMMETRIC_ALGORITHMS: tuple[AsymmetricAlgorithm, ...] = ("EdDSA", "ES256", "RS256")
GENERATED_KEY_NAME = "signing-key.pem"
"""File name of the key generated into ``server.data_dir`` when none is configured."""

MIN_RSA_BITS = 2048
MIN_HMAC_SECRET_BYTES = 32
GENERATED_RSA_BITS = 3072
MAX_KEY_FILE_BYTES = 64 * 1024
"""Larger files are refused as probably the wrong file (a PEM key is a few KiB at most)."""

_SUPPORTED = "use Ed25519 (EdDSA), EC P-256 (ES256) or RSA of at least 2048 bits (RS256)"
_HMAC_KID_DOMAIN = b"gateway/hs256-kid/v1\x00"
_FINGERPRINT_DOMAIN = b"gateway/keyset-fingerprint/v1\x00"
_JWK_ALGORITHMS: Mapping[AsymmetricAlgorithm, type[JwtAlgorithm]] = {
    "EdDSA": OKPAlgorithm,
    "ES256": ECAlgorithm,
    "RS256": RSAAlgorithm,
}
_THUMBPRINT_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}
"""RFC 7638 section 3.2: the required members of each key type, in lexicographic order."""


class KeyConfigError(Exception):
    """Keys cannot be loaded; :attr:`issues` lists every ``(path, message)`` found.

    Paths are YAML paths such as ``tokens.signing_keys[1].file`` (or ``server.data_dir`` for the
    generated key); messages name the file and the rule broken, never key material.
    """

    def __init__(self, issues: Iterable[tuple[str, str]]) -> None:
        self.issues: list[tuple[str, str]] = list(issues)
        super().__init__("\n".join(f"{path}: {message}" for path, message in self.issues))


class _Refused(Exception):
    """One key is unusable; the message says why (without key material)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKey:
    """One parsed key. ``private_key`` (or the HMAC secret) is kept out of ``repr``."""

    kid: str
    alg: Algorithm
    private_key: PrivateKey | bytes = field(repr=False)
    """A cryptography private key object, or the HMAC secret (``alg == "HS256"``)."""
    public_jwk: Mapping[str, str] | None = None
    """The public JWK (RFC 7517, with ``kid``, ``alg`` and ``use``); ``None`` for HMAC."""
    source: str = ""
    """Where it came from, for messages and logs: a file path, or ``hmac_secret_file``."""

    @property
    def verification_key(self) -> PublicKey | bytes:
        """What a signature is checked with: the public key, or the HMAC secret."""
        if isinstance(self.private_key, bytes):
            return self.private_key
        return self.private_key.public_key()

    @property
    def asymmetric(self) -> bool:
        return self.alg != "HS256"


@dataclass(frozen=True, slots=True)
class KeySet:
    """The gateway's keys, in configuration order; immutable once built.

    The first key signs upstream tokens (:attr:`signing`); every asymmetric key is published in
    the JWKS so tokens signed before a rotation stay verifiable. A reload builds a new KeySet.
    """

    keys: tuple[SigningKey, ...]
    ephemeral: bool = False
    """``True`` when the key was generated in memory only (``generate=False`` and no key file
    yet): fine for ``gateway check`` / ``explain``, never for serving."""
    jwks_json: bytes = field(init=False, repr=False)
    """The JWKS document, serialised once: the body of ``GET /.gateway/jwks.json``."""
    fingerprint: str = field(init=False)
    """Changes whenever the signing key (its kid, algorithm or material) changes."""
    _by_kid: Mapping[str, SigningKey] = field(init=False, repr=False)
    _verifiers: Mapping[str, tuple[PublicKey | bytes, Algorithm]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a key set needs at least one key")
        by_kid: dict[str, SigningKey] = {}
        for key in self.keys:
            if key.kid in by_kid:
                raise ValueError(f'duplicate kid "{key.kid}"')
            by_kid[key.kid] = key
        object.__setattr__(self, "_by_kid", MappingProxyType(by_kid))
        verifiers = {kid: (key.verification_key, key.alg) for kid, key in by_kid.items()}
        object.__setattr__(self, "_verifiers", MappingProxyType(verifiers))
        document = json.dumps(self.jwks(), separators=(",", ":"), sort_keys=False)
        object.__setattr__(self, "jwks_json", document.encode("ascii"))
        signing = self.keys[0]
        digest = hashlib.sha256(_FINGERPRINT_DOMAIN)
        digest.update(f"{signing.alg}\x00{signing.kid}\x00".encode())
        digest.update(_material_digest(signing))
        object.__setattr__(self, "fingerprint", digest.hexdigest()[:32])

    @property
    def signing(self) -> SigningKey:
        """The key that signs upstream tokens: the first configured one."""
        return self.keys[0]

    @property
    def api_signing(self) -> SigningKey | None:
        """The key that signs API bearer tokens: the first ASYMMETRIC key, ``None`` if there is
        none. An HMAC secret is shared with upstreams, so it must never mint a credential that
        the gateway itself accepts."""
        return next((key for key in self.keys if key.asymmetric), None)

    def derive_secret(self, purpose: bytes) -> bytes:
        """32 bytes derived (HKDF-SHA256) from the signing key's PRIVATE material for
        ``purpose``: a secret that every process sharing this key set shares (e.g. replicas
        sealing short-lived cookies for each other) and that reveals nothing of the key."""
        signing = self.signing
        if isinstance(signing.private_key, bytes):
            material = signing.private_key
        else:
            material = signing.private_key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(material)

    def jwks(self) -> dict[str, Any]:
        """A fresh RFC 7517 JWK Set of every asymmetric key: public members only, never HMAC."""
        return {"keys": [dict(key.public_jwk) for key in self.keys if key.public_jwk is not None]}

    def verification(self, kid: str) -> tuple[PublicKey | bytes, Algorithm] | None:
        """``(key, alg)`` for one of OUR keys by ``kid``, ``None`` for any other kid.

        ``key`` is the public key object (the HMAC secret for HS256), derived once at load."""
        return self._verifiers.get(kid)

    def get(self, kid: str) -> SigningKey | None:
        """Our key with this ``kid``, if any."""
        return self._by_kid.get(kid)


# --- loading ---------------------------------------------------------------------------------


def load_keyset(tokens: TokenSettings, data_dir: Path, *, generate: bool = True) -> KeySet:
    """Parse every configured key once, or use the key generated into ``data_dir``.

    With no ``tokens.signing_keys``, ``data_dir / "signing-key.pem"`` is loaded; if missing, a new
    Ed25519 key is written there (directory created with mode 0700, file 0600, atomically and
    without overwriting a key another process wrote first). With ``generate=False`` (``gateway
    check``) nothing is written: a missing file yields an in-memory key (:attr:`KeySet.ephemeral`).

    Raises :class:`KeyConfigError` listing every unusable key.
    """
    if not tokens.signing_keys:
        return _generated_keyset(data_dir / GENERATED_KEY_NAME, generate=generate)
    issues: list[tuple[str, str]] = []
    keys: list[SigningKey] = []
    seen: dict[str, str] = {}
    for index, entry in enumerate(tokens.signing_keys):
        path = f"tokens.signing_keys[{index}]"
        at = path
        if entry.file is not None:
            at = f"{path}.file"
        elif entry.hmac_secret is not None:
            at = f"{path}.hmac_secret_file"
        try:
            key = _load_entry(entry)
        except _Refused as exc:
            issues.append((at, str(exc)))
            continue
        if key.kid in seen:
            message = f'{key.source}: duplicate kid "{key.kid}", already at {seen[key.kid]}'
            issues.append((at, message))
            continue
        seen[key.kid] = path
        keys.append(key)
    if issues:
        raise KeyConfigError(issues)
    return KeySet(tuple(keys))


def _load_entry(entry: SigningKeySettings) -> SigningKey:
    if entry.hmac_secret is not None:
        return _hmac_key(entry.hmac_secret, kid=entry.kid)
    if entry.file is None:
        raise _Refused("needs exactly one of file or hmac_secret_file")
    return _private_key_from_file(entry.file, kid=entry.kid)


def _hmac_key(secret: bytes, *, kid: str | None = None) -> SigningKey:
    """An HS256 key. Without a configured kid one is derived from the secret one-way."""
    if len(secret) < MIN_HMAC_SECRET_BYTES:
        # SECURITY: a short HMAC secret can be brute-forced from any one token.
        raise _Refused(
            f"hmac_secret_file: the secret holds {len(secret)} bytes; "
            f"at least {MIN_HMAC_SECRET_BYTES} random bytes are required"
        )
    if kid is None:
        kid = "hs256-" + hashlib.sha256(_HMAC_KID_DOMAIN + secret).hexdigest()[:16]
    return SigningKey(kid=kid, alg="HS256", private_key=secret, source="hmac_secret_file")


def _private_key_from_file(path: Path, *, kid: str | None) -> SigningKey:
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise _Refused(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise _Refused(f"{path} is larger than {MAX_KEY_FILE_BYTES // 1024} KiB; is it a key?")
    return _parse_pem(data, source=str(path), kid=kid)


def _parse_pem(data: bytes, *, source: str, kid: str | None = None) -> SigningKey:
    """Parse one unencrypted PEM private key; ``source`` names it in error messages."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise _Refused(
            f"{source}: the private key is encrypted; give an unencrypted PEM key "
            "(e.g. `openssl pkey -in encrypted.pem -out key.pem`) and protect the file instead"
        ) from None
    except UnsupportedAlgorithm:
        raise _Refused(f"{source}: unsupported key type; {_SUPPORTED}") from None
    except ValueError:
        if b"PUBLIC KEY-----" in data or b"CERTIFICATE-----" in data:
            raise _Refused(
                f"{source}: holds a public key or certificate; the PRIVATE key is required "
                "(its public half is published in the JWKS)"
            ) from None
        raise _Refused(
            f"{source}: not a PEM private key; create one with `gateway keys generate`"
        ) from None
    private_key, alg = _supported(key, source)
    members = _public_members(private_key, alg)
    kid = kid if kid is not None else jwk_thumbprint(members)
    rest = {name: value for name, value in members.items() if name != "kty"}
    public = MappingProxyType({"kty": members["kty"], "use": "sig", "alg": alg, "kid": kid, **rest})
    return SigningKey(kid=kid, alg=alg, private_key=private_key, public_jwk=public, source=source)


def _supported(key: object, source: str) -> tuple[PrivateKey, AsymmetricAlgorithm]:
    """A supported key with its algorithm; anything else is refused."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise _Refused(
                f"{source}: EC key on curve {key.curve.name}: only P-256 (ES256) is supported"
            )
        return key, "ES256"
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise _Refused(
                f"{source}: RSA key of {key.key_size} bits: at least {MIN_RSA_BITS} are required"
            )
        return key, "RS256"
    if isinstance(key, dsa.DSAPrivateKey):
        kind = "DSA keys are not supported"
    elif isinstance(key, ed448.Ed448PrivateKey):
        kind = "Ed448 keys are not supported"
    else:
        kind = f"{type(key).__name__.removeprefix('_')} keys are not supported"
    raise _Refused(f"{source}: {kind}; {_SUPPORTED}")


def _public_members(key: PrivateKey, alg: AsymmetricAlgorithm) -> dict[str, str]:
    """The RFC 7638 required members of the key's public JWK, serialised by pyjwt."""
    # SECURITY: given a private key, to_jwk includes the private members ("d", ...): only
    # ever hand it the public half.
    jwk = _JWK_ALGORITHMS[alg].to_jwk(key.public_key(), as_dict=True)
    # pyjwt also writes key_ops (RSA); the JWKS keeps its members: kty, crv/x/y or n/e.
    return {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 thumbprint: base64url SHA-256 of the required members as canonical JSON."""
    required = _THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps(
        {name: jwk[name] for name in required}, separators=(",", ":"), sort_keys=True
    )
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _material_digest(key: SigningKey) -> bytes:
    if isinstance(key.private_key, bytes):
        return hashlib.sha256(key.private_key).digest()
    assert key.public_jwk is not None
    return jwk_thumbprint(key.public_jwk).encode("ascii")


# --- the generated key -----------------------------------------------------------------------


def _generated_keyset(path: Path, *, generate: bool) -> KeySet:
    try:
        pem = _read_key_file(path)
        if pem is None:
            fresh, _kid = generate_private_key("EdDSA")
            if not generate:
                key = _parse_pem(fresh, source="(generated in memory)")
                return KeySet((key,), ephemeral=True)
            pem = _write_generated(path, fresh)
        return KeySet((_parse_pem(pem, source=str(path)),))
    except _Refused as exc:
        raise KeyConfigError([("server.data_dir", str(exc))]) from None


def _write_generated(path: Path, pem: bytes) -> bytes:
    """Write the new key unless another process was first; the key to use either way."""
    try:
        write_private_key(path, pem, make_parents=True)
        return pem
    except FileExistsError:
        pass  # another worker process won the race: every worker must sign with ITS key
    except OSError as exc:
        raise _Refused(
            f"cannot write the generated signing key {path}: {exc.strerror or exc}"
        ) from None
    existing = _read_key_file(path)
    if existing is None:
        raise _Refused(f"{path} vanished while it was being created")
    return existing


def _read_key_file(path: Path) -> bytes | None:
    """The file's bytes, ``None`` when it does not exist."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Refused(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise _Refused(f"{path} is larger than {MAX_KEY_FILE_BYTES // 1024} KiB; is it a key?")
    return data


def generate_private_key(alg: AsymmetricAlgorithm = "EdDSA") -> tuple[bytes, str]:
    """A new private key as unencrypted PKCS#8 PEM, and its kid (RFC 7638 thumbprint).

    ``EdDSA`` -> Ed25519, ``ES256`` -> EC P-256, ``RS256`` -> RSA 3072 bits.
    """
    key: PrivateKey
    if alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=GENERATED_RSA_BITS)
    else:
        raise ValueError(f"unsupported algorithm {alg!r}; choose one of EdDSA, ES256, RS256")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, jwk_thumbprint(_public_members(key, alg))


def generate_hmac_secret() -> tuple[bytes, str]:
    """A new HS256 secret for ``hmac_secret_file`` and its kid (as the loader derives it).

    ``MIN_HMAC_SECRET_BYTES`` (32) random bytes, the last never a newline: the file reader
    strips one trailing newline, which would leave 31 bytes, too few.
    """
    while True:
        secret = secrets.token_bytes(MIN_HMAC_SECRET_BYTES)
        if not secret.endswith(b"\n"):
            return secret, _hmac_key(secret).kid


def write_private_key(
    path: Path, pem: bytes, *, overwrite: bool = False, make_parents: bool = False
) -> None:
    """Write ``pem`` to ``path`` with mode 0600, atomically (temporary file + link or rename).

    Refuses (:class:`FileExistsError`) to replace an existing file unless ``overwrite``: a lost
    signing key invalidates every token it signed. ``make_parents`` creates missing directories
    with mode 0700.
    """
    directory = path.parent
    if make_parents and not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists")
    temporary = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # SECURITY: created 0600 from the start (O_EXCL, no umask window), never world-readable.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(temporary, path)
        else:
            _link_without_overwrite(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    _fsync_directory(directory)


def _link_without_overwrite(source: Path, target: Path) -> None:
    """Publish ``source`` as ``target`` only if ``target`` does not exist (atomic on POSIX)."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        # Filesystems without hard links: rename after a check (a small race, same outcome).
        if target.exists():
            raise FileExistsError(f"{target} already exists") from None
        os.rename(source, target)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
