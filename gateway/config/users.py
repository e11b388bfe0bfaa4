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
USER_KEYS = ("username", "password_hash", "name", "email", "roles", "disabled")
LOGIN_KEYS = ("title", "throttle")
THROTTLE_KEYS = ("max_failures", "window", "lockout")

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def build_users(root: Section) -> UsersSettings:
    """Validate ``users:``: entries, files, password hashes and unique usernames.

    The sources are read with the same code the gateway logs in with
    (:func:`gateway.identity.users.load_users`), so a hash or a users file that would fail at
    login fails here, with its path, instead.
    """
    from gateway.identity.users import UsersError, load_users  # identity imports config helpers

    section = root.section("users", KEYS)
    issues_before = len(section.ctx.issues)
    inline = [
        entry
        for path, item in section.items("inline", "users")
        if (entry := _user(Section(section.ctx, path, item, USER_KEYS))) is not None
    ]
    users = UsersSettings(
        file=section.path_to("file", files.check_readable),
        htpasswd=section.path_to("htpasswd", files.check_readable),
        inline=tuple(inline),
    )
    if len(section.ctx.issues) > issues_before:
        return users  # the shape is wrong already: reading the sources would repeat those errors
    try:
        load_users(users)
    except UsersError as exc:
        for path, message in exc.issues:
            section.ctx.error(path, message)
    return users


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
        disabled=section.get("disabled", False, values.boolean),
    )
    return entry if username is not None else None


def _username(value: Any) -> str:
    from gateway.identity.users import check_username

    return check_username(value)


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
