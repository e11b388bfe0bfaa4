"""The local user store: users from ``users.inline``, ``users.file`` and ``users.htpasswd``.

:func:`load_users` reads and checks every source and reports every problem at once
(:class:`UsersError`); :class:`UserDirectory` is the frozen result that logins are checked against.
A reload (SIGHUP) builds a whole new directory; nothing here changes after it is built.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gateway import passwords
from gateway.config.errors import describe
from gateway.config.settings import UsersSettings
from gateway.config.values import Invalid, boolean, did_you_mean, string_list, text

MAX_USERNAME_LENGTH = 256
"""Longest username (characters) accepted in configuration or looked up at login."""

MAX_FILE_BYTES = 16 * 1024 * 1024
"""Larger users files or htpasswd files are refused as probably the wrong file."""

USER_KEYS = ("username", "password_hash", "name", "email", "roles", "disabled")

T = TypeVar("T")

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_HASH_HINT = "create one with `gateway hash-password`"


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


class UsersError(Exception):
    """The user sources are invalid; :attr:`issues` lists every ``(path, message)`` found.

    Paths are YAML paths (``users.inline[1].password_hash``, ``users.file[2].roles``), the file
    itself (``users.file``) or a line of the htpasswd file (``users.htpasswd:3``).
    """

    def __init__(self, issues: Iterable[tuple[str, str]]) -> None:
        self.issues: list[tuple[str, str]] = list(issues)
        super().__init__("\n".join(f"{path}: {message}" for path, message in self.issues))


class UserDirectory:
    """The users that can log in, by exact username; immutable once built.

    ``warnings`` are non-fatal findings of :func:`load_users` (for ``gateway check`` and the
    start-up log). ``executor`` runs password verification; by default a process-wide pool
    with one thread per CPU (see :meth:`authenticate`).
    """

    def __init__(
        self,
        users: Iterable[User] = (),
        *,
        warnings: Iterable[str] = (),
        executor: Executor | None = None,
    ) -> None:
        self._users: dict[str, User] = {}
        for user in users:
            if user.username in self._users:
                raise ValueError(f"duplicate username {_quote(user.username)}")
            self._users[user.username] = user
        self.warnings: tuple[str, ...] = tuple(warnings)
        self._executor = executor

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
        does not reveal whether a username exists (see ``warnings`` for users whose hash costs
        a different time).
        """
        user = self._users.get(username) if len(username) <= MAX_USERNAME_LENGTH else None
        if not _within_limit(password):
            user, password = None, ""
        executor = self._executor if self._executor is not None else _password_executor()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, _verify, user, password)


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


@functools.cache
def _password_executor() -> ThreadPoolExecutor:
    # argon2-cffi and bcrypt release the GIL while hashing, so threads give real parallelism.
    workers = min(_cpu_count(), MAX_HASHING_THREADS)
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateway-password")


if hasattr(os, "register_at_fork"):
    # Worker threads do not survive fork(): a forked worker process builds its own pool.
    os.register_at_fork(after_in_child=_password_executor.cache_clear)


def load_users(settings: UsersSettings) -> UserDirectory:
    """Read ``users.inline``, ``users.file`` and ``users.htpasswd`` into a :class:`UserDirectory`.

    Every problem is collected and raised together as :class:`UsersError`: unsupported or
    damaged password hashes (see :func:`~gateway.passwords.check_hash_format`), bad
    usernames (empty, longer than :data:`MAX_USERNAME_LENGTH`, holding whitespace, control
    characters or ``:``), wrong types and unknown keys in the users file, non-bcrypt htpasswd
    entries, and a username defined twice in any sources (also when the two differ only in
    letter case). Messages never contain a password hash.

    Synchronous (file I/O, YAML parsing); also computes the dummy hash once per process so the
    first unknown-user login costs no more than later ones.
    """
    loader = _Loader()
    for index, entry in enumerate(settings.inline):
        at = f"users.inline[{index}]"
        loader.add_entry(
            at,
            username=entry.username,
            password_hash=entry.password_hash,
            name=entry.name,
            email=entry.email,
            roles=entry.roles,
            disabled=entry.disabled,
        )
    if settings.file is not None:
        loader.read_users_file(settings.file)
    if settings.htpasswd is not None:
        loader.read_htpasswd(settings.htpasswd)
    if loader.issues:
        raise UsersError(loader.issues)
    passwords.dummy_hash()
    return UserDirectory(loader.users, warnings=_cost_warnings(loader.users))


