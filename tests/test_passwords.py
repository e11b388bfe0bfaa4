"""Password hashing and verification: argon2id and bcrypt accepted, everything else refused."""

from __future__ import annotations

import random

import bcrypt
import pytest
from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import VerifyMismatchError

from gateway import passwords
from gateway.passwords import (
    PasswordScheme,
    check_hash_format,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)

# Cheap parameters keep the vectors fast; hash_password's real ones are used where it matters.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ARGON2ID = CHEAP.hash("right")
BCRYPT_2B = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4)).decode()


def test_hash_password_round_trip_with_the_real_parameters() -> None:
    hashed = hash_password("correct horse battery staple")

    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert extract_parameters(hashed) == passwords.HASH_PARAMETERS
    assert check_hash_format(hashed) is None
    assert not needs_rehash(hashed)
    assert verify_password(hashed, "correct horse battery staple")
    assert not verify_password(hashed, "correct horse battery stapler")


def test_hash_password_salts_every_hash() -> None:
    assert CHEAP.hash("same") != CHEAP.hash("same")  # sanity of the library
    assert hash_password("same") != hash_password("same")


def test_hash_password_refuses_a_password_that_could_never_log_in() -> None:
    with pytest.raises(ValueError, match="longer than 1024 bytes"):
        hash_password("x" * (passwords.MAX_PASSWORD_BYTES + 1))


@pytest.mark.parametrize(
    "password",
    ["", "wrong", "Right", "right ", "righ", "right\x00"],
    ids=["empty", "other", "case", "trailing-space", "prefix", "nul-suffix"],
)
@pytest.mark.parametrize("stored", [ARGON2ID, BCRYPT_2B], ids=["argon2id", "bcrypt"])
def test_wrong_password_is_refused(stored: str, password: str) -> None:
    assert verify_password(stored, "right")
    assert not verify_password(stored, password)


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_bcrypt_variants_are_accepted_and_verified(prefix: str) -> None:
    # The three prefixes name the same algorithm for passwords without 8-bit characters.
    stored = prefix + BCRYPT_2B[4:]

    assert PasswordScheme.detect(stored) is PasswordScheme.BCRYPT
    assert check_hash_format(stored) is None
    assert verify_password(stored, "right")
    assert not verify_password(stored, "wrong")
    assert needs_rehash(stored)


def test_bcrypt_compares_only_the_first_72_bytes_like_every_legacy_bcrypt() -> None:
    # htpasswd and bcrypt < 5 hashed the first 72 bytes of a longer password.
    long_password = "p" * 72 + "-and-more-than-bcrypt-ever-saw"
    legacy = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()

    assert verify_password(legacy, long_password)
    assert verify_password(legacy, "p" * 72)
    assert not verify_password(legacy, "q" + "p" * 71 + "-and-more")


def test_password_over_the_limit_never_matches() -> None:
    too_long = "x" * (passwords.MAX_PASSWORD_BYTES + 1)
    stored = CHEAP.hash(too_long)

    assert not verify_password(stored, too_long)


def test_password_with_lone_surrogate_is_refused_not_raised() -> None:
    # json.loads('"\\ud800"') yields such a string; it cannot be UTF-8 encoded.
    assert not verify_password(ARGON2ID, "\ud800")
    assert not verify_password(BCRYPT_2B, "\ud800")


@pytest.mark.parametrize(
    ("stored", "scheme"),
    [
        (ARGON2ID, PasswordScheme.ARGON2ID),
        (BCRYPT_2B, PasswordScheme.BCRYPT),
        ("$2a$" + BCRYPT_2B[4:], PasswordScheme.BCRYPT),
        ("$2y$" + BCRYPT_2B[4:], PasswordScheme.BCRYPT),
        ("$2x$" + BCRYPT_2B[4:], None),
        (ARGON2ID.replace("$argon2id$", "$argon2i$"), None),
        ("right", None),
    ],
    ids=["argon2id", "2b", "2a", "2y", "2x", "argon2i", "plaintext"],
)
def test_scheme_detection(stored: str, scheme: PasswordScheme | None) -> None:
    assert PasswordScheme.detect(stored) is scheme


