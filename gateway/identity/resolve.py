"""The identity stage: who is calling, from the session cookie."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.identity.cookies import (
    expired_session_cookie,
    session_cookie,
    session_cookie_value,
)
from gateway.identity.sessions import Session
from gateway.identity.users import User
from gateway.runtime import Runtime


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    user: User
    session: Session


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    identity: Identity | None
    set_cookie: str | None = None
    """A ``Set-Cookie`` value for the response: a re-sealed session, or removal of a dead one."""


ANONYMOUS = Resolved(identity=None)


async def resolve_identity(request: web.Request, runtime: Runtime, *, now: float) -> Resolved:
    """The caller's identity from the session cookie.

    Raises :class:`~gateway.identity.sessions.SessionStoreUnavailable` when the store cannot
    answer: the caller decides whether that fails the request (it does on protected routes).
    """
    settings = runtime.settings
    value = session_cookie_value(request, settings)
    if value is None:
        return ANONYMOUS
    loaded = await runtime.sessions.load(value, now=now)
    user = runtime.users.get(loaded.session.username) if loaded is not None else None
    if loaded is None or user is None:
        # Expired, ended, tampered, or the user was removed: drop the dead cookie.
        return Resolved(identity=None, set_cookie=expired_session_cookie(settings))
    set_cookie = None
    if loaded.refreshed_cookie is not None:
        remaining = loaded.session.created_at + settings.session.absolute_timeout_s - now
        set_cookie = session_cookie(settings, loaded.refreshed_cookie, max_age_s=remaining)
    return Resolved(identity=Identity(user=user, session=loaded.session), set_cookie=set_cookie)