class _Loader:
    """Collects users and problems across all sources."""

    def __init__(self) -> None:
        self.users: list[User] = []
        self.issues: list[tuple[str, str]] = []
        self._seen: dict[str, tuple[str, str]] = {}  # casefolded username -> (where, as written)

    def error(self, path: str, message: str) -> None:
        self.issues.append((path, message))

    def add_entry(
        self,
        at: str,
        *,
        username: str,
        password_hash: str,
        name: str | None,
        email: str | None,
        roles: Iterable[str],
        disabled: bool = False,
    ) -> None:
        """Check an entry already of the right types; ``at`` is its YAML path."""
        problem = _username_problem(username)
        if problem is not None:
            self.error(f"{at}.username", problem)
            return
        problem = passwords.check_hash_format(password_hash)
        if problem is not None:
            self.error(f"{at}.password_hash", f"user {_quote(username)}: {problem}")
            return
        if name is not None and any(unicodedata.category(char)[0] == "C" for char in name):
            # It travels in the JWT and in identity headers, where a line break would not do.
            self.error(f"{at}.name", f"user {_quote(username)}: no control characters in a name")
            return
        user = User(
            username=username,
            name=name,
            email=email,
            roles=frozenset(roles),
            password_hash=password_hash,
            disabled=disabled,
        )
        self._add(user, where=at, username_at=f"{at}.username")

    def _add(self, user: User, *, where: str, username_at: str) -> None:
        folded = user.username.casefold()
        if folded in self._seen:
            other_where, other = self._seen[folded]
            if other == user.username:
                message = (
                    f"duplicate username {_quote(user.username)}, already defined at {other_where}"
                )
            else:
                message = (
                    f"duplicate username {_quote(user.username)}: {_quote(other)} is already "
                    f"defined at {other_where} (usernames must differ by more than letter case)"
                )
            self.error(username_at, message)
            return
        self._seen[folded] = (where, user.username)
        self.users.append(user)

    def read_users_file(self, path: Path) -> None:
        content = self._read("users.file", path)
        if content is None:
            return
        try:
            data = yaml.safe_load(content)
        except yaml.YAMLError as exc:
            self.error("users.file", f"{path} is not valid YAML: {_yaml_problem(exc)}")
            return
        if data is None:  # an empty file: no users
            return
        if not isinstance(data, list):
            self.error(
                "users.file",
                f"expected a list of users (same shape as users.inline), got {describe(data)}",
            )
            return
        for index, item in enumerate(data):
            self._file_entry(f"users.file[{index}]", item)

    def _file_entry(self, at: str, item: Any) -> None:
        if not isinstance(item, Mapping):
            expected = "expected a mapping with username and password_hash"
            self.error(at, f"{expected}, got {describe(item)}")
            return
        reported = len(self.issues)
        for key in item:
            if not isinstance(key, str):
                self.error(at, f"keys must be names, got {describe(key)}")
            elif key not in USER_KEYS:
                hint = did_you_mean(key, USER_KEYS) or f"; allowed keys: {', '.join(USER_KEYS)}"
                self.error(f"{at}.{key}", f"unknown key{hint}")
        username = self._field(at, item, "username", check_username, required="")
        who = f"user {_quote(username)}: " if username is not None else ""
        password_hash = self._field(
            at, item, "password_hash", _password_hash, required=_HASH_HINT, who=who
        )
        name = self._field(at, item, "name", text, who=who)
        email = self._field(at, item, "email", _email, who=who)
        roles = self._field(at, item, "roles", string_list("role names"), who=who)
        disabled = self._field(at, item, "disabled", boolean, who=who)
        if len(self.issues) > reported or username is None or password_hash is None:
            return
        self.add_entry(
            at,
            username=username,
            password_hash=password_hash,
            name=name,
            email=email,
            roles=roles or (),
            disabled=bool(disabled),
        )

    def _field(
        self,
        at: str,
        item: Mapping[Any, Any],
        key: str,
        convert: Callable[[Any], T],
        *,
        required: str | None = None,
        who: str = "",
    ) -> T | None:
        """``convert(item[key])``; ``None`` when absent (reported if ``required`` is a hint)."""
        value = item.get(key)
        if value is None:
            if required is not None:
                hint = f": {required}" if required else ""
                self.error(f"{at}.{key}", f"{who}required{hint}")
            return None
        try:
            return convert(value)
        except Invalid as exc:
            for suffix, message in exc.problems:
                self.error(f"{at}.{key}{suffix}", f"{who}{message}")
            return None

    def read_htpasswd(self, path: Path) -> None:
        """``name:hash`` lines; blank lines and ``#`` comments are skipped; bcrypt only."""
        content = self._read("users.htpasswd", path)
        if content is None:
            return
        for number, raw_line in enumerate(content.splitlines(), start=1):
            # ASCII blanks only: a Unicode space in a name is reported, not silently dropped.
            line = raw_line.strip(" \t")
            if not line or line.startswith("#"):
                continue
            at = f"users.htpasswd:{number}"
            username, colon, password_hash = line.partition(":")
            if not colon:
                # The line is not quoted: it may be a password pasted in the wrong place.
                self.error(at, "expected name:hash")
                continue
            problem = _username_problem(username)
            if problem is not None:
                self.error(at, problem)
                continue
            problem = _htpasswd_hash_problem(password_hash)
            if problem is not None:
                self.error(at, f"user {_quote(username)}: {problem}")
                continue
            user = User(username=username, password_hash=password_hash)
            self._add(user, where=at, username_at=at)

    def _read(self, at: str, path: Path) -> str | None:
        try:
            with path.open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            self.error(at, f"cannot read {path}: {exc.strerror or exc}")
            return None
        if len(data) > MAX_FILE_BYTES:
            limit = f"{MAX_FILE_BYTES // 2**20} MiB"
            self.error(at, f"{path} is larger than {limit}; is it the right file?")
            return None
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.error(at, f"{path} is not UTF-8 text (invalid byte at offset {exc.start})")
            return None


