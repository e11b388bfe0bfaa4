"""In-process session store: one process only, lost on restart.

Bounded: at ``max_sessions`` the oldest session (by login time) is evicted to make room, so a
flood of logins costs memory up to the bound and no more. Expired sessions are refused on load
and swept lazily, at most once per sweep interval, when a session is created.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from gateway.config.settings import SessionSettings
from gateway.identity.sessions.base import LoadedSession, Session

# secrets.token_urlsafe(32): 32 bytes -> 43 base64url characters, no padding.
SESSION_ID_BYTES = 32
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def new_session_id() -> tuple[str, str]:
    """A fresh session id and its hex SHA-256; shared by the stateful backends."""
    # SECURITY: 256 bits from the OS CSPRNG (CONTRACT section 5); only the hash is ever stored.
    session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
    return session_id, hash_session_id(session_id)


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def parse_session_id(cookie_value: str) -> str | None:
    """The hex SHA-256 of a well-formed session id, or ``None`` for anything else.

    Lookups go by this hash, so no secret is compared with ``==``; malformed values are refused
    before they cost a lookup (or a Redis round trip).
    """
    if not _SESSION_ID.fullmatch(cookie_value):
        return None
    return hash_session_id(cookie_value)


@dataclass(slots=True)
class _Entry:
    username: str
    created_at: float
    last_seen_at: float


class MemorySessionStore:
    """A bounded dict keyed by the SHA-256 of the session id, plus a per-user index."""

    def __init__(self, settings: SessionSettings, *, max_sessions: int = 100_000) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self._idle_s = settings.idle_timeout_s
        self._absolute_s = settings.absolute_timeout_s
        self._max = max_sessions
        # Insertion order is login order: the first key is the oldest session.
        self._sessions: dict[str, _Entry] = {}
        self._by_user: dict[str, set[str]] = {}
        self._sweep_every_s = min(60.0, settings.idle_timeout_s / 10)
        self._next_sweep_at = float("-inf")

    def active_count(self, now: float | None = None) -> int:
        """Sessions held; with ``now``, expired ones are swept first so the count is exact."""
        if now is not None:
            self._sweep(now)
        return len(self._sessions)

    async def create(self, username: str, *, now: float) -> tuple[str, Session]:
        """Start a session; evicts the oldest one when the store is full."""
        if now >= self._next_sweep_at:
            self._sweep(now)
        while len(self._sessions) >= self._max:
            self._remove(next(iter(self._sessions)))
        session_id, sid_hash = new_session_id()
        self._sessions[sid_hash] = _Entry(username, now, now)
        self._by_user.setdefault(username, set()).add(sid_hash)
        return session_id, Session(
            sid_hash=sid_hash, username=username, created_at=now, last_seen_at=now
        )

    async def load(self, cookie_value: str, *, now: float) -> LoadedSession | None:
        """The live session, with its idle timeout slid to ``now`` (an in-memory write is free)."""
        sid_hash = parse_session_id(cookie_value)
        if sid_hash is None:
            return None
        entry = self._sessions.get(sid_hash)
        if entry is None:
            return None
        if self._expired(entry, now):
            self._remove(sid_hash)
            return None
        entry.last_seen_at = max(entry.last_seen_at, now)
        return LoadedSession(
            session=Session(
                sid_hash=sid_hash,
                username=entry.username,
                created_at=entry.created_at,
                last_seen_at=entry.last_seen_at,
            )
        )

    async def delete(self, cookie_value: str) -> None:
        """End one session; unknown or malformed values are ignored."""
        sid_hash = parse_session_id(cookie_value)
        if sid_hash is not None:
            self._remove(sid_hash)

    async def delete_user(self, username: str) -> int:
        """End every session of ``username``; returns how many there were."""
        hashes = self._by_user.pop(username, set())
        for sid_hash in hashes:
            del self._sessions[sid_hash]
        return len(hashes)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._sessions.clear()
        self._by_user.clear()

    def _expired(self, entry: _Entry, now: float) -> bool:
        return now - entry.last_seen_at > self._idle_s or now - entry.created_at > self._absolute_s

    def _remove(self, sid_hash: str) -> None:
        entry = self._sessions.pop(sid_hash, None)
        if entry is None:
            return
        hashes = self._by_user.get(entry.username)
        if hashes is not None:
            hashes.discard(sid_hash)
            if not hashes:
                del self._by_user[entry.username]

    def _sweep(self, now: float) -> None:
        expired = [h for h, entry in self._sessions.items() if self._expired(entry, now)]
        for sid_hash in expired:
            self._remove(sid_hash)
        self._next_sweep_at = now + self._sweep_every_s
