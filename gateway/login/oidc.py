"""The OpenID Connect endpoints (CONTRACT section 3): start a sign-in at a provider, finish it at
the callback, and back-channel logout.

Sign-in is the authorization code flow with PKCE (S256). ``state`` and ``nonce`` are bound to
the browser by the sealed sign-in cookie (:mod:`gateway.oidc.state`); the callback accepts a
``state`` once, exchanges the code, verifies the ID token (:mod:`gateway.oidc.verify`), maps
the identity (:mod:`gateway.oidc.claims`), and starts our own session under a new id. Every
failure answers an error page saying what the user can do, logs a reason (never a code, a token
or a secret) and starts no session.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

from aiohttp import web

from gateway import metrics, pages
from gateway.forwarded import ClientInfo
from gateway.identity.cookies import SessionCookie, request_cookie
from gateway.identity.sessions import SessionManager
from gateway.identity.users import UserDirectory
from gateway.login.forms import parse_form, read_small_body
from gateway.oidc import Provider, Providers
from gateway.oidc.claims import ClaimsError, admits, map_identity
from gateway.oidc.provider import ProviderError
from gateway.oidc.replay import ReplayGuard
from gateway.oidc.state import STATE_TTL_S, Pending, StateCookie
from gateway.oidc.verify import (
    LEEWAY_S,
    LOGOUT_TOKEN_MAX_AGE_S,
    TokenRejected,
    verify_id_token,
    verify_logout_token,
)
from gateway.redirects import safe_redirect
from gateway.tokens import Tokens
from gateway.websockets import OpenWebSockets

log = logging.getLogger("gateway.login")

Handler = Callable[[web.BaseRequest, ClientInfo], Awaitable[web.StreamResponse]]

OIDC_PREFIX = "/.gateway/oidc/"
CALLBACK_PATH = "/.gateway/oidc/callback"

_EXPIRED = "This sign-in expired or was started in another browser. Please sign in again."
_UNVERIFIED = "The identity provider's answer could not be verified. Please sign in again."
_REFUSED = "The identity provider did not complete the sign-in. Please sign in again."
_NOT_ALLOWED = "Your account is not allowed to sign in here."
_TOO_LARGE = (
    "Your account cannot sign in here: its details at the identity provider (such as its "
    "groups) are too large for a session. Please ask the administrator."
)


def start_path(name: str) -> str:
    return f"{OIDC_PREFIX}{name}/start"


def backchannel_path(name: str) -> str:
    return f"{OIDC_PREFIX}{name}/backchannel-logout"


class SignInFailed(Exception):
    """One way a sign-in fails: the page's status and message, the log's reason."""

    def __init__(self, status: int, message: str, *, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.status = status
        self.message = message
        self.reason = reason


class OidcLogin:
    """The endpoints of every provider of ``login.oidc``."""

    def __init__(
        self,
        *,
        providers: Providers,
        users: UserDirectory,
        sessions: SessionManager,
        tokens: Tokens,
        sockets: OpenWebSockets,
        cookie: SessionCookie,
        state_cookie: StateCookie,
        replay: ReplayGuard,
        public_url: str,
        body_timeout_s: float,
    ) -> None:
        self._providers = providers
        self._users = users
        self._sessions = sessions
        self._tokens = tokens
        self._sockets = sockets
        self._cookie = cookie
        self._state = state_cookie
        self._replay = replay
        self._public_url = public_url
        self._redirect_uri = public_url + CALLBACK_PATH
        self._body_timeout_s = body_timeout_s

    @property
    def state_cookie_name(self) -> str:
        return self._state.name

    def routes(self) -> dict[str, dict[str, Handler]]:
        """The endpoints by path and method (see :func:`gateway.endpoints.public_endpoints`)."""
        table: dict[str, dict[str, Handler]] = {CALLBACK_PATH: {"GET": self.callback}}
        for provider in self._providers:
            name = provider.name

            async def start(
                request: web.BaseRequest, client: ClientInfo, name: str = name
            ) -> web.StreamResponse:
                return await self.start(request, client, name)

            async def backchannel(
                request: web.BaseRequest, client: ClientInfo, name: str = name
            ) -> web.StreamResponse:
                return await self.backchannel_logout(request, client, name)

            table[start_path(name)] = {"GET": start}
            table[backchannel_path(name)] = {"POST": backchannel}
        return table

    # --- start ---------------------------------------------------------------------------------

    async def start(
        self, request: web.BaseRequest, client: ClientInfo, name: str
    ) -> web.StreamResponse:
        """GET: 302 to the provider's authorization endpoint, with the sign-in cookie."""
        provider = self._providers.get(name)
        assert provider is not None
        try:
            await _usable(provider)
        except SignInFailed as failure:
            return self._failed(request, client, failure, provider=name)
        metadata = provider.metadata
        assert metadata is not None
        # SECURITY: rd is validated as for the local login, now and again at the callback.
        pending = Pending.begin(name, safe_redirect(request.query.get("rd")), now=time.time())
        query = urlencode(
            {
                "response_type": "code",
                "client_id": provider.settings.client_id,
                "redirect_uri": self._redirect_uri,
                "scope": " ".join(provider.settings.scopes),
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": pending.challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = metadata.authorization_endpoint
        location = f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
        return web.Response(
            status=302,
            headers={
                "Location": location,
                "Set-Cookie": self._state.set(pending),
                **pages.SECURITY_HEADERS,
            },
        )

    # --- callback ------------------------------------------------------------------------------

    async def callback(self, request: web.BaseRequest, client: ClientInfo) -> web.StreamResponse:
        """GET: the provider's redirect back: verify, exchange, verify, start our session."""
        pending = self._state.open(request_cookie(request, self._state.name), now=time.time())
        try:
            response = await self._finish(request, client, pending)
        except SignInFailed as failure:
            provider = pending.provider if pending is not None else ""
            return self._failed(request, client, failure, provider=provider)
        response.headers.add("Set-Cookie", self._state.expired())
        return response

    async def _finish(
        self, request: web.BaseRequest, client: ClientInfo, pending: Pending | None
    ) -> web.StreamResponse:
        query = request.query
        if pending is None:
            raise SignInFailed(400, _EXPIRED, reason="oidc_no_state")
        provider = self._providers.get(pending.provider)
        if provider is None:
            raise SignInFailed(400, _EXPIRED, reason="oidc_unknown_provider")
        state = query.get("state", "")
        # SECURITY: the state must be the one sealed in THIS browser's cookie (login CSRF, a
        # code injected from another browser); compared in constant time.
        if not hmac.compare_digest(state.encode("utf-8", "surrogatepass"), pending.state.encode()):
            raise SignInFailed(400, _EXPIRED, reason="oidc_state_mismatch")
        issuer = query.get("iss")
        iss_promised = provider.metadata is not None and provider.metadata.iss_parameter
        if (issuer is not None or iss_promised) and issuer != provider.settings.issuer:
            # SECURITY: RFC 9207: the answer comes from another provider (mix-up attack); one
            # that promises iss and sends none may be that other provider too (2.4).
            raise SignInFailed(400, _UNVERIFIED, reason="oidc_iss_mismatch")
        if not await self._replay.first_use("state", pending.state, ttl_s=STATE_TTL_S):
            raise SignInFailed(400, _EXPIRED, reason="oidc_state_replayed")
        error = query.get("error")
        if error is not None:
            shown = json.dumps(error[:64])
            raise SignInFailed(403, _REFUSED, reason="oidc_provider_error", detail=shown)
        code = query.get("code")
        if not code:
            raise SignInFailed(400, _REFUSED, reason="oidc_no_code")
        await _usable(provider)
        try:
            answer = await provider.exchange_code(
                code, verifier=pending.verifier, redirect_uri=self._redirect_uri
            )
        except ProviderError as exc:
            status = 503 if exc.reason == "oidc_unavailable" else 400
            raise SignInFailed(status, _REFUSED, reason=exc.reason, detail=str(exc)) from None
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise SignInFailed(400, _UNVERIFIED, reason="oidc_no_id_token")
        now = time.time()
        try:
            claims = await verify_id_token(provider, id_token, nonce=pending.nonce, now=now)
            username, login = map_identity(provider.settings, claims, id_token=id_token)
        except TokenRejected as exc:
            raise SignInFailed(400, _UNVERIFIED, reason=exc.reason, detail=str(exc)) from None
        except ClaimsError as exc:
            raise SignInFailed(
                403, _NOT_ALLOWED, reason="oidc_bad_claims", detail=str(exc)
            ) from None
        if username in self._users:
            # SECURITY: a provider user never becomes a local user of the same name (whose
            # rules, sessions and revocations would then be theirs).
            raise SignInFailed(
                403, _NOT_ALLOWED, reason="oidc_username_taken", detail=json.dumps(username)
            )
        if not admits(provider.settings.allowed, username, login):
            raise SignInFailed(
                403, _NOT_ALLOWED, reason="oidc_not_allowed", detail=json.dumps(username[:256])
            )
        # SECURITY: session fixation: whatever session the browser had ends; a new id is issued.
        previous = self._cookie.value(request)
        if previous is not None:
            ended = await self._sessions.delete(previous)
            if ended is not None:
                await self._forget([ended.sid_hash])
        try:
            value, _ = await self._sessions.create(username, now=now, provider=login)
        except ValueError:
            # The cookie backend: the identity does not fit in a cookie even without the ID
            # token (many or long roles).
            raise SignInFailed(
                403, _TOO_LARGE, reason="oidc_identity_too_large", detail=json.dumps(username)
            ) from None
        metrics.LOGIN_ATTEMPTS.labels("success").inc()
        log.info(
            "login at %s",
            provider.name,
            extra={"reason": "oidc_login_ok", "user": username, "client_ip": client.ip},
        )
        rd = safe_redirect(pending.rd)
        if self._cookie.strict:
            # The provider's redirect started this navigation on another site: a Strict cookie
            # set now is not sent with a redirect to rd, but is with a navigation our own page
            # starts.
            response = pages.render_page(
                "continue.html", title="Signed in", username=username, rd=rd
            )
        else:
            location = quote(rd, safe="/?&=#%:@!$'()*+,;~-._[]")
            response = web.Response(
                status=303, headers={"Location": location, **pages.SECURITY_HEADERS}
            )
        response.headers.add(
            "Set-Cookie", self._cookie.set(value, max_age_s=self._sessions.absolute_s)
        )
        return response

    def _failed(
        self, request: web.BaseRequest, client: ClientInfo, failure: SignInFailed, *, provider: str
    ) -> web.Response:
        metrics.LOGIN_ATTEMPTS.labels("failure").inc()
        log.warning(
            "sign-in at %s refused: %s",
            json.dumps(provider[:64]),
            failure,
            extra={"reason": failure.reason, "event": "auth", "client_ip": client.ip},
        )
        response = pages.render_error(
            request, failure.status, failure.message, code="sign_in_failed"
        )
        response.headers.add("Set-Cookie", self._state.expired())
        return response

    # --- back-channel logout -------------------------------------------------------------------

    async def backchannel_logout(
        self, request: web.BaseRequest, client: ClientInfo, name: str
    ) -> web.StreamResponse:
        """POST ``logout_token=...`` from the provider: end the sessions of its sid or sub."""
        provider = self._providers.get(name)
        assert provider is not None
        body = await read_small_body(request, self._body_timeout_s)
        token = parse_form(body).get("logout_token", "")
        try:
            await _usable(provider)
            claims = await verify_logout_token(provider, token, now=time.time())
            # SECURITY: each logout token counts once (its jti), for as long as it could be
            # accepted at all.
            fresh = await self._replay.first_use(
                "jti",
                f"{provider.settings.issuer}\x00{claims['jti']}",
                ttl_s=LOGOUT_TOKEN_MAX_AGE_S + 3 * LEEWAY_S,
            )
            if not fresh:
                raise TokenRejected("logout token replayed", reason="oidc_logout_token_replayed")
        except (TokenRejected, SignInFailed) as exc:
            log.warning(
                "back-channel logout from %s refused: %s",
                name,
                exc,
                extra={"reason": exc.reason, "client_ip": client.ip},
            )
            return pages.render_json(400, {"error": "invalid_request"})
        sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None
        subject = claims.get("sub") if isinstance(claims.get("sub"), str) else None
        ended = await self._sessions.delete_provider_sessions(
            name, sid=sid or None, subject=subject, now=time.time()
        )
        await self._forget(ended)
        log.info(
            "back-channel logout from %s ended %d session(s)",
            name,
            len(ended),
            extra={"reason": "oidc_backchannel_logout"},
        )
        return web.Response(status=200, headers={"Cache-Control": "no-store"})

    async def _forget(self, sid_hashes: list[str]) -> None:
        """What this process holds for ended sessions: cached tokens, open WebSockets."""
        if not sid_hashes:
            return
        ended = set(sid_hashes)
        for sid_hash in ended:
            self._tokens.drop_session(sid_hash)
        await self._sockets.close_where(lambda entry: entry.sid_hash in ended)


async def _usable(provider: Provider) -> None:
    """The provider is discovered (trying once more now if not), else :class:`SignInFailed`."""
    # Not before its retry time: a stream of clicks must not hammer a provider that is down.
    if provider.available or (time.monotonic() >= provider.retry_at and await provider.discover()):
        return
    message = (
        f"{provider.settings.label} is not available right now: the identity provider cannot "
        "be reached. Please try again later."
    )
    raise SignInFailed(503, message, reason="oidc_unavailable")