def _password_hash(value: Any) -> str:
    """A password hash from the users file: an argon2id or bcrypt string."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a password hash string, got {describe(value, secret=True)}")
    problem = passwords.check_hash_format(value)
    if problem is not None:
        raise Invalid(problem)
    return value


def check_username(value: Any) -> str:
    """``value`` as a username, or :class:`Invalid` saying which rule it breaks."""
    if not isinstance(value, str):
        raise Invalid(f"expected a username, got {describe(value)}")
    problem = _username_problem(value)
    if problem is not None:
        raise Invalid(problem)
    return value


def _username_problem(username: str) -> str | None:
    if not username:
        return "username must not be empty"
    if len(username) > MAX_USERNAME_LENGTH:
        return f"username is longer than {MAX_USERNAME_LENGTH} characters"
    # SECURITY: no invisible or look-alike separators (Unicode C*/Z* categories: controls,
    # zero-width and bidi format characters, spaces) and no ":", which ends the username in
    # htpasswd lines and HTTP Basic credentials.
    if ":" in username or any(unicodedata.category(char)[0] in "CZ" for char in username):
        # ASCII escapes make the invisible culprit visible: "a\u200bb", not "a​b".
        shown = json.dumps(username if len(username) <= 80 else username[:77] + "...")
        return f"expected a username without whitespace, control characters or ':', got {shown}"
    return None


def _email(value: Any) -> str:
    email = text(value)
    if not _EMAIL.fullmatch(email):
        raise Invalid(f"expected an email address, got {describe(value)}")
    return email


def _htpasswd_hash_problem(password_hash: str) -> str | None:
    if passwords.PasswordScheme.detect(password_hash) is not passwords.PasswordScheme.BCRYPT:
        return (
            "only bcrypt entries are supported; re-create it with `htpasswd -B`, "
            "or move the user to users.file with a hash from `gateway hash-password`"
        )
    return passwords.check_hash_format(password_hash)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # Never str(exc): it quotes the offending source line, which may hold a password hash.
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{exc.problem or exc.context or 'syntax error'}{where}"
    return type(exc).__name__


def _quote(username: str) -> str:
    return json.dumps(username, ensure_ascii=False)


def _cost_warnings(users: Iterable[User]) -> list[str]:
    odd = [user.username for user in users if passwords.needs_rehash(user.password_hash)]
    if not odd:
        return []
    shown = ", ".join(_quote(name) for name in odd[:5]) + (", ..." if len(odd) > 5 else "")
    return [
        f"users: {len(odd)} user(s) ({shown}) have bcrypt or non-default argon2id hashes; their "
        "logins take a different time than an unknown username's, which reveals that they "
        "exist. Re-hash their passwords with `gateway hash-password`."
    ]
