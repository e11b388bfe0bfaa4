"""Redis session store: shared by replicas and workers, survives gateway restarts.

Layout (``P`` is ``session.redis.key_prefix``)::

    P s:<sha256 hex of session id>  hash {username, created_at, last_seen_at}
                                    TTL = min(idle remaining, absolute remaining)
    P u:<username>                  sorted set of that user's session hashes, scored by created_at
                                    TTL = absolute timeout, refreshed at each login

The session id itself is never stored. Loading is one round trip (HMGET) in the common case.

Sliding idle timeout without a write per request: ``last_seen_at`` and the TTL are updated only
when ``last_seen_at`` is older than the refresh interval (``min(60s, idle_timeout / 10)``), so
the effective idle timeout is accurate to that interval: a session may end up to one refresh
interval before ``idle_timeout`` after the last request, never after it.

The per-user index drops entries older than the absolute timeout at each login, so it stays
bounded even for a user who logs in around the clock; entries of sessions that ended earlier
(idle expiry) linger until then and are harmless.

Any Redis failure raises :class:`SessionStoreUnavailable` (fail closed).
"""

from __future__ import annotations

import math

from redis.asyncio import Redis

from gateway.config.settings import SessionSettings
from gateway.identity.redis_client import create_redis_client, redis_errors, text
from gateway.identity.sessions.base import LoadedSession, Session, SessionStoreUnavailable
from gateway.identity.sessions.memory import new_session_id, parse_session_id

_FIELDS = ("username", "created_at", "last_seen_at")

# Slide the idle timeout only if the session still exists: a bare HSET after a concurrent
# logout would resurrect a half session.
_REFRESH = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisSessionStore:
    """Sessions in Redis, keyed by the SHA-256 of the session id."""

    def __init__(self, settings: SessionSettings, *, client: Redis | None = None) -> None:
        """Use ``client`` (owned by the caller) or create one from ``settings.redis.url``
        (owned by the store and closed by :meth:`close`)."""
        self._owns_client = client is None
        self._client = client if client is not None else create_redis_client(settings.redis)
        self._prefix = settings.redis.key_prefix
        self._idle_s = settings.idle_timeout_s
        self._absolute_s = settings.absolute_timeout_s
        self.refresh_interval_s = min(60.0, settings.idle_timeout_s / 10)
        """How stale ``last_seen_at`` may get before a load writes it (and the TTL) again."""
        self._refresh = self._client.register_script(_REFRESH)

    def session_key(self, sid_hash: str) -> str:
        return f"{self._prefix}s:{sid_hash}"

    def user_key(self, username: str) -> str:
        return f"{self._prefix}u:{username}"

    async def create(self, username: str, *, now: float) -> tuple[str, Session]:
        """Store a new session and index it under its user, in one transaction."""
        session_id, sid_hash = new_session_id()
        key, user_key = self.session_key(sid_hash), self.user_key(username)
        stamp = repr(now)
        with redis_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key, mapping={"username": username, "created_at": stamp, "last_seen_at": stamp}
                )
                pipe.pexpire(key, _ms(min(self._idle_s, self._absolute_s)))
                pipe.zadd(user_key, {sid_hash: now})
                pipe.zremrangebyscore(user_key, "-inf", f"({now - self._absolute_s!r}")
                pipe.expire(user_key, math.ceil(self._absolute_s))
                await pipe.execute()
        return session_id, Session(
            sid_hash=sid_hash, username=username, created_at=now, last_seen_at=now
        )

    async def load(self, cookie_value: str, *, now: float) -> LoadedSession | None:
        """The live session: one HMGET, plus one write per refresh interval to slide it."""
        sid_hash = parse_session_id(cookie_value)
        if sid_hash is None:
            return None
        key = self.session_key(sid_hash)
        with redis_errors():
            raw = await self._client.hmget(key, list(_FIELDS))
        session = _parse(sid_hash, raw)
        if session is None:
            return None
        # Redis TTLs end sessions too; checking the stored times makes expiry exact and keeps
        # every backend consistent with the `now` it is given.
        if now - session.last_seen_at > self._idle_s or now - session.created_at > self._absolute_s:
            return None
        if now - session.last_seen_at >= self.refresh_interval_s:
            ttl_s = min(self._idle_s, session.created_at + self._absolute_s - now)
            with redis_errors():
                alive = await self._refresh(keys=[key], args=[repr(now), _ms(ttl_s)])
            if not alive:
                return None
            session = Session(
                sid_hash=sid_hash,
                username=session.username,
                created_at=session.created_at,
                last_seen_at=now,
            )
        return LoadedSession(session=session)

    async def delete(self, cookie_value: str) -> None:
        """Delete the session and its entry in the user's index."""
        sid_hash = parse_session_id(cookie_value)
        if sid_hash is None:
            return
        key = self.session_key(sid_hash)
        with redis_errors():
            username = await self._client.hget(key, "username")
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if username is not None:
                    pipe.zrem(self.user_key(text(username)), sid_hash)
                await pipe.execute()

    async def delete_user(self, username: str) -> int:
        """Delete every indexed session of ``username``; returns how many still existed."""
        user_key = self.user_key(username)
        with redis_errors():
            # Read and drop the index atomically: a login racing with this call is either
            # ended here or indexed afresh, never lost from the index while its session lives.
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zrange(user_key, 0, -1)
                pipe.delete(user_key)
                members, _ = await pipe.execute()
            if not members:
                return 0
            deleted: int = await self._client.delete(*(self.session_key(text(m)) for m in members))
        return deleted

    async def ping(self) -> bool:
        """True when Redis answers PING."""
        try:
            with redis_errors():
                return bool(await self._client.ping())
        except SessionStoreUnavailable:
            return False

    async def close(self) -> None:
        """Close the client if this store created it."""
        if self._owns_client:
            await self._client.aclose()


def _parse(sid_hash: str, raw: list[str | bytes | None]) -> Session | None:
    username, created_at, last_seen_at = raw
    if username is None or created_at is None or last_seen_at is None:
        return None
    try:
        return Session(
            sid_hash=sid_hash,
            username=text(username),
            created_at=float(created_at),
            last_seen_at=float(last_seen_at),
        )
    except ValueError:
        return None