REFUSED = [
    pytest.param("", "empty", id="empty"),
    pytest.param("hunter2", "plaintext", id="plaintext"),
    pytest.param("$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", "md5-crypt", id="md5-crypt"),
    pytest.param("$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/", "$apr1$", id="apr1"),
    pytest.param("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "{SHA}", id="sha1"),
    pytest.param("$6$salt$" + "a" * 86, "sha512-crypt", id="sha512-crypt"),
    pytest.param(ARGON2ID.replace("$argon2id$", "$argon2i$"), "argon2i", id="argon2i"),
    pytest.param(ARGON2ID.replace("$argon2id$", "$argon2d$"), "argon2d", id="argon2d"),
    pytest.param("$2x$" + BCRYPT_2B[4:], "$2x$", id="bcrypt-2x"),
    pytest.param("$argon2id$v=19$m=65536,t=3,p=4$abc", "malformed argon2id", id="argon2-cut"),
    # 43 base64 characters cut to 41: a length no byte string encodes to (n % 4 == 1).
    pytest.param(ARGON2ID[:-2], "malformed argon2id", id="argon2-truncated-tag"),
    pytest.param(ARGON2ID[:-39], "too short", id="argon2-tag-too-short"),
    pytest.param(ARGON2ID + "\n", "malformed argon2id", id="argon2-trailing-newline"),
    pytest.param(ARGON2ID + " ", "malformed argon2id", id="argon2-trailing-space"),
    pytest.param(ARGON2ID.replace("t=1", "t=01"), "malformed argon2id", id="argon2-leading-zero"),
    pytest.param(ARGON2ID.replace("v=19", "v=20"), "unknown version", id="argon2-version"),
    pytest.param(ARGON2ID.replace("m=8,", "m=4,"), "m=4 is out of range", id="argon2-memory"),
    pytest.param(ARGON2ID.replace("t=1", "t=\u0661"), "malformed argon2id", id="argon2-arabic-1"),
    pytest.param(BCRYPT_2B[:-1], "malformed bcrypt", id="bcrypt-short"),
    pytest.param(BCRYPT_2B.replace("$04$", "$03$"), "cost 03", id="bcrypt-cost"),
    pytest.param(BCRYPT_2B[:28] + "x" + BCRYPT_2B[29:], "malformed bcrypt", id="bcrypt-salt"),
]


@pytest.mark.parametrize(("stored", "says"), REFUSED)
def test_refused_formats_are_named_without_quoting_the_hash(stored: str, says: str) -> None:
    problem = check_hash_format(stored)

    assert problem is not None
    assert says in problem
    if len(stored) > 8:
        assert stored.strip() not in problem


@pytest.mark.parametrize(("stored", "says"), REFUSED)
def test_refused_formats_never_verify_and_never_raise(stored: str, says: str) -> None:
    assert not verify_password(stored, "right")
    assert not verify_password(stored, "hunter2")


def test_damaged_hash_is_refused_at_verification_without_raising() -> None:
    assert not verify_password(ARGON2ID.replace("$argon2id$v=19$", "$argon2id$v=19$\u00e9"), "x")
    assert not verify_password(BCRYPT_2B[:-3] + "\u00e9\u00e9\u00e9", "right")


def test_accepted_argon2_hashes_always_decode() -> None:
    # Guards the promise that a damaged hash is a config error, not a login-time surprise:
    # whatever check_hash_format accepts, libargon2 can decode (a wrong password is a mismatch).
    rng = random.Random(20240601)
    alphabet = "$=,0123456789mptvAZaz+/ \n"
    accepted = 0
    for _ in range(3000):
        chars = list(ARGON2ID)
        for _ in range(rng.randint(1, 2)):
            position = rng.randrange(len(chars))
            if rng.random() < 0.5:
                chars[position] = rng.choice(alphabet)
            else:
                del chars[position]
        mutated = "".join(chars)
        if check_hash_format(mutated) is None:
            accepted += 1
            with pytest.raises(VerifyMismatchError):
                CHEAP.verify(mutated, "not the password")
    assert accepted > 50  # the generator does produce decodable variants


def test_dummy_hash_costs_what_hash_password_costs_and_is_made_once() -> None:
    assert dummy_hash() is dummy_hash()
    assert extract_parameters(dummy_hash()) == passwords.HASH_PARAMETERS
    assert check_hash_format(dummy_hash()) is None
    assert not needs_rehash(dummy_hash())


@pytest.mark.parametrize(
    ("stored", "expected"),
    [(BCRYPT_2B, True), (ARGON2ID, True), ("hunter2", True)],
    ids=["bcrypt", "cheap-argon2id", "plaintext"],
)
def test_needs_rehash_flags_hashes_that_cost_a_different_time(stored: str, expected: bool) -> None:
    assert needs_rehash(stored) is expected
