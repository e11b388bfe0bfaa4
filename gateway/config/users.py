"""The ``users:`` and ``login:`` sections: every source of users, read and checked here.

A user entry has one schema (:func:`user_entry`), inline (``users.inline``) and in a users file
(``users.file``, a YAML list of the same entries); ``users.htpasswd`` holds ``name:bcrypt-hash``
lines. The files are read once per load, every problem of every source is reported together,
and a username may appear once across all of them (also when two differ only in letter case).
:attr:`UsersSettings.entries` holds every user, in order: inline, file, htpasswd.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from gateway import passwords
from gateway.config import values
from gateway.config.errors import describe
from gateway.config.oidc import build_oidc
from gateway.config.reader import Context, Section
from gateway.config.settings import LoginSettings, ThrottleSettings, UserEntry, UsersSettings

KEYS = ("file", "htpasswd", "inline")
USER_KEYS = ("username", "password_hash", "name", "email", "roles", "disabled")
LOGIN_KEYS = ("title", "throttle", "oidc")
THROTTLE_KEYS = ("max_failures", "window", "lockout")

MAX_USERNAME_LENGTH = 256
"""Longest username (characters) accepted in configuration or looked up at login."""

MAX_FILE_BYTES = 16 * 1024 * 1024
"""Larger users files or htpasswd files are refused as probably the wrong file."""

HASH_HINT = "create one with `gateway hash-password`"

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def build_users(root: Section) -> UsersSettings:
    """Validate ``users:``: the inline entries, the users file and the htpasswd file."""
    section = root.section("users", KEYS)
    ctx = section.ctx
    sources = _Sources(ctx)
    for path, item in section.items("inline", "users"):
        sources.add_item(path, item)
    users_file = section.file("file")
    if users_file is not None:
        sources.read_users_file(users_file)
    htpasswd = section.file("htpasswd")
    if htpasswd is not None:
        sources.read_htpasswd(htpasswd)
    warning = _cost_warning(sources.entries)
    if warning is not None:
        ctx.warn("users", warning)
    return UsersSettings(file=users_file, htpasswd=htpasswd, entries=tuple(sources.entries))


def user_entry(ctx: Context, path: str, item: Any) -> tuple[UserEntry | None, bool]:
    """The user entry at ``path`` and whether it is valid. Each problem is reported to ``ctx``
    (a problem with a field of a user whose name is known says which user: ``user "bob":
    expected an email address``); messages never contain a password hash. An invalid entry is
    still returned when its username is valid, so that it takes part in the check for
    duplicates; it is ``None`` otherwise."""
    if not isinstance(item, Mapping):
        ctx.error(path, f"expected a mapping with username and password_hash, got {describe(item)}")
        return None, False
    found = Context(ctx.base_dir)
    section = Section(found, path, item, USER_KEYS)
    username = section.require("username", check_username)
    password_hash = section.require("password_hash", password_hash_text, HASH_HINT)
    entry = UserEntry(
        username=username or "",
        password_hash=password_hash or "",
        name=section.get("name", None, _name),
        email=section.get("email", None, _email),
        roles=section.get("roles", (), values.string_list("role names")),
        disabled=section.get("disabled", False, values.boolean),
    )
    fields = tuple(section.at(key) for key in USER_KEYS if key != "username")
    for issue in found.issues:
        who = f"user {_quote(username)}: " if username is not None else ""
        ctx.error(issue.path, (who if issue.path.startswith(fields) else "") + issue.message)
    return (entry if username is not None else None), not found.issues


class _Sources:
    """Users across all sources, each username once."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.entries: list[UserEntry] = []
        self._seen: dict[str, tuple[str, str]] = {}  # casefolded username -> (where, as written)

    def add_item(self, at: str, item: Any) -> None:
        """The user entry ``item`` found at ``at`` (inline or in the users file)."""
        entry, valid = user_entry(self.ctx, at, item)
        if entry is not None:
            self.add(entry, where=at, username_at=f"{at}.username", valid=valid)

    def add(self, entry: UserEntry, *, where: str, username_at: str, valid: bool = True) -> None:
        """Record ``entry``; one that is not ``valid`` (already reported) only claims its name."""
        folded = entry.username.casefold()
        if folded in self._seen:
            other_where, other = self._seen[folded]
            if other == entry.username:
                message = (
                    f"duplicate username {_quote(entry.username)}, already defined at {other_where}"
                )
            else:
                message = (
                    f"duplicate username {_quote(entry.username)}: {_quote(other)} is already "
                    f"defined at {other_where} (usernames must differ by more than letter case)"
                )
            self.ctx.error(username_at, message)
            return
        self._seen[folded] = (where, entry.username)
        if valid:
            self.entries.append(entry)

    def read_users_file(self, path: Path) -> None:
        content = self._read("users.file", path)
        if content is None:
            return
        try:
            data = yaml.safe_load(content)
        except yaml.YAMLError as exc:
            self.ctx.error("users.file", f"{path} is not valid YAML: {_yaml_problem(exc)}")
            return
        if data is None:  # an empty file: no users
            return
        if not isinstance(data, list):
            self.ctx.error(
                "users.file",
                f"expected a list of users (same shape as users.inline), got {describe(data)}",
            )
            return
        for index, item in enumerate(data):
            self.add_item(f"users.file[{index}]", item)

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
                self.ctx.error(at, "expected name:hash")
                continue
            problem = username_problem(username)
            if problem is not None:
                self.ctx.error(at, problem)
                continue
            problem = _htpasswd_hash_problem(password_hash)
            if problem is not None:
                self.ctx.error(at, f"user {_quote(username)}: {problem}")
            entry = UserEntry(username=username, password_hash=password_hash)
            self.add(entry, where=at, username_at=at, valid=problem is None)

    def _read(self, at: str, path: Path) -> str | None:
        try:
            with path.open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            self.ctx.error(at, f"cannot read {path}: {exc.strerror or exc}")
            return None
        if len(data) > MAX_FILE_BYTES:
            limit = f"{MAX_FILE_BYTES // 2**20} MiB"
            self.ctx.error(at, f"{path} is larger than {limit}; is it the right file?")
            return None
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.ctx.error(at, f"{path} is not UTF-8 text (invalid byte at offset {exc.start})")
            return None


