"""The ``users:`` and ``login:`` sections.

Only the shape is checked here: the users file and htpasswd are parsed, and password hashes
verified, by :mod:`gateway.identity`.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.config import files, values
from gateway.config.errors import describe
from gateway.config.reader import Section
from gateway.config.settings import LoginSettings, ThrottleSettings, UserEntry, UsersSettings

KEYS = ("file", "htpasswd", "inline")
USER_KEYS = ("username", "password_hash", "name", "email", "roles")
LOGIN_KEYS = ("title", "throttle")
THROTTLE_KEYS = ("max_failures", "window", "lockout")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def build_users(root: Section) -> UsersSettings:
    """Validate ``users:``: files must be readable, inline usernames unique."""
    section = root.section("users", KEYS)
    inline: list[UserEntry] = []
    first_seen: dict[str, tuple[str, str]] = {}  # casefolded username -> (path, as written)
    for path, item in section.items("inline", "users"):
        entry = _user(Section(section.ctx, path, item, USER_KEYS))
        if entry is None:
            continue
        folded = entry.username.casefold()
        if folded in first_seen:
            other_path, other = first_seen[folded]
            same = "" if other == entry.username else f' "{other}" (usernames differ only in case)'
            section.ctx.error(
                f"{path}.username",
                f'duplicate username "{entry.username}", already at {other_path}{same}',
            )
            continue
        first_seen[folded] = (path, entry.username)
        inline.append(entry)
    return UsersSettings(
        file=section.path_to("file", files.check_readable),
        htpasswd=section.path_to("htpasswd", files.check_readable),
        inline=tuple(inline),
    )


def _user(section: Section) -> UserEntry | None:
    username = section.require("username", _username)
    password_hash = section.require(
        "password_hash", values.text, "create one with `gateway hash-password`"
    )
    entry = UserEntry(
        username=username or "",
        password_hash=password_hash or "",
        name=section.get("name", None, values.text),
        email=section.get("email", None, _email),
        roles=section.get("roles", (), values.string_list("role names")),
    )
    return entry if username is not None else None


def _username(value: Any) -> str:
    name = values.text(value)
    if name != name.strip() or _CONTROL.search(name) or ":" in name:
        # ":" separates user and password in htpasswd and HTTP Basic credentials.
        raise values.Invalid(
            f"expected a username without surrounding spaces, control characters or ':', "
            f"got {describe(value)}"
        )
    return name


def _email(value: Any) -> str:
    email = values.text(value)
    if not _EMAIL.fullmatch(email):
        raise values.Invalid(f"expected an email address, got {describe(value)}")
    return email


def build_login(root: Section) -> LoginSettings:
    """Validate ``login:``: the page title and the failed-login throttle."""
    section = root.section("login", LOGIN_KEYS)
    throttle = section.section("throttle", THROTTLE_KEYS)
    return LoginSettings(
        title=section.get("title", "Sign in", values.text),
        throttle=ThrottleSettings(
            max_failures=throttle.get("max_failures", 5, values.integer(minimum=1)),
            window_s=throttle.get("window", 300.0, values.duration(positive=True)),
            lockout_s=throttle.get("lockout", 900.0, values.duration(positive=True)),
        ),
    )
