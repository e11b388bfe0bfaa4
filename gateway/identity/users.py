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
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field

from gateway import metrics, passwords
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
    idp: str | None = None
    """The OpenID Connect provider the user signed in at (``login.oidc[].name``); ``None`` for
    a user of the local directory."""

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

        The hash is verified in a small pool of worker processes at the lowest CPU priority
        (see :func:`_password_executor`), never on the event loop: a login storm then queues
        behind a fixed number of hashes (bounding CPU and argon2's 64 MiB per hash) and takes
        only the CPU that proxied requests leave over.

        SECURITY: every attempt costs one full verification. An unknown username, a username
        over :data:`MAX_USERNAME_LENGTH` or a password over ``passwords.MAX_PASSWORD_BYTES``
        is verified against ``passwords.dummy_hash()`` and then refused, so the response time
        does not reveal whether a username exists (``gateway check`` warns about users whose
        hash costs a different time).
        """
        user = self._users.get(username) if len(username) <= MAX_USERNAME_LENGTH else None
        if not _within_limit(password):
            user, password = None, ""
        # SECURITY: an unknown user burns the same work as a real one, then is refused whatever
        # the result; a disabled user costs the same work and gets the same answer as a wrong
        # password.
        password_hash = user.password_hash if user is not None else passwords.dummy_hash()
        executor = self._executor if self._executor is not None else _password_executor()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        metrics.PASSWORD_VERIFICATIONS.inc()
        try:
            verified = await loop.run_in_executor(
                executor, passwords.verify_password, password_hash, password
            )
        finally:
            # What a verification takes here, queueing included (an exponential average).
            elapsed = time.perf_counter() - started
            self._verification_s += (elapsed - self._verification_s) * 0.2
        if user is None or not verified or user.disabled:
            return None
        return user

    @property
    def verification_s(self) -> float:
        """About how long :meth:`authenticate` takes now (seconds): what a refusal that skips
        the hash waits, so that it is not told apart by timing."""
        return self._verification_s


def _within_limit(password: str) -> bool:
    # A character is at least one byte: skip encoding a huge string that is too long anyway.
    limit = passwords.MAX_PASSWORD_BYTES
    return len(password) <= limit and len(password.encode("utf-8", "surrogatepass")) <= limit


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):  # the CPUs this process may run on (containers, taskset)
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


MAX_HASHING_PROCESSES = 4
"""Concurrent password checks per gateway process. Each argon2id check holds 64 MiB, and in a
container the CPUs a process may run on are often every core of the node, not its CPU limit: the
cap keeps a login burst within a small memory limit; further logins queue."""

HASHING_NICENESS = 19
"""The hashing processes' niceness: the lowest priority."""


def _lower_priority() -> None:
    """Initialiser of each hashing process: the lowest CPU priority (on Linux the SCHED_IDLE
    policy, which also lets any other task preempt it at once; the threads argon2 starts for its
    lanes inherit it)."""
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(HASHING_NICENESS)
    if hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


@functools.cache
def _password_executor() -> ProcessPoolExecutor:
    """The pool that verifies passwords: processes, not threads, at the lowest priority.

    Threads shared the event loop's GIL and address space: a hashing thread re-taking the GIL
    after each hash, or one of argon2's lane threads unmapping its 64 MiB, stalled the loop for
    milliseconds, and a low-priority thread holding the GIL made it worse. In processes of
    their own the hashes take only the CPU the loop leaves over. Started by ``spawn`` (never
    ``fork`` from a process that runs threads), on the first login.
    """
    return ProcessPoolExecutor(
        max_workers=min(max(1, _cpu_count() // 2), MAX_HASHING_PROCESSES),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_lower_priority,
    )


def start_password_pool() -> None:
    """Start the hashing processes now (serving starts), not at the first login."""
    _password_executor().submit(os.getpid)


if hasattr(os, "register_at_fork"):
    # A forked gateway worker process starts a pool of its own.
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
