"""Everything a request needs, built from one :class:`~gateway.bundle.Bundle` and replaced whole
on reload."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.bundle import Bundle
from gateway.config.settings import Settings
from gateway.headers import normalised_names
from gateway.identity.cookies import csrf_cookie_name
from gateway.identity.redis_client import shared_redis_client
from gateway.identity.revocation import Revocations
from gateway.identity.sessions import SessionManager, create_sessions
from gateway.identity.throttle import Throttle, create_throttle
from gateway.identity.users import UserDirectory
from gateway.routing import RouteTable
from gateway.tokens import Tokens
from gateway.upstream import ClientFactory, create_client
from gateway.upstream.base import UpstreamClient
from gateway.websockets import OpenWebSockets


@dataclass(slots=True, kw_only=True)
class Runtime:
    settings: Settings
    routes: RouteTable
    upstream_client: UpstreamClient
    users: UserDirectory
    sessions: SessionManager
    throttle: Throttle
    revocations: Revocations
    """Users whose earlier sessions and tokens are refused (kept across reloads)."""
    sockets: OpenWebSockets
    """WebSockets relayed for signed-in users (kept across reloads)."""
    client_factory: ClientFactory = create_client
    """Builds the upstream client (kept across reloads)."""
    redis: Redis | None
    tokens: Tokens
    own_cookies: frozenset[str]
    """The gateway's cookies (session, CSRF): removed from what upstreams receive."""
    own_headers: frozenset[str]
    """The configured token header and every identity header (normalised): a client's copy
    never reaches an upstream."""
    inflight: int = 0
    """Requests still running on this runtime: a retired runtime is closed when it reaches 0."""
    idle: asyncio.Event | None = None
    """Set by the last request to finish once a reload has retired this runtime."""

    @classmethod
    def build(
        cls,
        bundle: Bundle,
        *,
        previous: Runtime | None = None,
        client_factory: ClientFactory | None = None,
    ) -> Runtime:
        """Build without I/O: connections open on first use (Redis, upstreams).

        With ``previous`` (a reload), what did not change is carried over rather than rebuilt:
        the session store and throttle (so nobody is signed out), the upstream connection pools,
        and the token cache (emptied if the signing key changed).
        """
        settings, keyset, users = bundle.settings, bundle.keys, bundle.users
        old = previous.settings if previous is not None else None
        if previous is not None and old is not None and old.session == settings.session:
            redis, sessions = previous.redis, previous.sessions
            if old.login.throttle == settings.login.throttle:
                throttle = previous.throttle
            else:
                throttle = create_throttle(
                    settings.session, settings.login.throttle, redis_client=redis
                )
        else:
            redis = shared_redis_client(settings.session)
            sessions = create_sessions(settings.session, redis_client=redis)
            throttle = create_throttle(
                settings.session, settings.login.throttle, redis_client=redis
            )
        if client_factory is None:
            client_factory = previous.client_factory if previous is not None else create_client
        if previous is not None and old is not None and old.upstreams == settings.upstreams:
            upstream_client = previous.upstream_client
        else:
            upstream_client = client_factory(settings.upstreams)
        tokens = (
            previous.tokens.successor(keyset, settings.tokens)
            if previous is not None
            else Tokens(keyset, settings.tokens)
        )
        return cls(
            settings=settings,
            routes=bundle.routes,
            upstream_client=upstream_client,
            users=users,
            sessions=sessions,
            throttle=throttle,
            revocations=previous.revocations if previous is not None else Revocations(),
            sockets=previous.sockets if previous is not None else OpenWebSockets(),
            client_factory=client_factory,
            redis=redis,
            tokens=tokens,
            own_cookies=frozenset((settings.session.cookie_name, csrf_cookie_name(settings))),
            # SECURITY: with a custom tokens.header, a replayed token in it must not pass; nor a
            # client's copy of any header a route's identity_headers sets, on any route.
            own_headers=normalised_names(
                (
                    settings.tokens.header,
                    *(header for route in settings.routes for header, _ in route.identity_headers),
                )
            ),
        )

    async def close(self, *, keep: Runtime | None = None) -> None:
        """Close what this runtime holds, except what ``keep`` (its successor) shares."""
        if keep is None or keep.upstream_client is not self.upstream_client:
            await self.upstream_client.close()
        if keep is None or keep.throttle is not self.throttle:
            await self.throttle.close()
        if keep is None or keep.sessions is not self.sessions:
            await self.sessions.close()
            if self.redis is not None:
                await self.redis.aclose()


class RuntimeHolder:
    """The process's mutable state: the current runtime (a request reads ``current`` once and
    keeps that runtime to its end; a reload swaps it) and whether the process is draining."""

    __slots__ = (
        "admin_token",
        "closing",
        "current",
        "draining",
        "idle",
        "inflight",
        "retiring",
    )

    def __init__(self, runtime: Runtime, *, admin_token: str | None = None) -> None:
        self.current = runtime
        self.admin_token = admin_token
        """The secret ``POST /sessions/revoke`` on the admin listener requires (None: refused)."""
        self.draining = False
        """readyz says not ready (from SIGTERM on)."""
        self.closing = False
        """Responses say ``Connection: close`` (once the listener has closed, in a drain)."""
        self.inflight = 0
        """Requests in flight on any runtime (a drain waits for these)."""
        self.idle: asyncio.Event | None = None
        """Set by the last request to finish once a drain waits for it."""
        self.retiring: set[asyncio.Task[None]] = set()
        """Runtimes replaced by a reload, waiting for their last request to finish."""
