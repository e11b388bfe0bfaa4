"""The gateway composed from one :class:`~gateway.bundle.Bundle`: every stage built with exactly
what it uses, and replaced whole on reload.

This module and :mod:`gateway.app` are the composition root: the only places that know every
stage. A stage (authenticators, login, the proxy, tokens) receives its session manager, user
directory, key set or upstream client, never the runtime.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.auth import BearerAuthenticator, Chain, SessionAuthenticator
from gateway.bundle import Bundle
from gateway.config.settings import RouteSettings, Settings
from gateway.endpoints import Table, public_endpoints
from gateway.headers import normalised_names
from gateway.identity.cookies import SessionCookie
from gateway.identity.redis_client import shared_redis_client
from gateway.identity.revocation import Revocations
from gateway.identity.sessions import SessionManager, create_sessions
from gateway.identity.users import UserDirectory
from gateway.login.csrf import Csrf
from gateway.login.handlers import Login
from gateway.login.oidc import OidcLogin
from gateway.login.throttle import Throttle, create_throttle
from gateway.oidc import Providers
from gateway.oidc.replay import ReplayGuard
from gateway.oidc.state import StateCookie
from gateway.ops import Health
from gateway.routing import RouteTable
from gateway.tokens import Tokens
from gateway.tokens.upstream import UpstreamHeaders
from gateway.upstream import ClientFactory, create_client
from gateway.upstream.base import UpstreamClient
from gateway.websockets import OpenWebSockets

_NOBODY = Chain(())


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
    upstream_headers: UpstreamHeaders
    session_chain: Chain
    """The session cookie alone: who a browser is signed in as."""
    chains: dict[str, Chain]
    """Each route's authenticators, by route name (see :meth:`chain`)."""
    login: Login
    oidc: Providers
    """The OpenID Connect providers of ``login.oidc`` (carried over reloads while unchanged)."""
    replay: ReplayGuard
    """What OpenID Connect sign-ins and logout tokens used once (carried over reloads with the
    session store, so a reload forgets no use)."""
    health: Health
    """Health, readiness and metrics of the process (kept across reloads)."""
    endpoints: Table
    """The gateway's own endpoints under ``/.gateway/``."""
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
        health: Health | None = None,
    ) -> Runtime:
        """Build without I/O: connections open on first use (Redis, upstreams).

        With ``previous`` (a reload), what did not change is carried over rather than rebuilt:
        the session store and throttle (so nobody is signed out), the upstream connection pools,
        the token cache (emptied if the signing key changed) and ``health``, which by default
        reports on this runtime's session store alone.
        """
        settings, users = bundle.settings, bundle.users
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
        replay = (
            previous.replay
            if previous is not None and previous.sessions is sessions
            else ReplayGuard(redis, key_prefix=settings.session.redis.key_prefix)
        )
        if client_factory is None:
            client_factory = previous.client_factory if previous is not None else create_client
        if previous is not None and old is not None and old.upstreams == settings.upstreams:
            upstream_client = previous.upstream_client
        else:
            upstream_client = client_factory(settings.upstreams)
        tokens = (
            previous.tokens.successor(bundle.keys, settings.tokens)
            if previous is not None
            else Tokens(bundle.keys, settings.tokens)
        )
        revocations = previous.revocations if previous is not None else Revocations()
        sockets = previous.sockets if previous is not None else OpenWebSockets()
        https = settings.server.https
        cookie = SessionCookie(settings.session, https=https)
        csrf = Csrf(https=https)
        providers = Providers.of(
            settings.login.oidc, previous.oidc if previous is not None else None
        )
        session = SessionAuthenticator(sessions, users, revocations, cookie, settings.login.oidc)
        bearer = BearerAuthenticator(tokens, users, revocations)
        session_chain = Chain((session,))
        bearer_chain = Chain((bearer, session))
        api_tokens = settings.tokens.api_tokens.enabled
        login = Login(
            users=users,
            sessions=sessions,
            throttle=throttle,
            tokens=tokens,
            sockets=sockets,
            cookie=cookie,
            csrf=csrf,
            who=session_chain,
            userinfo_chain=bearer_chain if api_tokens else session_chain,
            login=settings.login,
            session=settings.session,
            public_url=settings.server.public_url,
            body_timeout_s=settings.server.timeouts.body_s,
            api_tokens=api_tokens,
            providers=providers,
        )
        oidc_login = OidcLogin(
            providers=providers,
            users=users,
            sessions=sessions,
            tokens=tokens,
            sockets=sockets,
            cookie=cookie,
            # Every replica sharing the signing key opens what another sealed.
            state_cookie=StateCookie(
                bundle.keys.derive_secret(b"gateway oidc sign-in state v1"), https=https
            ),
            replay=replay,
            public_url=settings.server.public_url,
            body_timeout_s=settings.server.timeouts.body_s,
        )
        if health is None:
            health = (
                previous.health
                if previous is not None
                else Health(
                    store_ready=sessions.ping, draining=lambda: False, sessions=sessions.count
                )
            )
        return cls(
            settings=settings,
            routes=bundle.routes,
            upstream_client=upstream_client,
            users=users,
            sessions=sessions,
            throttle=throttle,
            revocations=revocations,
            sockets=sockets,
            client_factory=client_factory,
            redis=redis,
            tokens=tokens,
            upstream_headers=UpstreamHeaders(tokens),
            session_chain=session_chain,
            chains={
                route.name: _route_chain(route, session_chain, bearer_chain)
                for route in settings.routes
            },
            login=login,
            oidc=providers,
            replay=replay,
            health=health,
            endpoints=public_endpoints(login, tokens.jwks_json, health, oidc_login.routes()),
            own_cookies=frozenset((cookie.name, csrf.name, oidc_login.state_cookie_name)),
            # SECURITY: with a custom tokens.header, a replayed token in it must not pass; nor a
            # client's copy of any header a route's identity_headers sets, on any route.
            own_headers=normalised_names(
                (
                    settings.tokens.header,
                    *(header for route in settings.routes for header, _ in route.identity_headers),
                )
            ),
        )

    def chain(self, route: RouteSettings) -> Chain:
        """The authenticators of ``route``."""
        return self.chains[route.name]

    async def close(self, *, keep: Runtime | None = None) -> None:
        """Close what this runtime holds, except what ``keep`` (its successor) shares."""
        if keep is None or keep.upstream_client is not self.upstream_client:
            await self.upstream_client.close()
        if keep is None or keep.throttle is not self.throttle:
            await self.throttle.close()
        await self.oidc.close(keep=keep.oidc if keep is not None else None)
        if keep is None or keep.sessions is not self.sessions:
            await self.sessions.close()
            if self.redis is not None:
                await self.redis.aclose()


def _route_chain(route: RouteSettings, session: Chain, bearer: Chain) -> Chain:
    if route.access.kind == "deny":
        return _NOBODY  # nobody gets in: no need to ask the store
    return bearer if route.accept_bearer else session


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

    def enter(self) -> Runtime:
        """A request starts: it is in flight on the current runtime, which it keeps to its
        end (:meth:`leave`)."""
        runtime = self.current
        runtime.inflight += 1
        self.inflight += 1
        return runtime

    def leave(self, runtime: Runtime) -> None:
        """The request :meth:`enter` counted on ``runtime`` is over."""
        runtime.inflight -= 1
        self.inflight -= 1
        if runtime.idle is not None and runtime.inflight == 0:
            runtime.idle.set()
        if self.idle is not None and self.inflight == 0:
            self.idle.set()
