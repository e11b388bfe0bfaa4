"""Pages the gateway itself serves: login, logout and error pages (and the favicon and CSS they
share, served by :mod:`gateway.endpoints`).

Every response of ours carries strict security headers; clients that ask for HTML get a small
self-contained page, everyone else JSON.
"""

from __future__ import annotations

import html
import json
from importlib import resources

from aiohttp import web

from gateway.errors import GatewayError, Unauthenticated
from gateway.http import Incoming, wants_html

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on our own
    # form posts, which the Origin check must then refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_TEMPLATES = {
    name: resources.files(__package__).joinpath(name).read_text("utf-8")
    for name in (
        "continue.html",
        "denied.html",
        "error.html",
        "login.html",
        "logout.html",
        "not_signed_in.html",
        "signed_in.html",
    )
}


class Markup(str):
    """Text that is already HTML: inserted into a template as it is."""

    __slots__ = ()


def escape(value: str) -> str:
    return html.escape(value, quote=True)


def render_page(
    template: str, *, status: int = 200, headers: dict[str, str] | None = None, **values: str
) -> web.Response:
    """One of our HTML pages, every value HTML-escaped unless it is :class:`Markup`."""
    body = _TEMPLATES[template].format(
        **{
            key: value if isinstance(value, Markup) else escape(value)
            for key, value in values.items()
        }
    )
    return web.Response(
        status=status,
        text=body,
        content_type="text/html",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def render_json(
    status: int, payload: object, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(payload),
        content_type="application/json",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def render_error(
    request: Incoming,
    status: int,
    message: str,
    *,
    code: str,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A small HTML or JSON error response, chosen by the request's Accept header."""
    if wants_html(request):
        return render_page(
            "error.html", status=status, headers=headers, status_code=str(status), message=message
        )
    return render_json(status, {"error": code, "message": message}, headers=headers)


def unauthenticated_json(message: str) -> web.Response:
    """The 401 every non-redirected anonymous caller gets (CONTRACT section 3)."""
    return render_json(
        401,
        {"error": "unauthenticated", "message": message},
        headers={"WWW-Authenticate": 'Bearer realm="gateway"'},
    )


def error_response(request: Incoming, exc: GatewayError) -> web.Response:
    """Map a :class:`GatewayError` to its client-safe response (detail stays in the log)."""
    headers = None
    if isinstance(exc, Unauthenticated):
        challenge = 'Bearer realm="gateway"'
        error = getattr(exc, "error", None)
        if error is not None:
            # RFC 6750 3: the description is a fixed, safe string (never token content).
            description = getattr(exc, "description", "")
            challenge += f', error="{error}", error_description="{description}"'
        headers = {"WWW-Authenticate": challenge}
    return render_error(request, exc.status, exc.public_message, code=exc.code, headers=headers)
