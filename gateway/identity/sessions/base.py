"""The session-store contract. One Protocol; one module per backend; one conformance suite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.errors import ServiceUnavailable


class SessionStoreUnavailable(ServiceUnavailable):
    """The store cannot be reached: requests that need a session fail closed with 503."""

    reason = "session_store_unavailable"


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    sid_hash: str
    """Hex SHA-256 of the session id: safe to log, to key caches on, to derive the JWT ``sid``."""
    username: str
    created_at: float
    """Unix time of login; the absolute timeout counts from here."""
    last_seen_at: float
    """Unix time of the last recorded activity; the idle timeout counts from here."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedSession:
    session: Session
    refreshed_cookie: str | None = None
    """A new cookie value the caller must send back (stateless backends re-seal to slide the
    idle timeout); ``None`` when the cookie stays as it is."""


class SessionStore(Protocol):
    """Where sessions live. Times are passed in (``now``) so expiry is testable and consistent."""

    async def create(self, username: str, *, now: float) -> tuple[str, Session]:
        """Start a new session; returns the cookie value (never reused) and the session."""
        ...

    async def load(self, cookie_value: str, *, now: float) -> LoadedSession | None:
        """The live session behind a cookie value, or ``None`` (unknown, tampered, expired).

        Slides the idle timeout without writing on every call. Raises
        :class:`SessionStoreUnavailable` when the store cannot answer."""
        ...

    async def delete(self, cookie_value: str) -> None:
        """End one session so its cookie is worthless from now on."""
        ...

    async def delete_user(self, username: str) -> int:
        """End every session of a user; returns how many were ended."""
        ...

    async def ping(self) -> bool:
        """Readiness: True when the store can answer."""
        ...

    async def close(self) -> None: ...
