"""The CSRF cookie of the gateway's own forms (double submit, bound to the browser by a cookie).

The form carries the same token as the cookie; only a page of ours can read the token into a
form. The cookie is ``SameSite=Strict``, ``__Host-`` prefixed over https.
"""

from __future__ import annotations

import hmac
import re
import secrets

from aiohttp import web

from gateway.http import Incoming
from gateway.identity.cookies import cookie_attributes, request_cookie

CSRF_COOKIE_HTTP = "gw_csrf"
CSRF_COOKIE_HTTPS = "__Host-gw_csrf"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")


def csrf_cookie_name(*, https: bool) -> str:
    return CSRF_COOKIE_HTTPS if https else CSRF_COOKIE_HTTP


class Csrf:
    __slots__ = ("_attributes", "name")

    def __init__(self, *, https: bool) -> None:
        self.name = csrf_cookie_name(https=https)
        self._attributes = cookie_attributes(same_site="strict", max_age=None, https=https)

    def token(self, request: Incoming) -> tuple[str, str | None]:
        """The browser's CSRF token and, when it has none yet, the ``Set-Cookie`` value that
        gives it one."""
        existing = request_cookie(request, self.name) or ""
        if _TOKEN.fullmatch(existing):
            return existing, None
        token = secrets.token_urlsafe(32)
        return token, f"{self.name}={token}; {self._attributes}"

    def valid(self, request: web.BaseRequest, submitted: str) -> bool:
        """True when the form's token matches this browser's CSRF cookie (constant time)."""
        cookie = request_cookie(request, self.name) or ""
        if not cookie or not submitted:
            return False
        return hmac.compare_digest(cookie.encode(), submitted.encode())
