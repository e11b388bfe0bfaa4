"""The gateway's own endpoints under the reserved prefix ``/.gateway/`` (never proxied)."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from gateway.errors import NotFound

_CSS = resources.files("gateway.pages").joinpath("gateway.css").read_bytes()


async def _static_css(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=_CSS,
        content_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


async def _healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


_GET_ENDPOINTS = {
    "/.gateway/static/gateway.css": _static_css,
    "/.gateway/healthz": _healthz,
}


async def dispatch(request: web.Request, path: str) -> web.StreamResponse:
    """Serve one of our endpoints; anything else under the prefix is a 404, never the upstream's."""
    handler = _GET_ENDPOINTS.get(path)
    if handler is None or request.method not in ("GET", "HEAD"):
        raise NotFound(f"no gateway endpoint {path}", reason="no_endpoint")
    return await handler(request)
