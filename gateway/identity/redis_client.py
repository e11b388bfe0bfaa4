"""One Redis connection for everything the gateway keeps in Redis (sessions, login throttle),
behind a circuit breaker.

The application creates the client once and hands it to both factories::

    client = shared_redis_client(settings.session)          # None unless backend is redis
    sessions = create_sessions(settings.session, redis_client=client)
    throttle = create_throttle(settings.session, settings.login.throttle, redis_client=client)
    ...
    if client is not None:
        await client.aclose()                                 # the creator closes it

Every operation runs in :func:`redis_errors`: one that fails, or is slower than
``session.redis.timeout``, makes the store unavailable (503 where a session is needed), and the
client's :class:`Breaker` then fails the next ones at once instead of making each wait: a
frozen Redis costs one timeout, not one per request. Once a second has passed one request tries
Redis again; if it answers, everything goes through again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway import metrics
from gateway.config.settings import RedisSettings, SessionSettings
from gateway.errors import SessionStoreUnavailable

log = logging.getLogger("gateway.store")

OPEN_S = 1.0
"""After a failure, operations fail at once for this long; then one tries Redis again."""
REPORT_EVERY_S = 10.0
"""While the store is unavailable, one log line per this interval says how many requests it
refused (not one line per request)."""


class Breaker:
    """The circuit breaker of one Redis client: closed (operations go through), open (they fail
    at once), half-open (one operation probes; the others still fail at once)."""

    __slots__ = (
        "_clock",
        "_down_since",
        "_open_until",
        "_probing",
        "_refused",
        "_report_at",
        "down",
        "open_s",
    )

    def __init__(self, *, open_s: float = OPEN_S, clock: Callable[[], float] = time.monotonic):
        self.open_s = open_s
        self._clock = clock
        self.down = False
        """True from a failure until an operation succeeds again."""
        self._open_until = 0.0
        self._probing = False
        self._down_since = 0.0
        self._refused = 0
        self._report_at = 0.0

    def before(self) -> bool:
        """Called before an operation: raises :class:`SessionStoreUnavailable` at once while the
        breaker is open; True when this operation is the probe."""
        if not self.down:
            return False
        now = self._clock()
        if now >= self._open_until and not self._probing:
            self._probing = True
            return True
        self._refused += 1
        if now >= self._report_at:
            self._report_at = now + REPORT_EVERY_S
            log.warning(
                "session store still unavailable (%.0fs): %d request(s) refused at once since "
                "the last report",
                now - self._down_since,
                self._refused,
                extra={"reason": "session_store_unavailable"},
            )
            self._refused = 0
        raise SessionStoreUnavailable("session store unavailable (circuit open)")

    def success(self, probe: bool) -> None:
        if probe:
            self._probing = False
        if self.down:
            self.down = False
            log.warning(
                "session store available again after %.1fs (%d request(s) refused meanwhile)",
                self._clock() - self._down_since,
                self._refused,
                extra={"reason": "session_store_back"},
            )
            self._refused = 0

    def failure(self, probe: bool, what: str) -> None:
        now = self._clock()
        if probe:
            self._probing = False
        self._open_until = now + self.open_s
        if not self.down:
            self.down = True
            self._down_since = now
            self._report_at = now + REPORT_EVERY_S
            metrics.STORE_OUTAGES.inc()
            log.warning(
                "session store unavailable (%s): refusing at once what needs it, trying again "
                "every %.1fs",
                what,
                self.open_s,
                extra={"reason": "session_store_unavailable"},
            )

    def abandoned(self, probe: bool) -> None:
        """The operation was cancelled: it proved nothing either way."""
        if probe:
            self._probing = False


class GatewayRedis(Redis):
    """A redis-py client with the :class:`Breaker` its operations go through."""

    breaker: Breaker


def create_redis_client(settings: RedisSettings) -> GatewayRedis:
    """A pooled asyncio client for ``settings.url`` (``redis://`` or ``rediss://``).

    No network I/O happens here; the first command connects. The caller owns the client and must
    ``await client.aclose()`` it at shutdown.
    """
    timeout_s = settings.timeout_s
    client = GatewayRedis.from_url(  # an instance of the class it is called on
        settings.url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        # One quick retry covers a pooled connection that went stale (Redis restarted). Not on
        # a timeout: that would double the wait a frozen Redis costs.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        decode_responses=True,
    )
    assert isinstance(client, GatewayRedis)
    client.breaker = Breaker()
    return client


def shared_redis_client(session: SessionSettings) -> GatewayRedis | None:
    """The client to share between the session store and the login throttle, or ``None`` when the
    session backend does not use Redis."""
    if session.backend != "redis":
        return None
    return create_redis_client(session.redis)


@contextmanager
def redis_errors(client: Redis) -> Iterator[None]:
    """Run one operation of ``client`` through its breaker (if it has one); any Redis failure
    becomes :class:`SessionStoreUnavailable` (503, fail closed)."""
    breaker: Breaker | None = getattr(client, "breaker", None)
    probe = breaker.before() if breaker is not None else False
    try:
        yield
    except (RedisError, OSError) as exc:
        if breaker is not None:
            breaker.failure(probe, type(exc).__name__)
        # SECURITY: `from None` and only the exception type: the driver's message or traceback
        # could carry command arguments, and nothing secret may reach the log.
        raise SessionStoreUnavailable(f"redis unavailable: {type(exc).__name__}") from None
    except BaseException:
        if breaker is not None:
            breaker.abandoned(probe)
        raise
    if breaker is not None:
        breaker.success(probe)


def text(value: str | bytes) -> str:
    """A Redis reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value
