"""Pages the gateway itself serves: error pages now, login/logout later.

Every response of ours carries strict security headers; clients that ask for HTML get a small
self-contained page, everyone else JSON.
"""

from __future__ import annotations

import html
import json
from importlib import resources

from aiohttp import web

from gateway.errors import GatewayError

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_ERROR_TEMPLATE = resources.files(__package__).joinpath("error.html").read_text("utf-8")


def wants_html(request: web.BaseRequest) -> bool:
    """True when the client prefers an HTML page (a browser navigation) over JSON."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept


def render_error(
    request: web.BaseRequest,
    status: int,
    message: str,
    *,
    code: str,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A small HTML or JSON error response, chosen by the request's Accept header."""
    all_headers = dict(SECURITY_HEADERS)
    if headers:
        all_headers.update(headers)
    if wants_html(request):
        body = _ERROR_TEMPLATE.format(status=status, message=html.escape(message))
        return web.Response(
            status=status, text=body, content_type="text/html", headers=all_headers
        )
    payload = json.dumps({"error": code, "message": message})
    return web.Response(
        status=status, text=payload, content_type="application/json", headers=all_headers
    )


def error_response(request: web.BaseRequest, exc: GatewayError) -> web.Response:
    """Map a :class:`GatewayError` to its client-safe response (detail stays in the log)."""
    return render_error(request, exc.status, exc.public_message, code=exc.code)
