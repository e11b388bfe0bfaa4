"""The gateway's own endpoints under the reserved prefix ``/.gateway/`` (never proxied)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from gateway import login, ops
from gateway.errors import MethodNotAllowed, NotFound
from gateway.revoke import admin_token_matches, end_users
from gateway.runtime import Runtime, RuntimeHolder

log = logging.getLogger("gateway.admin")

Handler = Callable[[web.BaseRequest, RuntimeHolder], Awaitable[web.StreamResponse]]
RuntimeHandler = Callable[[web.BaseRequest, Runtime], Awaitable[web.StreamResponse]]


def _current(handler: RuntimeHandler) -> Handler:
    async def with_current(request: web.BaseRequest, holder: RuntimeHolder) -> web.StreamResponse:
        return await handler(request, holder.current)

    return with_current


_CSS = resources.files("gateway.pages").joinpath("gateway.css").read_bytes()


async def _static_css(request: web.BaseRequest, runtime: Runtime) -> web.StreamResponse:
    return web.Response(
        body=_CSS,
        content_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


async def _jwks(request: web.BaseRequest, runtime: Runtime) -> web.StreamResponse:
    """GET /.gateway/jwks.json: the public signing keys (RFC 7517)."""
    return web.Response(
        body=runtime.tokens.jwks_json,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


ADMIN_ENDPOINTS: dict[str, Handler] = {
    "healthz": ops.healthz,
    "readyz": ops.readyz,
    "metrics": ops.metrics_endpoint,
}
"""At the root of ``server.admin_listen``: health with details, and the metrics (never served
on the public listener)."""

_ENDPOINTS: dict[str, dict[str, Handler]] = {
    "/.gateway/static/gateway.css": {"GET": _current(_static_css)},
    login.LOGIN_PATH: {"GET": _current(login.login_page), "POST": _current(login.login_submit)},
    "/.gateway/logout": {"GET": _current(login.logout_page), "POST": _current(login.logout_submit)},
    "/.gateway/userinfo": {"GET": _current(login.userinfo)},
    "/.gateway/token": {"POST": _current(login.api_token)},
    "/.gateway/jwks.json": {"GET": _current(_jwks)},
    # SECURITY: the public listener says ready or not, nothing about what is inside.
    "/.gateway/healthz": {"GET": ops.public_healthz},
    "/.gateway/readyz": {"GET": ops.public_readyz},
}


async def dispatch(
    request: web.BaseRequest, holder: RuntimeHolder, path: str
) -> web.StreamResponse:
    """Serve one of our endpoints; anything else under the prefix is a 404, never the upstream's."""
    methods = _ENDPOINTS.get(path)
    if methods is None:
        raise NotFound(f"no gateway endpoint {path}", reason="no_endpoint")
    method = "GET" if request.method == "HEAD" else request.method
    handler = methods.get(method)
    if handler is None:
        raise MethodNotAllowed(f"{request.method} {path}")
    return await handler(request, holder)


async def admin(request: web.BaseRequest, holder: RuntimeHolder) -> web.StreamResponse:
    """The ``server.admin_listen`` listener: /healthz, /readyz and /metrics at its root, and
    ``POST /sessions/revoke`` for ``gateway sessions revoke``."""
    if request.path == "/sessions/revoke":
        return await _revoke(request, holder)
    handler = ADMIN_ENDPOINTS.get(request.path.removeprefix("/"))
    if handler is None:
        return web.json_response({"error": "not_found"}, status=404)
    if request.method not in ("GET", "HEAD"):
        return web.json_response({"error": "method_not_allowed"}, status=405)
    return await handler(request, holder)


async def _revoke(request: web.BaseRequest, holder: RuntimeHolder) -> web.StreamResponse:
    """``POST /sessions/revoke`` ``{"user": NAME}`` with ``Authorization: Bearer <admin token>``
    (the token ``gateway run`` keeps in ``server.data_dir``)."""
    if request.method != "POST":
        return web.json_response({"error": "method_not_allowed"}, status=405)
    # SECURITY: only someone who can read data_dir (the signing key's home) may end sessions.
    if holder.admin_token is None or not admin_token_matches(
        holder.admin_token, request.headers.get("Authorization")
    ):
        return web.json_response({"error": "unauthenticated"}, status=401)
    try:
        payload = json.loads(await request.content.read(4096))
    except (ValueError, RecursionError):
        payload = None
    username = payload.get("user") if isinstance(payload, dict) else None
    if not isinstance(username, str) or not username:
        return web.json_response({"error": "bad_request", "message": 'expected {"user": NAME}'},
                                 status=400)
    ended = await end_users(holder.current, [username], now=time.time())
    log.info("sessions revoked through the admin listener", extra={"reason": "revoke"})
    return web.json_response({"user": username, "sessions_ended": ended})
