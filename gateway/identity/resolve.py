"""The identity stage: who is calling, from the session cookie."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.identity.cookies import (
    expired_session_cookie,
    session_cookie,
    session_cookie_value,
)
from gateway.identity.revocation import credentials_current
from gateway.identity.sessions import Session
from gateway.identity.users import User
from gateway.runtime import Runtime
from gateway.tokens import InvalidBearer


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    user: User
    sid_hash: str
    """What tokens are minted and cached for: the session's hash, or an API token's stand-in."""
    session: Session | None = None
    """The browser session, when the caller came with the session cookie (not a bearer token)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    identity: Identity | None
    set_cookie: str | None = None
    """A ``Set-Cookie`` value for the response: a re-sealed session, or removal of a dead one."""


ANONYMOUS = Resolved(identity=None)


async def resolve_identity(request: web.BaseRequest, runtime: Runtime, *, now: float) -> Resolved:
    """The caller's identity from the session cookie.

    Raises :class:`~gateway.identity.sessions.SessionStoreUnavailable` when the store cannot
    answer: the caller decides whether that fails the request (it does on protected routes).
    """
    settings = runtime.settings
    value = session_cookie_value(request, settings)
    if value is None:
        return ANONYMOUS
    loaded = await runtime.sessions.load(value, now=now)
    if loaded is None:
        # Expired, ended or tampered: drop the dead cookie.
        return Resolved(identity=None, set_cookie=expired_session_cookie(settings))
    session = loaded.session
    user = runtime.users.get(session.username)
    if not credentials_current(user, session.stamp, session.created_at, runtime.revocations):
        # SECURITY: the user was removed or disabled, changed password, or was revoked since
        # this session began: it ends for good, in every backend that keeps sessions.
        await runtime.sessions.delete(value)
        return Resolved(identity=None, set_cookie=expired_session_cookie(settings))
    assert user is not None
    set_cookie = None
    if loaded.refreshed_cookie is not None:
        remaining = loaded.session.created_at + settings.session.absolute_timeout_s - now
        set_cookie = session_cookie(settings, loaded.refreshed_cookie, max_age_s=remaining)
    identity = Identity(user=user, sid_hash=loaded.session.sid_hash, session=loaded.session)
    return Resolved(identity=identity, set_cookie=set_cookie)


def bearer_token(request: web.BaseRequest) -> str | None:
    """The token of an ``Authorization: Bearer`` header (scheme case-insensitive), if any."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def resolve_bearer(runtime: Runtime, token: str, *, now: float) -> Identity:
    """The identity behind an API client's bearer token, or :class:`InvalidBearer` (401)."""
    claims = runtime.tokens.verify_bearer(token)
    user = runtime.users.get(claims.subject)
    if user is None:
        # The user was removed since the token was issued: the token dies with them.
        raise InvalidBearer("token subject is not a known user", reason="bearer_unknown_user")
    if not credentials_current(user, claims.stamp, claims.issued_at, runtime.revocations):
        # Disabled, another password, or revoked since the token was issued.
        raise InvalidBearer("credentials changed", reason="bearer_credentials_changed")
    return Identity(user=user, sid_hash=claims.sid_hash)
