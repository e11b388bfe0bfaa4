"""A scripted browser and configuration builders for the login functional tests.

The gateway runs for real (``tests.support.GatewayClient``, the listener ``gateway run`` uses) in
front of the recording upstream of :mod:`tests.upstreams`, on a configuration the loader read
(:func:`login_config`, made of the builders of :mod:`tests.configs`).
Cookies are handled here, explicitly: the :class:`Browser` reads ``Set-Cookie`` and sends a
``Cookie`` header itself (the aiohttp client's own jar is a ``DummyCookieJar``), and never
follows redirects, so every test sees exactly what a browser would receive.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from multidict import CIMultiDictProxy

from tests.configs import NO_THROTTLE, PASSWORDS, PUBLIC_URL, config, route
from tests.configs import users as test_users
from tests.support import GatewayClient
from tests.upstreams import Received, echoed

HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
JSON = "application/json"
LOGIN = "/.gateway/login"
LOGOUT = "/.gateway/logout"
USERINFO = "/.gateway/userinfo"
READYZ = "/.gateway/readyz"
COOKIE = "gw_session"
CSRF_COOKIE = "gw_csrf"

LOOPBACK = ["127.0.0.1/32"]
"""``server.trusted_proxies`` covering the test client, for ``X-Forwarded-For`` to count."""


def default_routes() -> list[dict[str, Any]]:
    return [
        route("public", prefix="/public", access="public"),
        route("members", prefix="/members", access="authenticated"),
        route("api", prefix="/api", access="authenticated", unauthenticated="status"),
    ]


def rules_route(
    name: str, prefix: str, *, roles: Iterable[str] = (), users: Iterable[str] = ()
) -> dict[str, Any]:
    """A route whose ``access`` lists roles and/or users."""
    access = {key: list(names) for key, names in (("roles", roles), ("users", users)) if names}
    return route(name, prefix=prefix, access=access)


def login_config(
    upstreams: str | Mapping[str, Any],
    session: Mapping[str, Any],
    *,
    routes: Iterable[Mapping[str, Any]] | None = None,
    users: Iterable[Mapping[str, Any]] | None = None,
    throttle: Mapping[str, Any] = NO_THROTTLE,
    title: str | None = None,
    public_url: str = PUBLIC_URL,
    tokens: Mapping[str, Any] | None = None,
    **server: Any,
) -> dict[str, Any]:
    """A configuration document with a ``session:`` section, the test users (all four unless
    ``users`` lists inline entries), and ``server`` keys as the YAML spells them."""
    login: dict[str, Any] = {"throttle": dict(throttle)}
    if title is not None:
        login["title"] = title
    return config(
        upstreams,
        default_routes() if routes is None else routes,
        public_url=public_url,
        server=server,
        session=dict(session),
        users={"inline": list(test_users() if users is None else users)},
        login=login,
        tokens=tokens,
    )


@dataclass(frozen=True)
class SetCookie:
    raw: str
    name: str
    value: str
    attributes: dict[str, str]
    """Attribute names lower-cased; flags (``HttpOnly``) map to ``""``."""

    @classmethod
    def parse(cls, raw: str) -> SetCookie:
        first, *rest = [part.strip() for part in raw.split(";")]
        name, _, value = first.partition("=")
        attributes = {}
        for part in rest:
            key, _, val = part.partition("=")
            attributes[key.lower()] = val
        return cls(raw=raw, name=name, value=value, attributes=attributes)

    @property
    def expires_now(self) -> bool:
        return self.attributes.get("max-age") == "0"


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.inputs: list[dict[str, str]] = []
        self.label_for: list[str] = []
        self.urls: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.errors: list[str] = []
        self.h1 = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        self.urls += [values[key] for key in ("src", "href") if key in values]
        if tag == "input":
            self.inputs.append(values)
        elif tag == "label":
            self.label_for.append(values.get("for", ""))
        elif tag == "form":
            self.forms.append(values)
        elif tag == "p" and "error" in values.get("class", "").split():
            self._in = "error"
            self.errors.append("")
        elif tag == "h1":
            self._in = "h1"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "h1"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "error":
            self.errors[-1] += data
        elif self._in == "h1":
            self.h1 += data


@dataclass
class Page:
    """What a login or logout page shows."""

    inputs: list[dict[str, str]]
    label_for: list[str]
    urls: list[str]
    forms: list[dict[str, str]]
    errors: list[str]
    h1: str

    @classmethod
    def parse(cls, text: str) -> Page:
        parser = _PageParser()
        parser.feed(text)
        parser.close()
        return cls(
            inputs=parser.inputs,
            label_for=parser.label_for,
            urls=parser.urls,
            forms=parser.forms,
            errors=[e.strip() for e in parser.errors],
            h1=parser.h1.strip(),
        )

    def field(self, name: str) -> str:
        values = [i.get("value", "") for i in self.inputs if i.get("name") == name]
        assert len(values) == 1, f"expected one input named {name!r}, found {len(values)}"
        return values[0]


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def page(self) -> Page:
        assert self.headers.get("Content-Type", "").startswith("text/html"), self.headers
        return Page.parse(self.text)

    @property
    def set_cookies(self) -> list[SetCookie]:
        return [SetCookie.parse(raw) for raw in self.headers.getall("Set-Cookie", ())]

    def cookie(self, name: str = COOKIE) -> SetCookie | None:
        found = [c for c in self.set_cookies if c.name == name]
        assert len(found) <= 1, f"{name} set {len(found)} times: {found}"
        return found[0] if found else None

    @property
    def upstream(self) -> Received:
        """What the upstream received, as its default answer reports it."""
        return echoed(self.body)


@dataclass
class Browser:
    """One browser: its own cookies, sent explicitly; redirects are never followed."""

    client: GatewayClient
    cookies: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def session(self) -> str | None:
        return self.cookies.get(COOKIE)

    async def request(
        self,
        method: str,
        path: str,
        *,
        accept: str = HTML,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Reply:
        """Send a request; ``cookies`` overrides this browser's jar (and the jar is not
        updated from the reply then)."""
        sent = {"Accept": accept, **self.headers, **(headers or {})}
        jar = self.cookies if cookies is None else cookies
        if jar:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in jar.items())
        async with self.client.request(
            method, path, headers=sent, allow_redirects=False, **kwargs
        ) as resp:
            reply = Reply(resp.status, resp.headers, await resp.read())
        if cookies is None:
            for cookie in reply.set_cookies:
                if cookie.expires_now or not cookie.value:
                    self.cookies.pop(cookie.name, None)
                else:
                    self.cookies[cookie.name] = cookie.value
        return reply

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("POST", path, **kwargs)

    async def login_page(self, rd: str | None = None, **kwargs: Any) -> Reply:
        params = {"rd": rd} if rd is not None else None
        reply = await self.get(LOGIN, params=params, **kwargs)
        assert reply.status == 200, reply
        return reply

    async def csrf(self) -> str:
        """The CSRF token from a fresh login page (fetched now)."""
        return (await self.login_page()).page.field("csrf")

    async def form_login(
        self, username: str, password: str | None = None, *, rd: str | None = None, **kwargs: Any
    ) -> Reply:
        """Open the login page, then submit its form (as a person would)."""
        token = (await self.login_page(rd)).page.field("csrf")
        return await self.submit_login(username, password, csrf=token, rd=rd, **kwargs)

    async def submit_login(
        self,
        username: str,
        password: str | None = None,
        *,
        csrf: str | None,
        rd: str | None = None,
        **kwargs: Any,
    ) -> Reply:
        """POST the login form as it is (no page fetched first)."""
        form = {"username": username, "password": _password(username, password)}
        if csrf is not None:
            form["csrf"] = csrf
        if rd is not None:
            form["rd"] = rd
        return await self.post(LOGIN, data=form, **kwargs)

    async def json_login(self, username: str, password: str | None = None, **kwargs: Any) -> Reply:
        body = {"username": username, "password": _password(username, password)}
        return await self.post(LOGIN, json=body, accept=JSON, **kwargs)

    async def userinfo(self, **kwargs: Any) -> Reply:
        return await self.get(USERINFO, accept=JSON, **kwargs)


def _password(username: str, password: str | None) -> str:
    return PASSWORDS[username] if password is None else password


SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
