"""Password hashes: create argon2id, recognise and verify argon2id and bcrypt, nothing else.

New hashes are argon2id with argon2-cffi's RFC 9106 "low memory" profile
(:data:`HASH_PARAMETERS`: ``m=65536`` KiB = 64 MiB, ``t=3`` passes, ``p=4`` lanes, 16-byte salt,
32-byte tag), about 0.1 s of one core. bcrypt (``$2a$``, ``$2b$``, ``$2y$``) is accepted so legacy
htpasswd files can be migrated.

Every function here is synchronous and CPU-bound: call :func:`verify_password` off the event loop
(see :meth:`gateway.identity.users.UserDirectory.authenticate`). Nothing here logs, and error
messages never contain a hash or a password.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import re
import secrets

import bcrypt
from argon2 import PasswordHasher, Type, extract_parameters, profiles
from argon2.exceptions import InvalidHashError, VerificationError

HASH_PARAMETERS = profiles.RFC_9106_LOW_MEMORY
"""argon2id parameters of :func:`hash_password` (and of the dummy hash); pinned, not argon2-cffi's
moving default, so the documented cost only changes when this line does."""

MAX_PASSWORD_BYTES = 1024
"""Longest password (UTF-8 bytes) that is ever hashed; longer ones never match."""

BCRYPT_MAX_BYTES = 72
"""bcrypt only ever hashed this many password bytes; longer input is compared on this prefix."""

EXPECTED = "expected argon2id or bcrypt $2a$/$2b$/$2y$; create one with `gateway hash-password`"

_HASHER = PasswordHasher.from_parameters(HASH_PARAMETERS)

# libargon2's own limits (argon2.h): outside them its decoder fails at verification time.
_ARGON2 = re.compile(
    r"\$argon2id\$(?:v=(?P<v>[1-9]\d{0,9})\$)?"
    r"m=(?P<m>[1-9]\d{0,9}),t=(?P<t>[1-9]\d{0,9}),p=(?P<p>[1-9]\d{0,7})"
    r"\$(?P<salt>[A-Za-z0-9+/]+)\$(?P<tag>[A-Za-z0-9+/]+)",
    re.ASCII,
)
_ARGON2_VERSIONS = (0x10, 0x13)
_ARGON2_MIN_SALT_BYTES = 8
_ARGON2_MIN_TAG_BYTES = 4
_ARGON2_MAX_LANES = 0xFFFFFF
_UINT32_MAX = 0xFFFFFFFF

# 22 salt characters carry 128 bits: the last one has 2 bits, so only ".Oeu" are canonical, and
# the bcrypt library refuses the others ("Invalid salt") only when verifying.
_BCRYPT = re.compile(
    r"\$2[aby]\$(?P<cost>[0-9]{2})\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}", re.ASCII
)

# Known formats we refuse, named so the operator knows what they have.
_REFUSED_PREFIXES = (
    ("$argon2i$", "argon2i"),
    ("$argon2d$", "argon2d"),
    ("$2x$", "bcrypt $2x$ (crypt_blowfish bug marker)"),
    ("$2$", "bcrypt $2$"),
    ("$1$", "md5-crypt ($1$)"),
    ("$apr1$", "Apache md5 ($apr1$)"),
    ("$5$", "sha256-crypt ($5$)"),
    ("$6$", "sha512-crypt ($6$)"),
    ("$y$", "yescrypt ($y$)"),
    ("{SHA}", "unsalted SHA-1 ({SHA})"),
    ("{SSHA}", "salted SHA-1 ({SSHA})"),
    ("$pbkdf2", "PBKDF2"),
    ("$scrypt$", "scrypt"),
)


class PasswordScheme(enum.Enum):
    """The hash formats the gateway verifies."""

    ARGON2ID = "argon2id"
    BCRYPT = "bcrypt"

    @classmethod
    def detect(cls, password_hash: str) -> PasswordScheme | None:
        """The scheme named by the hash's prefix, or ``None`` for anything else.

        Only the prefix is looked at; :func:`check_hash_format` checks the whole string.
        """
        if password_hash.startswith("$argon2id$"):
            return cls.ARGON2ID
        if password_hash.startswith(("$2a$", "$2b$", "$2y$")):
            return cls.BCRYPT
        return None


def hash_password(password: str) -> str:
    """An argon2id PHC string for ``password`` with :data:`HASH_PARAMETERS` and a random salt.

    Raises :class:`ValueError` for a password longer than :data:`MAX_PASSWORD_BYTES` (it could
    never log in) and :class:`UnicodeEncodeError` for a string that is not valid Unicode text.
    """
    secret = password.encode("utf-8")
    if len(secret) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password is longer than {MAX_PASSWORD_BYTES} bytes")
    return _HASHER.hash(secret)


def check_hash_format(password_hash: str) -> str | None:
    """Why ``password_hash`` cannot be used, or ``None`` when it can.

    Checks the whole string (argon2id: parameters and base64 fields within libargon2's limits;
    bcrypt: cost 04-31 and 53 salt+hash characters) so a damaged hash is a configuration error
    rather than a failed login later. The message never quotes the hash.
    """
    scheme = PasswordScheme.detect(password_hash)
    if scheme is PasswordScheme.ARGON2ID:
        return _argon2_problem(password_hash)
    if scheme is PasswordScheme.BCRYPT:
        return _bcrypt_problem(password_hash)
    if not password_hash.strip():
        return f"password hash is empty ({EXPECTED})"
    for prefix, name in _REFUSED_PREFIXES:
        if password_hash.startswith(prefix):
            return f"unsupported password hash: {name} ({EXPECTED})"
    if not password_hash.startswith(("$", "{")):
        return f"unsupported password hash: looks like a plaintext password ({EXPECTED})"
    return f"unsupported password hash ({EXPECTED})"


def _argon2_problem(password_hash: str) -> str | None:
    malformed = "malformed argon2id hash"
    found = _ARGON2.fullmatch(password_hash)
    if found is None:
        return f"{malformed} (expected $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>)"
    version = int(found["v"] or 0x10)
    memory, passes, lanes = int(found["m"]), int(found["t"]), int(found["p"])
    salt, tag = _unpadded_b64(found["salt"]), _unpadded_b64(found["tag"])
    if version not in _ARGON2_VERSIONS:
        return f"{malformed}: unknown version v={version} (expected v=19)"
    if not 1 <= lanes <= _ARGON2_MAX_LANES:
        return f"{malformed}: p={lanes} is out of range"
    if not 1 <= passes <= _UINT32_MAX:
        return f"{malformed}: t={passes} is out of range"
    if not 8 * lanes <= memory <= _UINT32_MAX:
        return f"{malformed}: m={memory} is out of range (at least 8 KiB per lane)"
    if salt is None or tag is None:
        return f"{malformed}: salt or hash is not valid unpadded base64"
    if len(salt) < _ARGON2_MIN_SALT_BYTES or len(tag) < _ARGON2_MIN_TAG_BYTES:
        return f"{malformed}: salt or hash is too short (truncated?)"
    try:
        parameters = extract_parameters(password_hash)
    except InvalidHashError:
        return f"{malformed} (argon2-cffi cannot parse its parameters)"
    if parameters.type is not Type.ID:  # pragma: no cover - the prefix already says argon2id
        return f"unsupported password hash: argon2 type {parameters.type.name} ({EXPECTED})"
    return None


def _unpadded_b64(text: str) -> bytes | None:
    """Decode the PHC base64 variant; ``None`` unless re-encoding gives ``text`` back exactly.

    libargon2 rejects non-canonical encodings (stray low bits), so a hash edited by hand or cut
    short usually fails here instead of at the first login.
    """
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).rstrip(b"=").decode("ascii") == text else None


def _bcrypt_problem(password_hash: str) -> str | None:
    found = _BCRYPT.fullmatch(password_hash)
    if found is None:
        return (
            "malformed bcrypt hash (expected $2b$<cost>$, a 22-character salt and a 31-character "
            "hash of [./A-Za-z0-9])"
        )
    if not 4 <= int(found["cost"]) <= 31:
        return f"malformed bcrypt hash: cost {found['cost']} is out of range (04-31)"
    return None


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (argon2id or bcrypt); never raises.

    Constant-time comparison happens inside libargon2 and bcrypt. A hash of any other scheme, a
    damaged hash, or a password over :data:`MAX_PASSWORD_BYTES` gives ``False``.

    bcrypt: the password is compared on its first :data:`BCRYPT_MAX_BYTES` bytes. bcrypt 5 raises
    for longer input, but every bcrypt hash in existence (htpasswd, bcrypt < 5, crypt(3)) was
    made from only those bytes, so the hash commits to nothing more: refusing would lock out
    migrated users with long passwords and would not make the check any stronger.
    """
    # "surrogatepass" cannot fail, and its output is never valid UTF-8, so a string with lone
    # surrogates (possible from JSON "\ud800") simply does not match any real password.
    secret = password.encode("utf-8", "surrogatepass")
    if len(secret) > MAX_PASSWORD_BYTES:
        return False
    scheme = PasswordScheme.detect(password_hash)
    if scheme is PasswordScheme.ARGON2ID:
        try:
            return _HASHER.verify(password_hash, secret)
        except (VerificationError, ValueError):  # mismatch; InvalidHashError; non-ASCII hash
            return False
    if scheme is PasswordScheme.BCRYPT:
        try:
            return bcrypt.checkpw(secret[:BCRYPT_MAX_BYTES], password_hash.encode("ascii"))
        except ValueError:  # damaged hash, incl. non-ASCII (UnicodeEncodeError)
            return False
    return False


def needs_rehash(password_hash: str) -> bool:
    """Whether verifying ``password_hash`` costs something else than :func:`hash_password`'s.

    True for bcrypt and for argon2id with other parameters. Such users log in measurably faster
    or slower than an unknown username (which costs one :func:`dummy_hash` verification), so
    their existence can be told from the timing; rehashing with ``gateway hash-password`` fixes it.
    """
    if PasswordScheme.detect(password_hash) is not PasswordScheme.ARGON2ID:
        return True
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@functools.cache
def dummy_hash() -> str:
    """An argon2id hash of a random, forgotten password, made once with :data:`HASH_PARAMETERS`.

    Verifying against it costs what a real user's verification costs, without any password
    being able to match: used for unknown usernames and over-long passwords. The first call
    takes one hash's time; :func:`gateway.identity.users.load_users` makes it early.
    """
    return _HASHER.hash(secrets.token_bytes(32))
