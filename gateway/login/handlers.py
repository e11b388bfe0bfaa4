"""Login, logout, userinfo and API token endpoints (CONTRACT section 3)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from aiohttp import web
from multidict import CIMultiDict

from gateway import metrics, pages
from gateway.auth import ANONYMOUS, Chain, Identity
from gateway.config.settings import LoginSettings, SessionSettings
from gateway.errors import (
    AccessDenied,
    BadRequest,
    Forbidden,
    GatewayError,
    NotFound,
    Unauthenticated,
)
from gateway.forwarded import ClientInfo
from gateway.http import Incoming, foreign_origin, wants_html
from gateway.identity.cookies import SessionCookie
from gateway.identity.sessions import Session, SessionManager, SessionStoreUnavailable
from gateway.identity.sessions.base import ProviderLogin
from gateway.identity.users import User, UserDirectory
from gateway.login.csrf import Csrf
from gateway.login.forms import is_json, parse_credentials_json, parse_form, read_small_body
from gateway.login.oidc import start_path
from gateway.login.throttle import Throttle
from gateway.oidc import Providers
from gateway.redirects import safe_redirect
from gateway.tokens import Tokens
from gateway.websockets import OpenWebSockets

log = logging.getLogger("gateway.login")

LOGIN_PATH = "/.gateway/login"
FAILURE_MESSAGE = "Invalid username or password."
SIGNED_OUT_FLAG = "signed_out"
"""``/.gateway/login?signed_out=1``, where a signed-out browser lands: the page says so, in
words of its own (nothing from the URL is shown)."""


class _CsrfFailure(Forbidden):
    public_message = "The form expired or came from another site. Please try again."
    reason = "csrf"


def user_json(user: User) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "username": user.username,
        "name": user.name,
        "email": user.email,
        "roles": sorted(user.roles),
    }
    if user.idp is not None:
        shown["idp"] = user.idp
    return shown


def throttle_address(ip: str) -> str:
    """What the per-IP throttle counts: the address, or its /64 for IPv6 (one host usually
    holds a whole /64, so counting single addresses would give it 2^64 fresh tries)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return ip


def _auth_event(outcome: str, username: str, client_ip: str, reason: str) -> None:
    """One log line per refused sign-in: who tried, from where, why (never the password)."""
    shown = username if len(username) <= 256 else username[:256] + "..."
    # repr-like JSON quoting: a username cannot forge log lines.
    log.warning(
        "login %s for %s from %s",
        outcome,
        json.dumps(shown),
        client_ip,
        extra={"reason": reason, "event": "auth", "user": shown, "client_ip": client_ip},
    )


def signed_out_location(rd: str | None) -> str:
    """The login page a signed-out browser is sent to, returning to ``rd`` (made safe) when
    the form named one: "sign in as someone else" on the 403 page."""
    location = f"{LOGIN_PATH}?{SIGNED_OUT_FLAG}=1"
    if rd:
        location += "&rd=" + quote(safe_redirect(rd), safe="")
    return location


def _failure_json() -> web.Response:
    # One answer whatever went wrong: unknown user, wrong password, locked out.
    return pages.render_json(401, {"error": "invalid_credentials", "message": FAILURE_MESSAGE})


