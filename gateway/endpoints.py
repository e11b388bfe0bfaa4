"""The gateway's own endpoints: under the reserved prefix ``/.gateway/`` on the main listener
(never proxied), and at the root of the admin listener."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources

from aiohttp import web

from gateway.errors import MethodNotAllowed, NotFound
from gateway.forwarded import ClientInfo
from gateway.login.handlers import LOGIN_PATH, Login
from gateway.ops import Health
from gateway.plan import STAND_INS, is_reserved

log = logging.getLogger("gateway.admin")

Handler = Callable[[web.BaseRequest, ClientInfo], Awaitable[web.StreamResponse]]
Table = Mapping[str, Mapping[str, Handler]]

_PAGES = resources.files("gateway.pages")
_CSS = _PAGES.joinpath("gateway.css").read_bytes()
_FAVICON = _PAGES.joinpath("favicon.ico").read_bytes()
_ROBOTS = (
    b"# Served by the gateway: every page of this site needs a sign-in.\n"
    b"User-agent: *\nDisallow: /\n"
)


def public_endpoints(
    login: Login,
    jwks_json: bytes,
    health: Health,
    oidc: Mapping[str, Mapping[str, Handler]] | None = None,
) -> Table:
    """The endpoints under ``/.gateway/``, by path and method (HEAD is served as GET);
    ``oidc``: those of the OpenID Connect providers
    (:meth:`gateway.login.oidc.OidcLogin.routes`)."""

    async def static_css(request: web.BaseRequest, client: ClientInfo) -> web.StreamResponse:
        return web.Response(
            body=_CSS,
            content_type="text/css",
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    def stand_in(body: bytes, content_type: str) -> Handler:
        """A small file of ours, also the answer to an anonymous fetch of ``/favicon.ico`` or
        ``/robots.txt`` on a protected route (``plan.STAND_INS``)."""

        async def serve(request: web.BaseRequest, client: ClientInfo) -> web.StreamResponse:
            # Answering for the app's own path: not kept, so that once signed in the browser
            # fetches the app's file rather than reusing ours.
            cache = "public, max-age=3600" if is_reserved(request.path) else "no-cache"
            return web.Response(
                body=body,
                content_type=content_type,
                headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"},
            )

        return serve

    async def jwks(request: web.BaseRequest, client: ClientInfo) -> web.StreamResponse:
        """GET /.gateway/jwks.json: the public signing keys (RFC 7517)."""
        return web.Response(
            body=jwks_json,
            content_type="application/json",
            headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    async def healthz(request: web.BaseRequest, client: ClientInfo) -> web.StreamResponse:
        return await health.healthz(request)

    async def readyz(request: web.BaseRequest, client: ClientInfo) -> web.StreamResponse:
        # SECURITY: the public listener says ready or not, nothing about what is inside.
        return await health.public_readyz(request)

    return {
        "/.gateway/static/gateway.css": {"GET": static_css},
        STAND_INS["/favicon.ico"]: {"GET": stand_in(_FAVICON, "image/x-icon")},
        STAND_INS["/robots.txt"]: {"GET": stand_in(_ROBOTS, "text/plain")},
        LOGIN_PATH: {"GET": login.login_page, "POST": login.login_submit},
        "/.gateway/logout": {"GET": login.logout_page, "POST": login.logout_submit},
        "/.gateway/userinfo": {"GET": login.userinfo},
        "/.gateway/token": {"POST": login.api_token},
        "/.gateway/jwks.json": {"GET": jwks},
        "/.gateway/healthz": {"GET": healthz},
        "/.gateway/readyz": {"GET": readyz},
        **(oidc or {}),
    }


async def dispatch(
    table: Table, request: web.BaseRequest, path: str, client: ClientInfo
) -> web.StreamResponse:
    """Serve one of our endpoints; anything else under the prefix is a 404, never the upstream's."""
    methods = table.get(path)
    if methods is None:
        raise NotFound(f"no gateway endpoint {path}", reason="no_endpoint")
    method = "GET" if request.method == "HEAD" else request.method
    handler = methods.get(method)
    if handler is None:
        raise MethodNotAllowed(f"{request.method} {path}")
    return await handler(request, client)


class Admin:
    """The ``server.admin_listen`` listener: /healthz, /readyz (with details) and /metrics at
    its root, and ``POST /sessions/revoke`` for ``gateway sessions revoke``."""

    def __init__(
        self,
        health: Health,
        *,
        revoke: Callable[[str], Awaitable[int]],
        admin_token_matches: Callable[[str | None], bool],
    ) -> None:
        self._health = health
        self._revoke = revoke
        self._token_matches = admin_token_matches
        self._get: dict[str, Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]] = {
            "/healthz": health.healthz,
            "/readyz": health.readyz,
            "/metrics": health.metrics,
        }

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/sessions/revoke":
            return await self._sessions_revoke(request)
        handler = self._get.get(request.path)
        if handler is None:
            return web.json_response({"error": "not_found"}, status=404)
        if request.method not in ("GET", "HEAD"):
            return web.json_response({"error": "method_not_allowed"}, status=405)
        return await handler(request)

    async def _sessions_revoke(self, request: web.BaseRequest) -> web.StreamResponse:
        """``POST /sessions/revoke`` ``{"user": NAME}`` with ``Authorization: Bearer <admin
        token>`` (the token ``gateway run`` keeps in ``server.data_dir``)."""
        if request.method != "POST":
            return web.json_response({"error": "method_not_allowed"}, status=405)
        # SECURITY: only someone who can read data_dir (the signing key's home) may end sessions.
        if not self._token_matches(request.headers.get("Authorization")):
            return web.json_response({"error": "unauthenticated"}, status=401)
        try:
            payload = json.loads(await request.content.read(4096))
        except (ValueError, RecursionError):
            payload = None
        username = payload.get("user") if isinstance(payload, dict) else None
        if not isinstance(username, str) or not username:
            return web.json_response(
                {"error": "bad_request", "message": 'expected {"user": NAME}'}, status=400
            )
        ended = await self._revoke(username)
        log.info("sessions revoked through the admin listener", extra={"reason": "revoke"})
        return web.json_response({"user": username, "sessions_ended": ended})
