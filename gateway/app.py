"""Wiring: builds the aiohttp application from settings.

The request pipeline, one stage per module:
path normalisation + route match (routing) -> client resolution (forwarded) -> identity
-> access decision (access) -> header rewrite and streaming to the upstream (proxy).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from gateway import endpoints, pages
from gateway.access import Decision, decide
from gateway.config.settings import RouteSettings, Settings
from gateway.context import RequestContext
from gateway.errors import Forbidden, GatewayError, Unauthenticated
from gateway.forwarded import resolve_client
from gateway.proxy import expect_handler, forward
from gateway.routing import RouteTable, normalise_path
from gateway.upstream import create_client
from gateway.upstream.base import UpstreamClient

log = logging.getLogger("gateway")

RESERVED_PREFIX = "/.gateway/"


@dataclass(slots=True, kw_only=True)
class Runtime:
    """Everything a request needs, built from one :class:`Settings`; replaced whole on reload."""

    settings: Settings
    routes: RouteTable
    upstream_client: UpstreamClient


class RuntimeHolder:
    """The one mutable cell: requests read ``current`` once and keep that runtime to the end."""

    __slots__ = ("current",)

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime


RUNTIME = web.AppKey("runtime", RuntimeHolder)


def _unauthenticated(
    request: web.Request, route: RouteSettings, path: str, query: str
) -> web.Response:
    browser = request.method in ("GET", "HEAD") and pages.wants_html(request)
    if route.unauthenticated == "redirect" or (route.unauthenticated == "auto" and browser):
        rd = path + ("?" + query if query else "")
        location = f"{RESERVED_PREFIX}login?rd={quote(rd, safe='')}"
        return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
    return pages.render_error(
        request,
        401,
        Unauthenticated.public_message,
        code="unauthenticated",
        headers={"WWW-Authenticate": 'Bearer realm="gateway"'},
    )


async def handle(request: web.Request) -> web.StreamResponse:
    """The catch-all handler: every request that is not the gateway's own goes through here."""
    runtime = request.app[RUNTIME].current
    settings = runtime.settings
    try:
        raw_path, _, query = request.raw_path.partition("?")
        path = normalise_path(raw_path)
        if path.startswith(RESERVED_PREFIX) or path == RESERVED_PREFIX[:-1]:
            # SECURITY: the reserved prefix is matched after normalisation so that
            # /%2egateway/ or //.gateway/ cannot reach an upstream either.
            return await endpoints.dispatch(request, path)
        client = resolve_client(request, settings.server.trusted_proxies)
        route = runtime.routes.select(request.method, client.host, path)
        decision = decide(route.access, None, frozenset())
        if decision is Decision.DENY:
            raise Forbidden(f"route {route.name} denies access")
        if decision is Decision.LOGIN:
            return _unauthenticated(request, route, path, query)
        ctx = RequestContext(
            client=client,
            path=path,
            query=query,
            route=route,
            upstream=settings.upstreams[route.upstream],
            strip_cookies=frozenset((settings.session.cookie_name,)),
        )
        return await forward(
            request, ctx, runtime.upstream_client, public_url=settings.server.public_url
        )
    except GatewayError as exc:
        log.warning(
            "request refused: %s", exc, extra={"reason": exc.reason, "status": exc.status}
        )
        return pages.error_response(request, exc)


def build_app(settings: Settings) -> web.Application:
    """The gateway as an aiohttp application (one per worker process)."""
    app = web.Application(handler_args={"max_field_size": 16384})
    holder = RuntimeHolder(
        Runtime(
            settings=settings,
            routes=RouteTable(settings.routes),
            upstream_client=create_client(settings.upstreams),
        )
    )
    app[RUNTIME] = holder

    async def close_upstreams(app: web.Application) -> None:
        await holder.current.upstream_client.close()

    app.on_cleanup.append(close_upstreams)
    app.router.add_route("*", "/{tail:.*}", handle, expect_handler=expect_handler)
    return app
