"""Sessions: one :class:`SessionManager` (policy) over a store keyed on ``session.backend``.

- ``memory``: in-process, bounded; one process only (:mod:`.memory`).
- ``redis``: shared by replicas, survives restarts (:mod:`.redis`).
- ``cookie``: stateless, AES-256-GCM sealed cookie; no server-side revocation across
  replicas (:mod:`.cookie`).
"""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.config.settings import SessionSettings
from gateway.identity.sessions.base import (
    LoadedSession,
    Session,
    SessionStore,
    SessionStoreUnavailable,
)
from gateway.identity.sessions.cookie import CookieSessionStore
from gateway.identity.sessions.manager import SessionManager
from gateway.identity.sessions.memory import MemorySessionStore
from gateway.identity.sessions.redis import RedisSessionStore
from gateway.identity.sessions.tracking import SessionCache

__all__ = [
    "LoadedSession",
    "Session",
    "SessionManager",
    "SessionStore",
    "SessionStoreUnavailable",
    "create_sessions",
]


def create_sessions(
    settings: SessionSettings,
    *,
    max_sessions: int = 100_000,
    redis_client: Redis | None = None,
) -> SessionManager:
    """The session manager for ``settings.backend``.

    ``max_sessions`` bounds the memory store (and the cookie store's revocation set). The redis
    backend needs ``redis_client`` (see :func:`gateway.identity.redis_client.shared_redis_client`),
    shared with the login throttle and closed by whoever created it. Raises ``ValueError`` for a
    cookie backend without a secret of at least 32 bytes.
    """
    store: SessionStore
    if settings.backend == "memory":
        store = MemorySessionStore(max_sessions=max_sessions)
    elif settings.backend == "redis":
        if redis_client is None:
            raise ValueError("the redis session backend needs a Redis client")
        redis = settings.redis
        cache = (
            SessionCache(
                redis_client,
                key_prefix=redis.key_prefix,
                max_staleness_s=redis.cache_max_staleness_s,
                max_entries=redis.cache_max_entries,
                max_age_s=redis.cache_max_age_s,
                timeout_s=redis.timeout_s,
            )
            if redis.cache
            else None
        )
        store = RedisSessionStore(
            redis_client,
            key_prefix=redis.key_prefix,
            absolute_timeout_s=settings.absolute_timeout_s,
            cache=cache,
        )
    elif settings.backend == "cookie":
        store = CookieSessionStore(settings.cookie.secret, max_revoked=max_sessions)
    else:
        raise ValueError(f"unknown session backend {settings.backend!r}")
    return SessionManager(store, settings)
