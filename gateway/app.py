"""The composition root of one process: :class:`Gateway` holds the current runtime and serves
the main and admin listeners.

Every request of the main listener goes through one middleware, :func:`observe` (counted in
flight, its errors mapped to answers, its own answers written, then its metrics and access-log
line), around the pipeline :meth:`Gateway.serve`:

    client (forwarded) -> where it goes (plan.locate) -> who is calling (the route's auth chain)
    -> what to do (plan.decide) -> the gateway's endpoint, the login redirect, or the upstream
    (proxy.forward, with the JWT and identity headers of tokens.upstream)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import hdrs, web

from gateway import accesslog, endpoints, pages
from gateway.auth import ANONYMOUS, Authenticated, Identity
from gateway.bundle import Bundle
from gateway.config.settings import RouteSettings
from gateway.context import RequestContext, Trace
from gateway.errors import GatewayError, SessionStoreUnavailable, Unauthenticated
from gateway.forwarded import ClientInfo, resolve_client
from gateway.http import Incoming, check_expectation
from gateway.identity.users import start_password_pool
from gateway.listener import SERVER_HEADER
from gateway.oidc import keep_discovered
from gateway.ops import Health
from gateway.plain import Declined, PlainRequest
from gateway.plan import Caller, Facts, Forward, Login, Own, Refusal, decide, locate
from gateway.proxy import forward
from gateway.revoke import (
    admin_token_matches,
    end_users,
    ensure_admin_token,
    forget_removed_users,
    listen_for_revocations,
    load_revocations,
)
from gateway.runtime import Runtime, RuntimeHolder
from gateway.upstream import ClientFactory

log = logging.getLogger("gateway")

Pipeline = Callable[[Incoming, Runtime, ClientInfo, Trace], Awaitable[web.StreamResponse | None]]
"""The pipeline's answer: a response still to be written or already streamed, or ``None`` when
it went out on a plain request (:class:`gateway.plain.PlainRequest`) already."""


class Gateway:
    """The gateway in one process: the current runtime (replaced whole by a reload) and the
    request handlers of the main listener (:meth:`handle`) and the admin listener
    (:meth:`handle_admin`). Served by :class:`gateway.listener.Listener`."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        client_factory: ClientFactory | None = None,
        access_sink: accesslog.LineSink | None = None,
    ) -> None:
        settings = bundle.settings
        admin_token = None
        if settings.server.admin_listen is not None:
            admin_token = ensure_admin_token(settings.server.data_dir)
        health = Health(
            store_ready=lambda: self.holder.current.sessions.ping(),
            draining=lambda: self.holder.draining,
            sessions=lambda: self.holder.current.sessions.count(),
        )
        runtime = Runtime.build(bundle, client_factory=client_factory, health=health)
        self.holder = RuntimeHolder(runtime, admin_token=admin_token)
        self.admin = endpoints.Admin(
            health,
            revoke=lambda username: end_users(self.holder.current, [username], now=time.time()),
            admin_token_matches=lambda header: (
                admin_token is not None and admin_token_matches(admin_token, header)
            ),
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.access = accesslog.AccessLog(access_sink)
        """The access log (stderr, in batches, unless ``access_sink`` says otherwise)."""

    async def start(self) -> None:
        """Before serving (inside the serving process's loop): start the password hashing
        processes (when there are users); take in the revocations other
        processes saved (redis); then, in the background, end the stored sessions of users
        removed while nobody ran and, with the redis backend, listen for ``gateway sessions
        revoke`` from other processes."""
        holder = self.holder
        if len(holder.current.users):
            start_password_pool()
        await load_revocations(holder.current)
        self._spawn(forget_removed_users(holder.current))
        # OpenID Connect providers are discovered in the background: one that is down at
        # start-up delays nothing, and is retried until it answers.
        self._spawn(keep_discovered(lambda: holder.current.oidc))
        if holder.current.redis is not None:

            async def on_revoke(username: str) -> None:
                await end_users(holder.current, [username], now=time.time())

            self._spawn(listen_for_revocations(lambda: holder.current, on_revoke))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every request of the main listener that aiohttp's server reads goes through here, and
        is counted and logged."""
        response = await observe(request, self.holder, self.serve, self.access)
        assert response is not None  # an aiohttp request is answered with a response object
        return response

    async def handle_plain(self, request: PlainRequest) -> bool:
        """Every plain request of the main listener (:mod:`gateway.plain`): answered and
        logged, or declined before anything happened (the gateway's own endpoints, which
        aiohttp's server then reads)."""
        try:
            await observe(request, self.holder, self.serve, self.access)
        except Declined:
            return False
        return True

    async def handle_admin(self, request: web.BaseRequest) -> web.StreamResponse:
        """``server.admin_listen``: /healthz, /readyz and /metrics at its root."""
        return await self.admin.handle(request)

    async def close(self) -> None:
        """Shutting down: nothing is in flight any more, so reloaded-away runtimes close too."""
        holder = self.holder
        for task in [*holder.retiring, *self._tasks]:
            task.cancel()
        await asyncio.gather(*holder.retiring, *self._tasks, return_exceptions=True)
        await holder.current.close()
        self.access.flush()

    async def serve(
        self, request: Incoming, runtime: Runtime, client: ClientInfo, trace: Trace
    ) -> web.StreamResponse | None:
        """The pipeline: one request planned, its caller authenticated, then answered."""
        settings = runtime.settings
        check_expectation(request)
        facts = Facts.of(request, client.host)
        located = locate(facts, runtime.routes)
        if isinstance(located, Refusal):
            raise located.error
        if isinstance(located, Own):
            if not isinstance(request, web.BaseRequest):
                raise Declined  # the gateway's own endpoints read aiohttp's request
            trace.route = "gateway"
            return await endpoints.dispatch(runtime.endpoints, request, located.path, client)
        route = located.route
        trace.route, trace.upstream = route.name, route.upstream
        now = time.time()
        found = await _authenticate(request, runtime, route, now)
        if found.set_cookie is not None:
            trace.set_cookie = found.set_cookie
        identity = found.identity
        caller = None
        if identity is not None:
            trace.user = identity.user.username
            user = identity.user
            caller = Caller(user.username, user.roles, by_session=identity.session is not None)
        decision = decide(located, facts, caller, public_url=settings.server.public_url)
        if isinstance(decision, Refusal):
            raise decision.error
        if isinstance(decision, Own):  # the stand-in for /favicon.ico or /robots.txt
            if not isinstance(request, web.BaseRequest):
                # Only an anonymous caller gets here: nothing to undo before aiohttp's turn.
                raise Declined
            return await endpoints.dispatch(runtime.endpoints, request, decision.path, client)
        if isinstance(decision, Login):
            if decision.redirect is not None:
                return web.Response(
                    status=302,
                    headers={"Location": decision.redirect, "Cache-Control": "no-store"},
                )
            return pages.unauthenticated_json(Unauthenticated.public_message)
        ctx = self._context(request, facts, runtime, client, trace, decision, identity, now)
        return await forward(
            request, ctx, runtime.upstream_client, public_url=settings.server.public_url
        )

    def _context(
        self,
        request: Incoming,
        facts: Facts,
        runtime: Runtime,
        client: ClientInfo,
        trace: Trace,
        decision: Forward,
        identity: Identity | None,
        now: float,
    ) -> RequestContext:
        settings = runtime.settings
        route = decision.route
        ctx = RequestContext(
            client=client,
            trace=trace,
            upstream_path=decision.upstream_path,
            prefix=decision.prefix,
            query=facts.query,
            route=route,
            upstream=settings.upstreams[route.upstream],
            strip_headers=runtime.own_headers,
            strip_cookies=runtime.own_cookies,
            user=identity.user.username if identity is not None else None,
            set_cookie=trace.set_cookie,
            sockets=runtime.sockets,
            close_connection=self.holder.closing,
            send_timeout_s=settings.server.timeouts.send_s,
            body_timeout_s=settings.server.timeouts.body_s,
        )
        if identity is not None:
            ctx.add_headers = runtime.upstream_headers.for_caller(
                route, identity.user, identity, now=now
            )
            if route.websocket and facts.websocket:
                ctx.sid_hash = identity.sid_hash
                ctx.roles = identity.user.roles
                ctx.recheck_s = runtime.sessions.refresh_interval_s
                ctx.still_valid = self._still_valid(request, route.name, identity)
        return ctx

    def _still_valid(
        self, request: Incoming, route: str, identity: Identity
    ) -> Callable[[], Awaitable[bool]]:
        """For an open WebSocket: whether the identity it was opened with still counts, asked
        of the route's chain in the current runtime."""

        async def check() -> bool:
            runtime = self.holder.current
            chain = runtime.chains.get(route)
            if chain is None:
                return False  # the route is gone (the reload also closes its sockets)
            return await chain.still_valid(request, identity, now=time.time())

        return check


async def _authenticate(
    request: Incoming, runtime: Runtime, route: RouteSettings, now: float
) -> Authenticated:
    try:
        return await runtime.chain(route).authenticate(request, now=now)
    except SessionStoreUnavailable:
        if route.access.kind != "public":
            raise  # SECURITY: fail closed: never anonymous-but-allowed on a protected route
        # Forwarded anonymously. Not logged per request: the store's breaker reports outages.
        return ANONYMOUS


async def observe(
    request: Incoming,
    holder: RuntimeHolder,
    pipeline: Pipeline,
    access: accesslog.AccessLog,
) -> web.StreamResponse | None:
    """The one middleware of the main listener: the request counted in flight on the runtime
    it started on, a :class:`GatewayError` (or any exception) mapped to its answer, the
    gateway's own answers written, then the metrics and access-log line of what the client was
    sent and how the exchange ended (``Trace.outcome``)."""
    started = time.perf_counter()
    trace = Trace()
    response: web.StreamResponse | None = None
    declined = False
    runtime = holder.enter()
    settings = runtime.settings
    client = resolve_client(request, settings.server.trusted_proxies)
    try:
        try:
            response = await pipeline(request, runtime, client, trace)
        except Declined:
            declined = True
            raise
        except GatewayError as exc:
            response = _refused(request, exc, trace, runtime)
        except Exception:
            log.exception("unexpected error", extra={"reason": "internal", "status": 500})
            response = pages.error_response(request, GatewayError("unexpected error"))
        if response is not None and not response.prepared:
            await _send(request, response, holder, trace)
    except asyncio.CancelledError:
        # Only a shutdown cancels a handler (handler_cancellation is off): the grace ran out.
        trace.outcome = "drain_cut"
        raise
    finally:
        holder.leave(runtime)
        if not declined:
            access.record(
                request,
                trace=trace,
                client_ip=client.ip,
                request_id=client.request_id,
                started=started,
                log_format=settings.server.access_log,
            )
    return response


def _refused(
    request: Incoming, exc: GatewayError, trace: Trace, runtime: Runtime
) -> web.StreamResponse:
    """The error mapping: the log line (once per interval for a store outage, reported by the
    store), the answer, and how the exchange ended."""
    if not isinstance(exc, SessionStoreUnavailable):
        log.warning("request refused: %s", exc, extra={"reason": exc.reason, "status": exc.status})
    trace.error = exc
    if exc.reason == "client_aborted":
        trace.outcome = "client_aborted"  # gone mid-upload: nobody reads the answer
    response = runtime.login.refusal_page(request, exc)
    if exc.reason in ("client_stalled", "bad_body"):
        trace.outcome = exc.reason
        response.force_close()  # the rest of its body is not worth waiting for
    return response


async def _send(
    request: Incoming, response: web.StreamResponse, holder: RuntimeHolder, trace: Trace
) -> None:
    """Write one of our own (small, complete) answers now, so the log says what was sent."""
    if trace.set_cookie is not None:
        response.headers.add(hdrs.SET_COOKIE, trace.set_cookie)
    if hdrs.SERVER not in response.headers:
        response.headers[hdrs.SERVER] = SERVER_HEADER
    if holder.closing:
        response.force_close()  # draining: the client moves to another replica
    if isinstance(request, PlainRequest):
        _send_plain(request, response, trace)
        return
    assert isinstance(request, web.BaseRequest)
    try:
        await response.prepare(request)
        trace.status = response.status
        await response.write_eof()
    except ConnectionError:
        trace.outcome = "client_aborted"
        return
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes) and request.method != "HEAD":
        trace.sent = len(body)


def _send_plain(request: PlainRequest, response: web.StreamResponse, trace: Trace) -> None:
    """:func:`_send` on the gateway's own server: the response object's status, headers and
    cookies, and its body, in one write."""
    body = response.body if isinstance(response, web.Response) else None
    if body is None:
        body = b""
    elif not isinstance(body, bytes):
        raise TypeError("a plain request is answered with a complete response")
    headers = [
        (name, value)
        for name, value in response.headers.items()
        if name.lower() != "content-length"
    ]
    headers += (("Set-Cookie", cookie.OutputString()) for cookie in response.cookies.values())
    if response.keep_alive is False:
        request.close = True
    try:
        request.respond(response.status, response.reason, headers, body)
    except ConnectionError:
        trace.outcome = "client_aborted"
        return
    trace.status = response.status
    if request.method != "HEAD":
        trace.sent = len(body)
