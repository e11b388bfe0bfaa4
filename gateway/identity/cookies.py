"""The gateway's own cookies: the session cookie (CONTRACT section 5) and the CSRF cookie."""

from __future__ import annotations

import hmac
import re
import secrets

from aiohttp import web

from gateway.config.settings import Settings
from gateway.headers import cookie_value

CSRF_COOKIE_HTTP = "gw_csrf"
CSRF_COOKIE_HTTPS = "__Host-gw_csrf"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")


def _attributes(settings: Settings, *, same_site: str, max_age: int | None) -> str:
    parts = ["Path=/", "HttpOnly", f"SameSite={same_site.capitalize()}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if settings.server.https:
        parts.append("Secure")
    # SECURITY: never a Domain attribute: host-only cookies (and __Host- requires it).
    return "; ".join(parts)


def session_cookie(settings: Settings, value: str, *, max_age_s: float) -> str:
    """The ``Set-Cookie`` value that stores a session."""
    session = settings.session
    max_age = max(0, int(max_age_s))
    attributes = _attributes(settings, same_site=session.same_site, max_age=max_age)
    return f"{session.cookie_name}={value}; {attributes}"


def expired_session_cookie(settings: Settings) -> str:
    """The ``Set-Cookie`` value that removes the session cookie from the browser."""
    attributes = _attributes(settings, same_site=settings.session.same_site, max_age=0)
    return f"{settings.session.cookie_name}=; {attributes}"


def request_cookie(request: web.BaseRequest, name: str) -> str | None:
    """One cookie of the request, read as RFC 6265 says (see :func:`gateway.headers.cookie_value`;
    aiohttp's own ``request.cookies`` also splits on spaces, which lets ``pref=x gw_session=B``
    inject a session)."""
    return cookie_value(request.headers.getall("Cookie", ()), name)


def session_cookie_value(request: web.BaseRequest, settings: Settings) -> str | None:
    return request_cookie(request, settings.session.cookie_name)


def csrf_cookie_name(settings: Settings) -> str:
    return CSRF_COOKIE_HTTPS if settings.server.https else CSRF_COOKIE_HTTP


def csrf_token(request: web.BaseRequest, settings: Settings) -> tuple[str, str | None]:
    """The browser's CSRF token and, when it has none yet, the ``Set-Cookie`` value that gives
    it one. The form carries the same token; only a page of ours can read it into a form
    (double submit, bound to this browser by the cookie)."""
    existing = request_cookie(request, csrf_cookie_name(settings)) or ""
    if _TOKEN.fullmatch(existing):
        return existing, None
    token = secrets.token_urlsafe(32)
    attributes = _attributes(settings, same_site="strict", max_age=None)
    return token, f"{csrf_cookie_name(settings)}={token}; {attributes}"


def csrf_valid(request: web.BaseRequest, settings: Settings, submitted: str) -> bool:
    """True when the form's token matches this browser's CSRF cookie (constant time)."""
    cookie = request_cookie(request, csrf_cookie_name(settings)) or ""
    if not cookie or not submitted:
        return False
    return hmac.compare_digest(cookie.encode(), submitted.encode())
