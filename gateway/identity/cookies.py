"""The session cookie (CONTRACT section 5): its name and attributes, read from a request, set
and removed."""

from __future__ import annotations

from gateway.config.settings import SessionSettings
from gateway.headers import cookie_value
from gateway.http import Incoming


def cookie_attributes(*, same_site: str, max_age: int | None, https: bool) -> str:
    """The attributes every cookie of the gateway carries."""
    parts = ["Path=/", "HttpOnly", f"SameSite={same_site.capitalize()}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if https:
        parts.append("Secure")
    # SECURITY: never a Domain attribute: host-only cookies (and __Host- requires it).
    return "; ".join(parts)


def request_cookie(request: Incoming, name: str) -> str | None:
    """One cookie of the request, read as RFC 6265 says (see :func:`gateway.headers.cookie_value`;
    aiohttp's own ``request.cookies`` also splits on spaces, which lets ``pref=x gw_session=B``
    inject a session)."""
    return cookie_value(request.headers.getall("Cookie", ()), name)


class SessionCookie:
    """``session.cookie_name`` with ``session.same_site``, ``Secure`` over https."""

    __slots__ = ("_expired", "_https", "_same_site", "name")

    def __init__(self, session: SessionSettings, *, https: bool) -> None:
        self.name = session.cookie_name
        self._same_site = session.same_site
        self._https = https
        attributes = cookie_attributes(same_site=self._same_site, max_age=0, https=https)
        self._expired = f"{self.name}=; {attributes}"

    @property
    def strict(self) -> bool:
        """``SameSite=Strict``: not sent on a navigation that a redirect from another site
        started."""
        return self._same_site == "strict"

    def value(self, request: Incoming) -> str | None:
        """The session cookie the request carries, if any."""
        return request_cookie(request, self.name)

    def set(self, value: str, *, max_age_s: float) -> str:
        """The ``Set-Cookie`` value that stores a session."""
        max_age = max(0, int(max_age_s))
        attributes = cookie_attributes(
            same_site=self._same_site, max_age=max_age, https=self._https
        )
        return f"{self.name}={value}; {attributes}"

    def expired(self) -> str:
        """The ``Set-Cookie`` value that removes the session cookie from the browser."""
        return self._expired
