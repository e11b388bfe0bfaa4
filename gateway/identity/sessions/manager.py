"""Session policy, once for every backend: ids, expiry, sliding the idle timeout.

- A new session gets a fresh 256-bit id at every login (:func:`~.base.new_session_id`).
- A session ends ``idle_timeout`` after its last recorded activity or ``absolute_timeout``
  after login, whichever comes first; times are passed in (``now``) so expiry is exact and
  testable, whatever a store's own TTLs do.
- Activity is recorded without a write per request: only when ``last_seen_at`` is older than
  the refresh interval (``min(60s, idle_timeout / 10)``), so the effective idle timeout is
  accurate to that interval (a session may end up to one interval early, never late).
"""

from __future__ import annotations

from dataclasses import replace

from gateway.config.settings import SessionSettings
from gateway.identity.sessions.base import (
    LoadedSession,
    ProviderLogin,
    Session,
    SessionStore,
    new_session_id,
)

MAX_REFRESH_INTERVAL_S = 60.0


class SessionManager:
    """Creates, resumes and ends sessions over one :class:`~.base.SessionStore`."""

    def __init__(self, store: SessionStore, settings: SessionSettings) -> None:
        self.store = store
        self.idle_s = settings.idle_timeout_s
        self.absolute_s = settings.absolute_timeout_s
        self.refresh_interval_s = min(MAX_REFRESH_INTERVAL_S, settings.idle_timeout_s / 10)
        """How stale ``last_seen_at`` may get before a load records activity again."""

    async def create(
        self,
        username: str,
        *,
        now: float,
        stamp: str = "",
        provider: ProviderLogin | None = None,
    ) -> tuple[str, Session]:
        """Start a session (``provider``: begun at an OpenID Connect provider); the cookie
        value (never reused) and the session."""
        session_id, sid_hash = new_session_id()
        session = Session(
            sid_hash=sid_hash,
            username=username,
            created_at=now,
            last_seen_at=now,
            stamp=stamp,
            provider=provider,
        )
        cookie = await self.store.add(session_id, session, ttl_s=self._ttl(session, now))
        return cookie, session

    async def load(self, cookie_value: str, *, now: float) -> LoadedSession | None:
        """The live session behind a cookie value, or ``None`` (unknown, tampered, expired).

        Raises :class:`~.base.SessionStoreUnavailable` when the store cannot answer."""
        found = await self.store.get(cookie_value)
        if found is None:
            return None
        session = found.session
        if self.expired(session, now):
            return None
        if now - session.last_seen_at < self.refresh_interval_s:
            return LoadedSession(session=session)
        seen = replace(session, last_seen_at=max(now, session.last_seen_at))
        cookie = await self.store.refresh(found.session_id, seen, ttl_s=self._ttl(seen, now))
        if cookie is None:
            return None  # ended meanwhile (a logout on another replica)
        return LoadedSession(session=seen, refreshed_cookie=cookie or None)

    async def delete(self, cookie_value: str) -> Session | None:
        """End the session behind a cookie value (if any); the session that ended."""
        found = await self.store.get(cookie_value)
        if found is None:
            return None
        session = found.session
        # At most this long left: the absolute end, counted from the last sign of life.
        ttl_s = max(0.001, session.created_at + self.absolute_s - session.last_seen_at)
        await self.store.remove(found.session_id, session, ttl_s=ttl_s)
        return session

    async def delete_user(self, username: str) -> int:
        """End every session of ``username`` the store can find; how many."""
        return await self.store.remove_user(username)

    async def delete_provider_sessions(
        self, idp: str, *, sid: str | None, subject: str | None, now: float
    ) -> list[str]:
        """End the sessions of one provider session (``sid``), else of one provider user
        (``subject``): back-channel logout. The ``sid_hash`` of each one the store found."""
        return await self.store.remove_provider_sessions(
            idp, sid=sid, subject=subject, at=now, ttl_s=self.absolute_s
        )

    async def save_revocation(self, username: str, at: float, *, ttl_s: float) -> None:
        await self.store.save_revocation(username, at, ttl_s=ttl_s)

    async def revocations(self) -> dict[str, float]:
        return await self.store.revocations()

    async def known_users(self) -> set[str]:
        """Usernames with sessions in the store, where it can list them."""
        return await self.store.known_users()

    def count(self) -> int | None:
        """Live sessions, where the store can count them (memory); else ``None``."""
        return self.store.count()

    async def ping(self) -> bool:
        return await self.store.ping()

    async def close(self) -> None:
        await self.store.close()

    def expired(self, session: Session, now: float) -> bool:
        return (
            now - session.last_seen_at > self.idle_s or now - session.created_at > self.absolute_s
        )

    def _ttl(self, session: Session, now: float) -> float:
        """How long a store must keep the record: until its idle or absolute end."""
        return max(
            0.001,
            min(session.last_seen_at + self.idle_s, session.created_at + self.absolute_s) - now,
        )
