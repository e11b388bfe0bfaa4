"""Session stores: the :class:`SessionStore` contract and a factory keyed on ``session.backend``.

- ``memory``: in-process, bounded; one process only (:mod:`.memory`).
- ``redis``: shared by replicas, survives restarts (:mod:`.redis`).
- ``cookie``: stateless, AES-256-GCM sealed cookie; no server-side revocation across
  replicas (:mod:`.cookie`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config.settings import SessionSettings
from gateway.identity.sessions.base import (
    LoadedSession,
    Session,
    SessionStore,
    SessionStoreUnavailable,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "LoadedSession",
    "Session",
    "SessionStore",
    "SessionStoreUnavailable",
    "create_store",
]


def create_store(
    settings: SessionSettings,
    *,
    max_sessions: int = 100_000,
    redis_client: Redis | None = None,
) -> SessionStore:
    """The store for ``settings.backend``.

    ``max_sessions`` bounds the memory store (and the cookie store's revocation set).
    ``redis_client`` (see :func:`gateway.identity.redis_client.shared_redis_client`) lets the
    redis store share one client with the login throttle; the caller then closes it. Without it
    the redis store creates its own and closes it in ``close()``. Raises ``ValueError`` for a
    cookie backend without a secret of at least 32 bytes.
    """
    # Imported here: the backends import gateway.identity.redis_client, which imports this
    # package's base module.
    if settings.backend == "memory":
        from gateway.identity.sessions.memory import MemorySessionStore

        return MemorySessionStore(settings, max_sessions=max_sessions)
    if settings.backend == "redis":
        from gateway.identity.sessions.redis import RedisSessionStore

        return RedisSessionStore(settings, client=redis_client)
    if settings.backend == "cookie":
        from gateway.identity.sessions.cookie import CookieSessionStore

        return CookieSessionStore(settings, max_revoked=max_sessions)
    raise ValueError(f"unknown session backend {settings.backend!r}")
