"""One Redis connection for everything the gateway keeps in Redis (sessions, login throttle).

The application creates the client once and hands it to both factories::

    client = shared_redis_client(settings.session)          # None unless backend is redis
    store = create_store(settings.session, redis_client=client)
    throttle = create_throttle(settings.session, settings.login.throttle, redis_client=client)
    ...
    await store.close(); await throttle.close()              # do not close a client they were given
    if client is not None:
        await client.aclose()                                 # the creator closes it
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.config.settings import RedisSettings, SessionSettings
from gateway.errors import SessionStoreUnavailable

TIMEOUT_S = 2.0
"""Connect and per-command socket timeout: an unreachable Redis fails a request within seconds."""


def create_redis_client(settings: RedisSettings, *, timeout_s: float = TIMEOUT_S) -> Redis:
    """A pooled asyncio client for ``settings.url`` (``redis://`` or ``rediss://``).

    No network I/O happens here; the first command connects. The caller owns the client and must
    ``await client.aclose()`` it at shutdown.
    """
    return Redis.from_url(
        settings.url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        # One quick retry covers a pooled connection that went stale (Redis restarted); more
        # would multiply the time a request waits on a Redis that is down.
        retry=Retry(NoBackoff(), 1),
        decode_responses=True,
    )


def shared_redis_client(session: SessionSettings) -> Redis | None:
    """The client to share between the session store and the login throttle, or ``None`` when the
    session backend does not use Redis."""
    if session.backend != "redis":
        return None
    return create_redis_client(session.redis)


@contextmanager
def redis_errors() -> Iterator[None]:
    """Turn any Redis failure into :class:`SessionStoreUnavailable` (503, fail closed)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        # SECURITY: `from None` and only the exception type: the driver's message or traceback
        # could carry command arguments, and nothing secret may reach the log.
        raise SessionStoreUnavailable(f"redis unavailable: {type(exc).__name__}") from None


def text(value: str | bytes) -> str:
    """A Redis reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value