class Login:
    """The endpoints that start and end sessions and say who is signed in.

    ``who`` is the chain that recognises a signed-in browser (the session cookie);
    ``userinfo_chain`` also takes API bearer tokens when they are enabled.
    """

    def __init__(
        self,
        *,
        users: UserDirectory,
        sessions: SessionManager,
        throttle: Throttle,
        tokens: Tokens,
        sockets: OpenWebSockets,
        cookie: SessionCookie,
        csrf: Csrf,
        who: Chain,
        userinfo_chain: Chain,
        login: LoginSettings,
        session: SessionSettings,
        public_url: str,
        body_timeout_s: float,
        api_tokens: bool,
        providers: Providers | None = None,
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._throttle = throttle
        self._tokens = tokens
        self._sockets = sockets
        self._cookie = cookie
        self._csrf = csrf
        self._who = who
        self._userinfo_chain = userinfo_chain
        self._title = login.title
        self._idle_s = session.idle_timeout_s
        self._absolute_s = session.absolute_timeout_s
        self._public_url = public_url
        self._body_timeout_s = body_timeout_s
        self._api_tokens = api_tokens
        self._providers = providers if providers is not None else Providers()

    # --- pages ---------------------------------------------------------------------------------

    async def login_page(self, request: web.BaseRequest, client: ClientInfo) -> web.StreamResponse:
        """GET (and HEAD): the login form; with a live session, who is signed in, "continue" (to
        ``rd``) and "sign out". GET never ends a session: a link checker or an ``<img>``
        pointing here must not sign anyone out. ``?signed_out=1`` (where sign-out lands) adds
        "You have signed out" to the form."""
        rd = safe_redirect(request.query.get("rd"))
        try:
            found = await self._who.authenticate(request, now=time.time())
        except SessionStoreUnavailable:
            found = ANONYMOUS  # the form still shows; signing in will say the store is down
        identity = found.identity
        if identity is not None and identity.session is not None:
            response = self._page(
                request,
                "signed_in.html",
                headers=self._logout_csp(),
                title=self._title,
                username=identity.user.username,
                rd=rd,
            )
        else:
            signed_out = request.query.get(SIGNED_OUT_FLAG) == "1"
            response = self._form(request, rd=rd, signed_out=signed_out)
        if found.set_cookie is not None:
            response.headers.add("Set-Cookie", found.set_cookie)
        return response

    def _form(
        self,
        request: web.BaseRequest,
        *,
        rd: str,
        status: int = 200,
        error: str = "",
        username: str = "",
        signed_out: bool = False,
    ) -> web.Response:
        # A fixed sentence, never text from the URL: a link cannot make the page say anything.
        notice = '<p class="notice" role="status">You have signed out.</p>\n' if signed_out else ""
        # Focus where the typing goes: the password once the username is filled in (after a
        # failed attempt), which then also reads out the error.
        described = ' aria-describedby="login-error"' if error else ""
        username_attrs, password_attrs = " autofocus", ""
        if username:
            username_attrs, password_attrs = "", " autofocus" + described
        return self._page(
            request,
            "login.html",
            status=status,
            title=self._title,
            notice=pages.Markup(notice),
            error=pages.Markup(
                f'<p class="error" id="login-error" role="alert">{pages.escape(error)}</p>'
                if error
                else ""
            ),
            rd=rd,
            username=username,
            username_attrs=pages.Markup(username_attrs),
            password_attrs=pages.Markup(password_attrs),
            providers=self._provider_buttons(rd),
        )

    def _provider_buttons(self, rd: str) -> pages.Markup:
        """One button per OpenID Connect provider (a link: starting a sign-in changes nothing
        here), or a note that it is unavailable while the gateway cannot reach it."""
        if not len(self._providers):
            return pages.Markup("")
        buttons = []
        for provider in self._providers:
            label = pages.escape(provider.settings.label)
            if provider.available:
                href = pages.escape(f"{start_path(provider.name)}?{urlencode({'rd': rd})}")
                buttons.append(f'<a class="button provider" href="{href}">{label}</a>')
            else:
                buttons.append(
                    f'<span class="button unavailable" aria-disabled="true">{label} '
                    "(unavailable)</span>"
                )
        return pages.Markup(f'<div class="providers">{"".join(buttons)}</div>')

    def _end_session_url(self, login: ProviderLogin | None) -> str | None:
        """Where signing out continues for a provider user: the provider's end-session
        endpoint, with the ID token as a hint and our login page as the way back."""
        if login is None:
            return None
        provider = self._providers.get(login.idp)
        if provider is None or provider.metadata is None:
            return None
        endpoint = provider.metadata.end_session_endpoint
        if endpoint is None:
            return None
        params = {
            "client_id": provider.settings.client_id,
            # SECURITY: a fixed address of ours (registered at the provider), never a
            # parameter of the request: the way back cannot be made an open redirect.
            "post_logout_redirect_uri": self._public_url + LOGIN_PATH,
        }
        if login.id_token:
            params["id_token_hint"] = login.id_token
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"

    def _logout_csp(self) -> dict[str, str] | None:
        """A sign-out form may continue at a provider's end-session endpoint, and browsers hold
        a form's redirects to the page's ``form-action``: those origins are allowed there."""
        origins = []
        for provider in self._providers:
            endpoint = provider.metadata.end_session_endpoint if provider.metadata else None
            if endpoint is not None:
                parts = urlsplit(endpoint)
                origins.append(f"{parts.scheme}://{parts.netloc}")
        if not origins:
            return None
        csp = pages.SECURITY_HEADERS["Content-Security-Policy"].replace(
            "form-action 'self'", "form-action 'self' " + " ".join(dict.fromkeys(origins))
        )
        return {"Content-Security-Policy": csp}

    def refusal_page(self, request: Incoming, exc: GatewayError) -> web.Response:
        """The answer to a refused request. A browser signed in with a session whom a route's
        access rule refuses gets a 403 page that says who is signed in and that this account
        may not open the page, with "sign in as someone else" (ends the session, then the
        login page returning to the refused page) and "sign out": forms carrying this
        browser's CSRF token. Anything else: :func:`gateway.pages.error_response`."""
        if isinstance(exc, AccessDenied) and exc.by_session and wants_html(request):
            return self._page(
                request,
                "denied.html",
                status=exc.status,
                headers=self._logout_csp(),
                username=exc.username,
                rd=safe_redirect(exc.rd),
            )
        return pages.error_response(request, exc)

    def _page(
        self,
        request: Incoming,
        template: str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **values: str,
    ) -> web.Response:
        """One of the forms, carrying this browser's CSRF token (and the cookie that gives it
        one, when it has none yet)."""
        token, set_csrf = self._csrf.token(request)
        fields: dict[str, Any] = {**values, "csrf": token}
        response = pages.render_page(template, status=status, headers=headers, **fields)
        if set_csrf is not None:
            response.headers.add("Set-Cookie", set_csrf)
        return response

    async def login_submit(
        self, request: web.BaseRequest, client: ClientInfo
    ) -> web.StreamResponse:
        """POST: form or JSON credentials -> a new session."""
        self._check_origin(request)
        as_json = is_json(request)
        body = await read_small_body(request, self._body_timeout_s)
        fields = parse_credentials_json(body) if as_json else parse_form(body)
        rd = safe_redirect(fields.get("rd"))
        if not as_json and not self._csrf.valid(request, fields.get("csrf", "")):
            # A stale form is common (the CSRF cookie expired with the browser session): show
            # a fresh form rather than a bare error page.
            _auth_event(
                "refused (no valid CSRF token)", fields.get("username", ""), client.ip, "csrf"
            )
            return self._form(request, rd=rd, status=403, error=_CsrfFailure.public_message)
        username = fields.get("username", "")
        user = await self._attempt(client, username, fields.get("password", ""))
        if user is None:
            if as_json:
                return _failure_json()
            return self._form(request, rd=rd, status=401, error=FAILURE_MESSAGE, username=username)
        headers: CIMultiDict[str] = CIMultiDict()
        # SECURITY: session fixation: whatever session the browser had ends; a new id is issued.
        await self._end_session(request)
        cookie_value, _ = await self._sessions.create(
            user.username, now=time.time(), stamp=user.stamp
        )
        headers.add("Set-Cookie", self._cookie.set(cookie_value, max_age_s=self._absolute_s))
        log.info("login", extra={"reason": "login_ok", "user": user.username})
        if as_json:
            response = pages.render_json(200, {"user": user_json(user)})
        else:
            # rd is validated; quoting only percent-encodes non-ASCII, as a header needs.
            location = quote(rd, safe="/?&=#%:@!$'()*+,;~-._[]")
            response = web.Response(
                status=303, headers={"Location": location, **pages.SECURITY_HEADERS}
            )
        response.headers.extend(headers)
        return response

    async def logout_page(self, request: web.BaseRequest, client: ClientInfo) -> web.StreamResponse:
        """GET: who is signed in and a sign-out button; without a session, that nobody is
        signed in and a link to sign in. GET never logs out (link prefetchers, img tags)."""
        identity = (await self._who.authenticate(request, now=time.time())).identity
        if identity is None:
            return pages.render_page("not_signed_in.html")
        return self._page(
            request, "logout.html", headers=self._logout_csp(), username=identity.user.username
        )

    async def logout_submit(
        self, request: web.BaseRequest, client: ClientInfo
    ) -> web.StreamResponse:
        """POST: end the session server-side, expire the cookie, Clear-Site-Data. A form is
        sent to the login page saying "You have signed out" (returning to the form's ``rd``,
        if it has one)."""
        self._check_origin(request)
        as_json = is_json(request)
        body = await read_small_body(request, self._body_timeout_s)
        form = {} if as_json else parse_form(body)
        # SECURITY: a cross-site page can post a form but cannot send application/json without
        # a CORS preflight we never grant, so JSON needs no token; forms do.
        if not as_json and not self._csrf.valid(request, form.get("csrf", "")):
            raise _CsrfFailure("logout form without a valid CSRF token")
        ended = await self._end_session(request)
        headers = {"Clear-Site-Data": '"cookies"', "Set-Cookie": self._cookie.expired()}
        log.info("logout", extra={"reason": "logout"})
        if as_json:
            response = web.Response(status=204, headers=pages.SECURITY_HEADERS)
        else:
            # A provider user's sign-out continues at the provider (RP-initiated logout).
            provider_logout = self._end_session_url(ended.provider if ended is not None else None)
            location = provider_logout or signed_out_location(form.get("rd"))
            response = web.Response(
                status=303, headers={"Location": location, **pages.SECURITY_HEADERS}
            )
        response.headers.extend(headers)
        return response

    # --- JSON ----------------------------------------------------------------------------------

    async def userinfo(self, request: web.BaseRequest, client: ClientInfo) -> web.StreamResponse:
        """GET: the current identity (session cookie, or API bearer token when those are
        enabled) as JSON; 401 without one."""
        found = await self._userinfo_chain.authenticate(request, now=time.time())
        identity = found.identity
        if identity is None:
            response = pages.unauthenticated_json(Unauthenticated.public_message)
        else:
            response = pages.render_json(200, self._identity_json(identity))
        if found.set_cookie is not None:
            response.headers.add("Set-Cookie", found.set_cookie)
        return response

    def _identity_json(self, identity: Identity) -> dict[str, Any]:
        body: dict[str, Any] = {"user": user_json(identity.user)}
        session = identity.session
        if session is not None:
            expires = min(
                session.created_at + self._absolute_s, session.last_seen_at + self._idle_s
            )
            body["session"] = {"created_at": int(session.created_at), "expires_at": int(expires)}
        return body

    async def api_token(self, request: web.BaseRequest, client: ClientInfo) -> web.StreamResponse:
        """POST /.gateway/token: JSON credentials -> a bearer token for API clients."""
        if not self._api_tokens:
            raise NotFound("API tokens are not enabled", reason="no_endpoint")
        if not is_json(request):
            raise BadRequest("expected application/json credentials", reason="bad_json")
        self._check_origin(request)
        fields = parse_credentials_json(await read_small_body(request, self._body_timeout_s))
        user = await self._attempt(client, fields["username"], fields["password"])
        if user is None:
            return _failure_json()
        token, expires_in = self._tokens.api_token(user, now=time.time())
        log.info("api token issued", extra={"reason": "api_token", "user": user.username})
        return pages.render_json(
            200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}
        )

    # --- the steps -----------------------------------------------------------------------------

    def _check_origin(self, request: web.BaseRequest) -> None:
        # SECURITY: browsers send Origin on every cross-site POST; only our own pages may post.
        origin = foreign_origin(request, self._public_url)
        if origin is not None:
            raise _CsrfFailure(
                f"POST from foreign origin {origin[:100]!r}", reason="foreign_origin"
            )

    async def _attempt(self, client: ClientInfo, username: str, password: str) -> User | None:
        """The user, or ``None`` for any failure: unknown, wrong password, or locked out."""
        keys = (f"user:{username.casefold()}", f"ip:{throttle_address(client.ip)}")
        # SECURITY: the attempt is counted before the password is checked, in one atomic step
        # with the lockout check: a burst of concurrent guesses, at one replica or several,
        # meets the limit exactly as a sequence would.
        allowed = await self._throttle.reserve(keys, now=time.time())
        if not allowed:
            # A locked-out attempt costs no hash, so a storm of them burns no CPU; it takes
            # about as long as one, so a lockout is not told apart by timing.
            await asyncio.sleep(self._users.verification_s)
            metrics.LOGIN_ATTEMPTS.labels("locked").inc()
            _auth_event("refused (locked out)", username, client.ip, "locked_out")
            return None
        user = await self._users.authenticate(username, password)
        if user is None:
            metrics.LOGIN_ATTEMPTS.labels("failure").inc()
            await self._throttle.failure(keys, now=time.time())
            _auth_event("failed", username, client.ip, "bad_credentials")
            return None
        metrics.LOGIN_ATTEMPTS.labels("success").inc()
        await self._throttle.success(keys)
        return user

    async def _end_session(self, request: web.BaseRequest) -> Session | None:
        """End the browser's session, if any; the session that ended."""
        value = self._cookie.value(request)
        if value is None:
            return None
        ended = await self._sessions.delete(value)
        if ended is not None:
            # Tokens minted for the session must not outlive it in the cache, nor its sockets.
            self._tokens.drop_session(ended.sid_hash)
            sid_hash = ended.sid_hash
            await self._sockets.close_where(lambda entry: entry.sid_hash == sid_hash)
        return ended