def check_username(value: Any) -> str:
    """``value`` as a username, or :class:`~gateway.config.values.Invalid` saying which rule
    it breaks."""
    if not isinstance(value, str):
        raise values.Invalid(f"expected a username, got {describe(value)}")
    problem = username_problem(value)
    if problem is not None:
        raise values.Invalid(problem)
    return value


def username_problem(username: str) -> str | None:
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


def password_hash_text(value: Any) -> str:
    """An argon2id or bcrypt hash string in a format that can be verified."""
    if not isinstance(value, str) or not value.strip():
        raise values.Invalid(f"expected a password hash string, got {describe(value, secret=True)}")
    problem = passwords.check_hash_format(value)
    if problem is not None:
        raise values.Invalid(problem)
    return value


def _name(value: Any) -> str:
    name = values.text(value)
    if any(unicodedata.category(char)[0] == "C" for char in name):
        # It travels in the JWT and in identity headers, where a line break would not do.
        raise values.Invalid("no control characters in a name")
    return name


def _email(value: Any) -> str:
    email = values.text(value)
    if not _EMAIL.fullmatch(email):
        raise values.Invalid(f"expected an email address, got {describe(value)}")
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


def _cost_warning(entries: Iterable[UserEntry]) -> str | None:
    odd = [entry.username for entry in entries if passwords.needs_rehash(entry.password_hash)]
    if not odd:
        return None
    shown = ", ".join(_quote(name) for name in odd[:5]) + (", ..." if len(odd) > 5 else "")
    return (
        f"{len(odd)} user(s) ({shown}) have bcrypt or non-default argon2id hashes; their "
        "logins take a different time than an unknown username's, which reveals that they "
        "exist. Re-hash their passwords with `gateway hash-password`."
    )


def build_login(root: Section) -> LoginSettings:
    """Validate ``login:``: the page title, the failed-login throttle and the OpenID Connect
    providers."""
    section = root.section("login", LOGIN_KEYS)
    throttle = section.section("throttle", THROTTLE_KEYS)
    return LoginSettings(
        title=section.get("title", "Sign in", values.text),
        throttle=ThrottleSettings(
            max_failures=throttle.get("max_failures", 5, values.integer(minimum=1)),
            window_s=throttle.get("window", 300.0, values.duration(positive=True)),
            lockout_s=throttle.get("lockout", 900.0, values.duration(positive=True)),
        ),
        oidc=build_oidc(section),
    )
