"""The session contract: what a session is, and the plain store every backend implements.

Policy (ids, expiry, sliding the idle timeout, the refresh interval) lives once, in
:class:`gateway.identity.sessions.manager.SessionManager`; a :class:`SessionStore` only keeps
records: add, get, refresh, remove, and an index by user. One module per backend; one conformance
suite (tests/identity/test_session_stores.py) runs against each through the manager.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

__all__ = [
    "Found",
    "LoadedSession",
    "ProviderLogin",
    "Session",
    "SessionStore",
    "SessionStoreUnavailable",
]

from gateway.errors import SessionStoreUnavailable

SESSION_ID_BYTES = 32
# secrets.token_urlsafe(32): 32 bytes -> 43 base64url characters, no padding.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def new_session_id() -> tuple[str, str]:
    """A fresh session id and its hex SHA-256."""
    # SECURITY: 256 bits from the OS CSPRNG (CONTRACT section 5); stores keep only the hash.
    session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
    return session_id, hash_session_id(session_id)


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def parse_session_id(value: str) -> str | None:
    """The hex SHA-256 of a well-formed session id, or ``None`` for anything else.

    Lookups go by this hash, so no secret is compared with ``==``; malformed values are refused
    before they cost a lookup (or a Redis round trip).
    """
    if not _SESSION_ID.fullmatch(value):
        return None
    return hash_session_id(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderLogin:
    """What a session begun at an OpenID Connect provider carries: the provider's user and
    session, and the identity mapped from the ID token's claims at sign-in (such users are not
    in the local user directory)."""

    idp: str
    """The provider's ``name`` in ``login.oidc``."""
    issuer: str = ""
    """The provider's ``issuer`` at sign-in: a reload that points ``idp`` at another issuer
    ends the session."""
    subject: str
    """The provider's ``sub``."""
    sid: str = ""
    """The provider's session id (``sid`` claim), ``""`` when it sent none."""
    email: str | None = None
    email_verified: bool = False
    name: str | None = None
    roles: tuple[str, ...] = ()
    id_token: str = field(default="", repr=False)
    """The raw ID token, sent back as ``id_token_hint`` at logout (``""`` when it did not fit)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "idp": self.idp,
            "iss": self.issuer,
            "sub": self.subject,
            "sid": self.sid,
            "email": self.email,
            "ev": self.email_verified,
            "name": self.name,
            "roles": list(self.roles),
            "idt": self.id_token,
        }

    @classmethod
    def from_json(cls, data: Any) -> ProviderLogin | None:
        """The record :meth:`to_json` wrote, or ``None`` for anything malformed."""
        if not isinstance(data, dict):
            return None
        idp, subject, sid = data.get("idp"), data.get("sub"), data.get("sid")
        issuer = data.get("iss", "")
        email, name, roles = data.get("email"), data.get("name"), data.get("roles")
        id_token, verified = data.get("idt", ""), data.get("ev", False)
        if not (
            isinstance(idp, str)
            and isinstance(issuer, str)
            and isinstance(subject, str)
            and isinstance(sid, str)
            and isinstance(email, str | None)
            and isinstance(name, str | None)
            and isinstance(roles, list)
            and all(isinstance(role, str) for role in roles)
            and isinstance(id_token, str)
            and isinstance(verified, bool)
        ):
            return None
        return cls(
            idp=idp,
            issuer=issuer,
            subject=subject,
            sid=sid,
            email=email,
            email_verified=verified,
            name=name,
            roles=tuple(roles),
            id_token=id_token,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    sid_hash: str
    """Hex SHA-256 of the session id: safe to log, to key caches on, to derive the JWT ``sid``."""
    username: str
    created_at: float
    """Unix time of login; the absolute timeout counts from here."""
    last_seen_at: float
    """Unix time of the last recorded activity; the idle timeout counts from here."""
    stamp: str = ""
    """The user's credential stamp at login: a session outlives no change of password, removal
    or disabling of its user (see :attr:`gateway.identity.users.User.stamp`)."""
    provider: ProviderLogin | None = None
    """Set when the user signed in at an OpenID Connect provider (``username`` is then the one
    mapped from its claims)."""


# LoadedSession and Found are made per request: plain classes with read-only (``Final``)
# attributes, whose ``__init__`` mypyc compiles (not a frozen dataclass's).


class LoadedSession:
    __slots__ = ("refreshed_cookie", "session")

    def __init__(self, *, session: Session, refreshed_cookie: str | None = None) -> None:
        self.session: Final = session
        self.refreshed_cookie: Final = refreshed_cookie
        """A new cookie value the caller must send back (stateless backends re-seal to slide
        the idle timeout); ``None`` when the cookie stays as it is."""


class Found:
    """What a store found behind a cookie value."""

    __slots__ = ("session", "session_id")

    def __init__(self, session_id: str, session: Session) -> None:
        self.session_id: Final = session_id
        """The session id (the cookie value itself for stateful stores)."""
        self.session: Final = session


class SessionStore(Protocol):
    """Where session records live. Expiry policy is not theirs: ``ttl_s`` says how long a record
    must be kept at least (stores may forget it after that; the manager checks times itself).
    Stateful stores raise :class:`SessionStoreUnavailable` when they cannot answer."""

    async def add(self, session_id: str, session: Session, *, ttl_s: float) -> str:
        """Keep a new session; the cookie value that names it."""
        ...

    async def get(self, cookie_value: str) -> Found | None:
        """The session behind a cookie value (unknown, malformed, tampered: ``None``)."""
        ...

    async def refresh(self, session_id: str, session: Session, *, ttl_s: float) -> str | None:
        """Record ``session`` (its new ``last_seen_at``) if it still exists; the cookie value to
        use from now on, ``""`` when the old one stays valid, ``None`` when it is gone."""
        ...

    async def remove(self, session_id: str, session: Session, *, ttl_s: float) -> None:
        """End one session so its cookie is worthless from now on; ``ttl_s`` bounds how long it
        could otherwise have lived."""
        ...

    async def remove_user(self, username: str) -> int:
        """End every session of a user, local or from a provider; how many were ended
        (stateless stores: 0)."""
        ...

    async def remove_provider_sessions(
        self, idp: str, *, sid: str | None, subject: str | None, at: float, ttl_s: float
    ) -> list[str]:
        """End the sessions begun at provider ``idp`` with provider session ``sid`` (when
        given), else of provider user ``subject``: the ``sid_hash`` of each one found.
        Stateless stores find none and refuse such sessions begun before ``at`` from now on, in
        this process, for ``ttl_s``."""
        ...

    async def save_revocation(self, username: str, at: float, *, ttl_s: float) -> None:
        """Remember, where the store is shared and lasting (redis), that ``username``'s sessions
        and tokens begun before ``at`` are refused (for ``ttl_s``); others keep nothing."""
        ...

    async def revocations(self) -> dict[str, float]:
        """What :meth:`save_revocation` remembered: username -> time (empty where nothing is)."""
        ...

    async def known_users(self) -> set[str]:
        """Usernames that have local (not provider) sessions here, where the store can list
        them (else empty)."""
        ...

    def count(self) -> int | None:
        """Sessions held, where that is known without I/O (memory); else ``None``."""
        ...

    async def ping(self) -> bool:
        """Readiness: True when the store can answer."""
        ...

    async def close(self) -> None: ...
