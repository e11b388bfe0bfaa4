"""Everything a request needs, built from one :class:`Settings` and replaced whole on reload."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.config.settings import Settings
from gateway.identity.cookies import csrf_cookie_name
from gateway.identity.redis_client import shared_redis_client
from gateway.identity.sessions import SessionStore, create_store
from gateway.identity.throttle import Throttle, create_throttle
from gateway.identity.users import UserDirectory, load_users
from gateway.routing import RouteTable
from gateway.tokens import Tokens, load_keyset
from gateway.upstream import create_client
from gateway.upstream.base import UpstreamClient


@dataclass(slots=True, kw_only=True)
class Runtime:
    settings: Settings
    routes: RouteTable
    upstream_client: UpstreamClient
    users: UserDirectory
    sessions: SessionStore
    throttle: Throttle
    redis: Redis | None
    tokens: Tokens
    own_cookies: frozenset[str]
    """The gateway's cookies (session, CSRF): removed from what upstreams receive."""

    @classmethod
    def build(cls, settings: Settings, users: UserDirectory | None = None) -> Runtime:
        """Build without network I/O: connections open on first use (Redis, upstreams).

        Reads the users' files and the signing keys (generating one into ``data_dir`` when
        none is configured)."""
        redis = shared_redis_client(settings.session)
        return cls(
            settings=settings,
            routes=RouteTable(settings.routes),
            upstream_client=create_client(settings.upstreams),
            users=users if users is not None else load_users(settings.users),
            sessions=create_store(settings.session, redis_client=redis),
            throttle=create_throttle(settings.session, settings.login.throttle, redis_client=redis),
            redis=redis,
            tokens=Tokens(load_keyset(settings.tokens, settings.server.data_dir), settings.tokens),
            own_cookies=frozenset((settings.session.cookie_name, csrf_cookie_name(settings))),
        )

    async def close(self) -> None:
        await self.upstream_client.close()
        await self.sessions.close()
        await self.throttle.close()
        if self.redis is not None:
            await self.redis.aclose()


class RuntimeHolder:
    """The process's mutable state: the current runtime (a request reads ``current`` once and
    keeps that runtime to its end; a reload swaps it) and whether the process is draining."""

    __slots__ = ("current", "draining")

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime
        self.draining = False
