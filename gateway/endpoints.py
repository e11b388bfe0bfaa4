"""The gateway's own endpoints under the reserved prefix ``/.gateway/`` (never proxied)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from gateway import login
from gateway.errors import MethodNotAllowed, NotFound
from gateway.runtime import Runtime

Handler = Callable[[web.Request, Runtime], Awaitable[web.StreamResponse]]

_CSS = resources.files("gateway.pages").joinpath("gateway.css").read_bytes()


async def _static_css(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    return web.Response(
        body=_CSS,
        content_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


async def _healthz(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def _readyz(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    store_ok = await runtime.sessions.ping()
    status = 200 if store_ok else 503
    return web.json_response(
        {"status": "ready" if store_ok else "not ready", "checks": {"session_store": store_ok}},
        status=status,
        headers={"Cache-Control": "no-store"},
    )


async def _jwks(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    """GET /.gateway/jwks.json: the public signing keys (RFC 7517)."""
    return web.Response(
        body=runtime.tokens.jwks_json,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


_ENDPOINTS: dict[str, dict[str, Handler]] = {
    "/.gateway/static/gateway.css": {"GET": _static_css},
    "/.gateway/healthz": {"GET": _healthz},
    "/.gateway/readyz": {"GET": _readyz},
    login.LOGIN_PATH: {"GET": login.login_page, "POST": login.login_submit},
    "/.gateway/logout": {"GET": login.logout_page, "POST": login.logout_submit},
    "/.gateway/userinfo": {"GET": login.userinfo},
    "/.gateway/token": {"POST": login.api_token},
    "/.gateway/jwks.json": {"GET": _jwks},
}


async def dispatch(request: web.Request, runtime: Runtime, path: str) -> web.StreamResponse:
    """Serve one of our endpoints; anything else under the prefix is a 404, never the upstream's."""
    methods = _ENDPOINTS.get(path)
    if methods is None:
        raise NotFound(f"no gateway endpoint {path}", reason="no_endpoint")
    method = "GET" if request.method == "HEAD" else request.method
    handler = methods.get(method)
    if handler is None:
        raise MethodNotAllowed(f"{request.method} {path}")
    return await handler(request, runtime)
