"""In-process session store: a bounded dict keyed by the SHA-256 of the session id.

One process only (``server.workers: 1``); sessions are gone on restart. When full, the oldest
session is evicted. Records whose TTL has passed are swept lazily.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.identity.sessions.base import Found, Session, parse_session_id

_SWEEP_EVERY_S = 60.0


class MemorySessionStore:
    """Sessions in this process; the cookie value is the session id."""

    def __init__(
        self, *, max_sessions: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self._max = max_sessions
        self._clock = clock
        # sid_hash -> (session, keep until); insertion order is login order (oldest first).
        self._sessions: dict[str, tuple[Session, float]] = {}
        self._by_user: dict[str, set[str]] = {}
        # (idp, "sid" | "sub", value) -> session hashes: for back-channel logout.
        self._by_provider: dict[tuple[str, str, str], set[str]] = {}
        self._next_sweep_at = float("-inf")

    def count(self) -> int:
        """Sessions held whose TTL has not passed (sweeps first, so the count is exact)."""
        self._sweep(self._clock())
        return len(self._sessions)

    async def add(self, session_id: str, session: Session, *, ttl_s: float) -> str:
        now = self._clock()
        if now >= self._next_sweep_at:
            self._sweep(now)
        while len(self._sessions) >= self._max:
            self._remove(next(iter(self._sessions)))
        self._sessions[session.sid_hash] = (session, now + ttl_s)
        self._by_user.setdefault(session.username, set()).add(session.sid_hash)
        for key in _provider_keys(session):
            self._by_provider.setdefault(key, set()).add(session.sid_hash)
        return session_id

    async def get(self, cookie_value: str) -> Found | None:
        sid_hash = parse_session_id(cookie_value)
        entry = self._sessions.get(sid_hash) if sid_hash is not None else None
        if entry is None:
            return None
        return Found(cookie_value, entry[0])

    async def refresh(self, session_id: str, session: Session, *, ttl_s: float) -> str | None:
        if session.sid_hash not in self._sessions:
            return None
        self._sessions[session.sid_hash] = (session, self._clock() + ttl_s)
        return ""

    async def remove(self, session_id: str, session: Session, *, ttl_s: float) -> None:
        self._remove(session.sid_hash)

    async def remove_user(self, username: str) -> int:
        hashes = list(self._by_user.get(username, ()))
        for sid_hash in hashes:
            self._remove(sid_hash)
        return len(hashes)

    async def remove_provider_sessions(
        self, idp: str, *, sid: str | None, subject: str | None, at: float, ttl_s: float
    ) -> list[str]:
        key = (idp, "sid", sid) if sid else (idp, "sub", subject or "")
        hashes = list(self._by_provider.get(key, ()))
        for sid_hash in hashes:
            self._remove(sid_hash)
        return hashes

    async def save_revocation(self, username: str, at: float, *, ttl_s: float) -> None:
        """Nothing lasting to keep it in: the process remembers it (Revocations)."""

    async def revocations(self) -> dict[str, float]:
        return {}

    async def known_users(self) -> set[str]:
        return {
            username
            for username, hashes in self._by_user.items()
            if any(self._sessions[h][0].provider is None for h in hashes)
        }

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._sessions.clear()
        self._by_user.clear()
        self._by_provider.clear()

    def _remove(self, sid_hash: str) -> None:
        entry = self._sessions.pop(sid_hash, None)
        if entry is None:
            return
        username = entry[0].username
        hashes = self._by_user.get(username)
        if hashes is not None:
            hashes.discard(sid_hash)
            if not hashes:
                del self._by_user[username]
        for key in _provider_keys(entry[0]):
            indexed = self._by_provider.get(key)
            if indexed is not None:
                indexed.discard(sid_hash)
                if not indexed:
                    del self._by_provider[key]

    def _sweep(self, now: float) -> None:
        expired = [h for h, (_, until) in self._sessions.items() if until < now]
        for sid_hash in expired:
            self._remove(sid_hash)
        self._next_sweep_at = now + _SWEEP_EVERY_S


def _provider_keys(session: Session) -> list[tuple[str, str, str]]:
    provider = session.provider
    if provider is None:
        return []
    keys = [(provider.idp, "sub", provider.subject)]
    if provider.sid:
        keys.append((provider.idp, "sid", provider.sid))
    return keys
