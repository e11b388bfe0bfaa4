"""Wiring: builds the aiohttp application from settings.

The request pipeline, one stage per module:
path normalisation + route match (routing) -> client resolution (forwarded) -> identity
(identity.resolve) -> access decision (access) -> header rewrite and streaming (proxy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import quote

from aiohttp import hdrs, web

from gateway import endpoints, metrics, ops, pages
from gateway.access import Decision, decide
from gateway.bundle import Bundle
from gateway.config.settings import RouteSettings
from gateway.context import ClientInfo, RequestContext, Trace
from gateway.errors import BadRequest, Forbidden, GatewayError, Unauthenticated, UpstreamError
from gateway.forwarded import foreign_origin, resolve_client
from gateway.hosts import valid_host
from gateway.identity.resolve import (
    ANONYMOUS,
    Identity,
    Resolved,
    bearer_token,
    resolve_bearer,
    resolve_identity,
)
from gateway.identity.sessions import SessionStoreUnavailable
from gateway.identity.upstream import identity_headers
from gateway.listener import SERVER_HEADER
from gateway.paths import matching_path, normalise_path
from gateway.proxy import check_expectation, forward, is_websocket_upgrade
from gateway.revoke import (
    end_users,
    ensure_admin_token,
    forget_removed_users,
    listen_for_revocations,
    load_revocations,
)
from gateway.runtime import Runtime, RuntimeHolder
from gateway.tokens import InvalidBearer
from gateway.upstream import ClientFactory

log = logging.getLogger("gateway")

RESERVED_PREFIX = "/.gateway/"



def is_reserved(path: str) -> bool:
    """True for the gateway's own prefix, in any letter case."""
    lowered = path[: len(RESERVED_PREFIX)].lower()
    return lowered == RESERVED_PREFIX or path.lower() == RESERVED_PREFIX[:-1]


def login_location(path: str, query: str) -> str:
    """Where an anonymous browser is sent: the login page, returning to the original request."""
    rd = path + ("?" + query if query else "")
    return f"{RESERVED_PREFIX}login?rd={quote(rd, safe='')}"


def _unauthenticated(
    request: web.BaseRequest, route: RouteSettings, path: str, query: str
) -> web.Response:
    browser = request.method in ("GET", "HEAD") and pages.wants_html(request)
    if route.unauthenticated == "redirect" or (route.unauthenticated == "auto" and browser):
        location = login_location(path, query)
        return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
    # The contract: whoever is not redirected gets the JSON answer, browsers included.
    return pages.unauthenticated_json(Unauthenticated.public_message)


async def _identity(
    request: web.BaseRequest, runtime: Runtime, route: RouteSettings, now: float
) -> Resolved:
    if route.access.kind == "deny":
        return ANONYMOUS  # nobody gets in: no need to ask the store
    if route.accept_bearer:
        token = bearer_token(request)
        if token is not None:
            # SECURITY: a bearer token that fails is a 401, never a fall-back to the cookie
            # or to anonymous, and never passed through.
            return Resolved(identity=resolve_bearer(runtime, token, now=now))
    try:
        return await resolve_identity(request, runtime, now=now)
    except SessionStoreUnavailable:
        if route.access.kind != "public":
            raise  # SECURITY: fail closed: never anonymous-but-allowed on a protected route
        # Forwarded anonymously. Not logged per request: the store's breaker reports outages.
        return ANONYMOUS


