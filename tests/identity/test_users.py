"""The user directory: looking users up and checking their passwords."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import bcrypt
import pytest
from argon2 import PasswordHasher

from gateway import passwords
from gateway.identity import users
from gateway.identity.users import User, UserDirectory
from gateway.passwords import dummy_hash, hash_password

# Pre-generated, cheap hashes keep the loading tests fast; hash_password's real parameters are
# used by the authentication tests below.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ALICE_HASH = CHEAP.hash("alice-pw")
BOB_BCRYPT = bcrypt.hashpw(b"bob-pw", bcrypt.gensalt(rounds=4)).decode()
MD5_CRYPT = "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/"
APR1 = "$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/"
SHA1 = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="


# --- the directory ---------------------------------------------------------------------------


def test_user_repr_hides_the_password_hash() -> None:
    user = User(username="alice", roles=frozenset({"admin"}), password_hash=ALICE_HASH)

    assert "alice" in repr(user)
    assert ALICE_HASH not in repr(user)
    assert "password_hash" not in repr(user)


# --- authentication ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_hash() -> str:
    """A hash made by hash_password itself, with the production parameters."""
    return hash_password("alice-pw")


def _users(real_hash: str) -> list[User]:
    return [
        User(username="alice", roles=frozenset({"admin"}), password_hash=real_hash),
        User(username="bob", password_hash=BOB_BCRYPT),
    ]


@pytest.fixture
def directory(real_hash: str) -> UserDirectory:
    """The directory as the gateway builds it: passwords verified in its hashing processes."""
    return UserDirectory(_users(real_hash))


@pytest.fixture
def spied(real_hash: str) -> Iterator[UserDirectory]:
    """The directory verifying on threads of this process, where a :class:`VerifySpy` sees
    each verification."""
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield UserDirectory(_users(real_hash), executor=executor)


@pytest.mark.parametrize(
    ("username", "password", "expected"),
    [
        ("alice", "alice-pw", "alice"),
        ("bob", "bob-pw", "bob"),
        ("alice", "bob-pw", None),
        ("bob", "alice-pw", None),
        ("alice", "", None),
        ("Alice", "alice-pw", None),
        ("nobody", "alice-pw", None),
        ("", "", None),
    ],
    ids=[
        "argon2id",
        "bcrypt",
        "argon2id-wrong",
        "bcrypt-wrong",
        "empty-password",
        "case",
        "unknown",
        "empty-username",
    ],
)
async def test_authenticate(
    directory: UserDirectory, username: str, password: str, expected: str | None
) -> None:
    user = await directory.authenticate(username, password)

    assert (user.username if user else None) == expected


class VerifySpy:
    """Records each verify_password call (hash, thread name), then runs the real one."""

    def __init__(self, result: bool | None = None, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.threads: list[int] = []
        self.result = result
        self.delay_s = delay_s
        self.real = passwords.verify_password

    def __call__(self, password_hash: str, password: str) -> bool:
        self.calls.append((password_hash, threading.current_thread().name))
        self.threads.append(threading.get_ident())
        if self.delay_s:
            time.sleep(self.delay_s)
        verified = self.real(password_hash, password)
        return verified if self.result is None else self.result


async def test_unknown_user_is_verified_against_the_dummy_hash(
    spied: UserDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = VerifySpy()
    monkeypatch.setattr(passwords, "verify_password", spy)

    assert await spied.authenticate("nobody", "alice-pw") is None

    assert [hashed for hashed, _ in spy.calls] == [dummy_hash()]


async def test_unknown_user_is_refused_even_if_the_dummy_matched(
    spied: UserDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passwords, "verify_password", VerifySpy(result=True))

    assert await spied.authenticate("nobody", "anything") is None


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "x" * (passwords.MAX_PASSWORD_BYTES + 1)),
        ("alice", "\u00e9" * (passwords.MAX_PASSWORD_BYTES // 2 + 1)),  # 2 bytes a character
        ("x" * (users.MAX_USERNAME_LENGTH + 1), "alice-pw"),
    ],
    ids=["long-password", "long-utf8-password", "long-username"],
)
async def test_over_long_input_fails_but_costs_a_verification(
    spied: UserDirectory, monkeypatch: pytest.MonkeyPatch, username: str, password: str
) -> None:
    spy = VerifySpy(result=True)
    monkeypatch.setattr(passwords, "verify_password", spy)

    assert await spied.authenticate(username, password) is None

    assert [hashed for hashed, _ in spy.calls] == [dummy_hash()]


async def test_authentication_runs_off_the_event_loop(directory: UserDirectory) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    results = await asyncio.gather(
        directory.authenticate("alice", "alice-pw"),
        directory.authenticate("alice", "wrong"),
        directory.authenticate("bob", "bob-pw"),
        directory.authenticate("nobody", "x"),
    )
    done.set()
    await ticking

    # Four verifications, three of them argon2id with the production parameters (tenths of a
    # second each): the loop kept serving other tasks meanwhile.
    assert ticks >= 5
    assert [user.username if user else None for user in results] == ["alice", None, "bob", None]


async def test_hashes_are_verified_in_processes_of_their_own_at_the_lowest_priority() -> None:
    pool = users._password_executor()
    loop = asyncio.get_running_loop()
    pid = await loop.run_in_executor(pool, os.getpid)
    niceness = await loop.run_in_executor(pool, os.nice, 0)

    assert isinstance(pool, ProcessPoolExecutor)
    # Not the GIL or the address space of the event loop's process.
    assert pid != os.getpid()
    assert niceness == users.HASHING_NICENESS
    if sys.platform == "linux":
        policy = await loop.run_in_executor(pool, os.sched_getscheduler, 0)
        assert policy == os.SCHED_IDLE
    expected = min(max(1, users._cpu_count() // 2), users.MAX_HASHING_PROCESSES)
    assert pool._max_workers == expected


def test_directory_refuses_duplicate_usernames() -> None:
    alice = User(username="alice", password_hash=ALICE_HASH)

    with pytest.raises(ValueError, match="duplicate username"):
        UserDirectory([alice, alice])
