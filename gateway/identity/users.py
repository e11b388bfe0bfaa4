"""The users that can sign in, and checking their passwords.

The configuration loader reads and checks every source of users (:mod:`gateway.config.users`);
:func:`load_users` turns its entries into the frozen :class:`UserDirectory` that logins are
checked against. A reload (SIGHUP) builds a whole new directory; nothing here changes after it
is built.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from gateway import passwords
from gateway.config.settings import UsersSettings
from gateway.config.users import MAX_USERNAME_LENGTH

_STAMP_DOMAIN = b"gateway/credential-stamp/v1\x00"


def credential_stamp(username: str, password_hash: str) -> str:
    """A one-way digest of a user's credentials, stored with each session at login.

    A session (or API token) whose stamp is not the user's current one is refused: a new
    password ends every session started with the old one. The password hash is salted, so the
    stamp reveals nothing and cannot be guessed.
    """
    digest = hashlib.sha256(
        _STAMP_DOMAIN + username.encode("utf-8", "surrogatepass") + b"\x00" + password_hash.encode()
    ).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """One person who can log in; ``password_hash`` is kept out of ``repr`` (and so out of logs)."""

    username: str
    name: str | None = None
    email: str | None = None
    roles: frozenset[str] = frozenset()
    password_hash: str = field(repr=False)
    disabled: bool = False
    """Cannot sign in; sessions and API tokens of the user are refused."""
    stamp: str = field(default="", repr=False, compare=False)
    """:func:`credential_stamp` of this user (computed when not given)."""

    def __post_init__(self) -> None:
        if not self.stamp:
            object.__setattr__(self, "stamp", credential_stamp(self.username, self.password_hash))


class UserDirectory:
    """The users that can log in, by exact username; immutable once built.

    ``executor`` runs password verification; by default a process-wide pool
    with one thread per CPU (see :meth:`authenticate`).
    """

    def __init__(
        self,
        users: Iterable[User] = (),
        *,
        executor: Executor | None = None,
    ) -> None:
        self._users: dict[str, User] = {}
        for user in users:
            if user.username in self._users:
                raise ValueError(f"duplicate username {json.dumps(user.username)}")
            self._users[user.username] = user
        self._executor = executor
        self._verification_s = 0.25

    def get(self, username: str) -> User | None:
        """The user called exactly ``username``, or ``None``. Does not check any password."""
        return self._users.get(username)

    def usernames(self) -> tuple[str, ...]:
        """Every username, in definition order (inline, then file, then htpasswd)."""
        return tuple(self._users)

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, username: object) -> bool:
        return username in self._users

    def __iter__(self) -> Iterator[User]:
        return iter(self._users.values())

    async def authenticate(self, username: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else ``None``; the caller cannot tell why it failed.

        The hash is verified on a dedicated thread pool sized to the CPU count, not the loop's
        default executor: a login storm then queues behind a fixed number of hashes (bounding
        CPU and argon2's 64 MiB per hash) instead of filling the default executor, which
        aiohttp's resolver (``getaddrinfo``) and ``asyncio.to_thread`` callers also need.

        SECURITY: every attempt costs one full verification. An unknown username, a username
        over :data:`MAX_USERNAME_LENGTH` or a password over ``passwords.MAX_PASSWORD_BYTES``
        is verified against ``passwords.dummy_hash()`` and then refused, so the response time
        does not reveal whether a username exists (``gateway check`` warns about users whose
        hash costs a different time).
        """
        user = self._users.get(username) if len(username) <= MAX_USERNAME_LENGTH else None
        if not _within_limit(password):
            user, password = None, ""
        executor = self._executor if self._executor is not None else _password_executor()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            return await loop.run_in_executor(executor, _verify, user, password)
        finally:
            # What a verification takes here, queueing included (an exponential average).
            elapsed = time.perf_counter() - started
            self._verification_s += (elapsed - self._verification_s) * 0.2

    @property
    def verification_s(self) -> float:
        """About how long :meth:`authenticate` takes now (seconds): what a refusal that skips
        the hash waits, so that it is not told apart by timing."""
        return self._verification_s


def _within_limit(password: str) -> bool:
    # A character is at least one byte: skip encoding a huge string that is too long anyway.
    limit = passwords.MAX_PASSWORD_BYTES
    return len(password) <= limit and len(password.encode("utf-8", "surrogatepass")) <= limit


def _verify(user: User | None, password: str) -> User | None:
    """Runs on a worker thread: one verification whatever the outcome."""
    if user is None:
        # SECURITY: burn the same work as a real user, then refuse whatever the result.
        passwords.verify_password(passwords.dummy_hash(), password)
        return None
    verified = passwords.verify_password(user.password_hash, password)
    # A disabled user costs the same work and gets the same answer as a wrong password.
    return user if verified and not user.disabled else None


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):  # the CPUs this process may run on (containers, taskset)
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


MAX_HASHING_THREADS = 4
"""Concurrent password checks per process. Each argon2id check holds 64 MiB, and in a container
the CPUs a process may run on are often every core of the node, not its CPU limit: the cap keeps
a login burst within a small memory limit; further logins queue."""


HASHING_NICENESS = 10
"""How much lower than the event loop's the hashing threads' CPU priority is (Linux)."""


def _yield_to_the_loop() -> None:
    """Initialiser of each hashing thread: on Linux, lower its own scheduling priority (nice is
    per thread there, and the threads argon2 starts for its lanes inherit it). A login storm
    then takes the CPU the event loop leaves over instead of starving proxied requests; logins
    wait longer under load, requests do not."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + HASHING_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness))


@functools.cache
def _password_executor() -> ThreadPoolExecutor:
    # argon2-cffi and bcrypt release the GIL while hashing, so threads give real parallelism.
    workers = min(_cpu_count(), MAX_HASHING_THREADS)
    return ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="gateway-password", initializer=_yield_to_the_loop
    )


if hasattr(os, "register_at_fork"):
    # Worker threads do not survive fork(): a forked worker process builds its own pool.
    os.register_at_fork(after_in_child=_password_executor.cache_clear)


def load_users(settings: UsersSettings) -> UserDirectory:
    """The :class:`UserDirectory` of ``settings.entries`` (read and checked by the
    configuration loader, :mod:`gateway.config.users`).

    Also computes the dummy hash once per process, so the first unknown-user login costs no
    more than later ones.
    """
    passwords.dummy_hash()
    return UserDirectory(
        User(
            username=entry.username,
            name=entry.name,
            email=entry.email,
            roles=frozenset(entry.roles),
            password_hash=entry.password_hash,
            disabled=entry.disabled,
        )
        for entry in settings.entries
    )