class Gateway:
    """The gateway in one process: the current runtime (replaced whole by a reload) and the
    request handlers of the main listener (:meth:`handle`) and the admin listener
    (:meth:`handle_admin`). Served by :class:`gateway.listener.Listener`."""

    def __init__(self, bundle: Bundle, *, client_factory: ClientFactory | None = None) -> None:
        settings = bundle.settings
        admin_token = None
        if settings.server.admin_listen is not None:
            admin_token = ensure_admin_token(settings.server.data_dir)
        runtime = Runtime.build(bundle, client_factory=client_factory)
        self.holder = RuntimeHolder(runtime, admin_token=admin_token)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Before serving (inside the serving process's loop): take in the revocations other
        processes saved (redis); then, in the background, end the stored sessions of users
        removed while nobody ran and, with the redis backend, listen for ``gateway sessions
        revoke`` from other processes."""
        holder = self.holder
        await load_revocations(holder.current)
        self._spawn(forget_removed_users(holder.current))
        if holder.current.redis is not None:

            async def on_revoke(username: str) -> None:
                await end_users(holder.current, [username], now=time.time())

            self._spawn(listen_for_revocations(lambda: holder.current, on_revoke))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every request of the main listener goes through here, and is counted and logged."""
        return await handle(request, self.holder)

    async def handle_admin(self, request: web.BaseRequest) -> web.StreamResponse:
        """``server.admin_listen``: /healthz, /readyz and /metrics at its root."""
        return await endpoints.admin(request, self.holder)

    async def close(self) -> None:
        """Shutting down: nothing is in flight any more, so reloaded-away runtimes close too."""
        holder = self.holder
        for task in [*holder.retiring, *self._tasks]:
            task.cancel()
        await asyncio.gather(*holder.retiring, *self._tasks, return_exceptions=True)
        await holder.current.close()


async def handle(request: web.BaseRequest, holder: RuntimeHolder) -> web.StreamResponse:
    """One request through the pipeline, its answer written, then counted and logged as it
    went: the status the client was sent, the bytes, and how it ended (``Trace.outcome``)."""
    started = time.perf_counter()
    runtime = holder.current
    settings = runtime.settings
    client = resolve_client(request, settings.server.trusted_proxies)
    trace = Trace()
    response: web.StreamResponse | None = None
    runtime.inflight += 1
    holder.inflight += 1
    try:
        try:
            response = await _pipeline(request, holder, runtime, client, trace)
        except GatewayError as exc:
            response = _refused(request, exc, trace)
        except Exception:
            log.exception("unexpected error", extra={"reason": "internal", "status": 500})
            response = pages.error_response(request, GatewayError("unexpected error"))
        if not response.prepared:
            await _send(request, response, holder, trace)
    except asyncio.CancelledError:
        # Only a shutdown cancels a handler (handler_cancellation is off): the grace ran out.
        trace.outcome = "drain_cut"
        raise
    finally:
        runtime.inflight -= 1
        holder.inflight -= 1
        if runtime.idle is not None and runtime.inflight == 0:
            runtime.idle.set()
        if holder.idle is not None and holder.inflight == 0:
            holder.idle.set()
        stream_error = trace.stream_error
        if stream_error is not None and isinstance(stream_error, UpstreamError):
            metrics.UPSTREAM_ERRORS.labels(trace.upstream, stream_error.reason).inc()
        ops.record(
            request,
            response,
            trace=trace,
            client_ip=client.ip,
            request_id=client.request_id,
            started=started,
            log_format=settings.server.access_log,
        )
    return response


def _still_valid(
    request: web.BaseRequest, holder: RuntimeHolder, identity: Identity
) -> Callable[[], Awaitable[bool]]:
    """For an open WebSocket: whether the identity it was opened with still counts (the
    session lives, the bearer token has not expired, the user's credentials are unchanged)."""

    async def check() -> bool:
        runtime, now = holder.current, time.time()
        try:
            if identity.session is None:  # an API bearer token
                token = bearer_token(request)
                if token is None:
                    return False
                resolve_bearer(runtime, token, now=now)  # raises InvalidBearer once expired
                return True
            resolved = await resolve_identity(request, runtime, now=now)
        except InvalidBearer:
            return False
        except SessionStoreUnavailable:
            return True  # cannot tell now: an outage of the store does not end every socket
        found = resolved.identity
        return found is not None and found.sid_hash == identity.sid_hash

    return check


def _refused(request: web.BaseRequest, exc: GatewayError, trace: Trace) -> web.StreamResponse:
    if not isinstance(exc, SessionStoreUnavailable):  # reported once per interval by the store
        log.warning(
            "request refused: %s", exc, extra={"reason": exc.reason, "status": exc.status}
        )
    if isinstance(exc, UpstreamError):
        metrics.UPSTREAM_ERRORS.labels(trace.upstream, exc.reason).inc()
    if exc.reason == "client_aborted":
        trace.outcome = "client_aborted"  # gone mid-upload: nobody reads the answer
    response = pages.error_response(request, exc)
    if exc.reason in ("client_stalled", "bad_body"):
        trace.outcome = exc.reason
        response.force_close()  # the rest of its body is not worth waiting for
    return response


async def _send(
    request: web.BaseRequest, response: web.StreamResponse, holder: RuntimeHolder, trace: Trace
) -> None:
    """Write one of our own (small, complete) answers now, so the log says what was sent."""
    if trace.set_cookie is not None:
        response.headers.add(hdrs.SET_COOKIE, trace.set_cookie)
    if hdrs.SERVER not in response.headers:
        response.headers[hdrs.SERVER] = SERVER_HEADER
    if holder.closing:
        response.force_close()  # draining: the client moves to another replica
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


async def _pipeline(
    request: web.BaseRequest,
    holder: RuntimeHolder,
    runtime: Runtime,
    client: ClientInfo,
    trace: Trace,
) -> web.StreamResponse:
    settings = runtime.settings
    check_expectation(request)
    if not valid_host(client.host):
        # SECURITY: a malformed Host (admin.example.com:abc, a..b, "a, b") would skip a
        # host-restricted route here yet be read as that host by the upstream or a vhost.
        raise BadRequest("malformed Host header", reason="bad_host")
    raw_path, _, query = request.raw_path.partition("?")
    path = normalise_path(raw_path)
    match_path = matching_path(path)
    if is_reserved(match_path):
        # SECURITY: the reserved prefix is matched after normalisation (and without case or
        # ;parameters) so that /%2egateway/, //.gateway/ or /.gateway;/ never reach an upstream.
        trace.route = "gateway"
        return await endpoints.dispatch(request, holder, path)
    route = runtime.routes.select(request.method, client.host, match_path)
    trace.route, trace.upstream = route.name, route.upstream
    now = time.time()
    resolved = await _identity(request, runtime, route, now)
    if resolved.set_cookie is not None:
        trace.set_cookie = resolved.set_cookie
    identity = resolved.identity
    user = identity.user if identity is not None else None
    if user is not None:
        trace.user = user.username
    decision = decide(
        route.access,
        user.username if user is not None else None,
        user.roles if user is not None else frozenset(),
    )
    if decision is Decision.DENY:
        raise Forbidden(f"route {route.name} denies access")
    if identity is not None and identity.session is not None and is_websocket_upgrade(request):
        # SECURITY: cross-site WebSocket hijacking: a browser sends the session cookie with a
        # handshake any page starts (SameSite=None), and the same-origin policy does not apply.
        origin = foreign_origin(request, settings.server.public_url)
        if origin is not None:
            raise Forbidden(
                f"WebSocket from foreign origin {origin[:100]!r}", reason="websocket_origin"
            )
    if decision is Decision.LOGIN:
        return _unauthenticated(request, route, path, query)
    ctx = RequestContext(
        client=client,
        trace=trace,
        path=path,
        query=query,
        route=route,
        upstream=settings.upstreams[route.upstream],
        strip_headers=runtime.own_headers,
        strip_cookies=runtime.own_cookies,
        user=user.username if user is not None else None,
        set_cookie=resolved.set_cookie,
        sockets=runtime.sockets,
        close_connection=holder.closing,
        send_timeout_s=settings.server.timeouts.send_s,
        body_timeout_s=settings.server.timeouts.body_s,
    )
    if identity is not None:
        ctx.add_headers = identity_headers(runtime, route, identity, now=now)
        if route.websocket and is_websocket_upgrade(request):
            ctx.sid_hash = identity.sid_hash
            ctx.recheck_s = runtime.sessions.refresh_interval_s
            ctx.still_valid = _still_valid(request, holder, identity)
    return await forward(
        request, ctx, runtime.upstream_client, public_url=settings.server.public_url
    )
