"""Login, logout and userinfo endpoints (CONTRACT section 3)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs, quote

from aiohttp import web
from multidict import CIMultiDict

from gateway import metrics, pages
from gateway.errors import (
    BadRequest,
    ClientStalled,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
)
from gateway.forwarded import foreign_origin, resolve_client
from gateway.identity.cookies import (
    csrf_token,
    csrf_valid,
    expired_session_cookie,
    session_cookie,
    session_cookie_value,
)
from gateway.identity.resolve import ANONYMOUS, Identity, resolve_identity
from gateway.identity.sessions import SessionStoreUnavailable
from gateway.identity.users import User
from gateway.proxy import send_continue
from gateway.redirects import safe_redirect
from gateway.runtime import Runtime

log = logging.getLogger("gateway.login")

LOGIN_PATH = "/.gateway/login"
MAX_FORM_BYTES = 16 * 1024
FAILURE_MESSAGE = "Invalid username or password."


class _CsrfFailure(Forbidden):
    public_message = "The form expired or came from another site. Please try again."
    reason = "csrf"


def user_json(user: User) -> dict[str, Any]:
    return {
        "username": user.username,
        "name": user.name,
        "email": user.email,
        "roles": sorted(user.roles),
    }


def _is_json(request: web.BaseRequest) -> bool:
    return request.content_type == "application/json"


def _failure_json() -> web.Response:
    # One answer whatever went wrong: unknown user, wrong password, locked out.
    return pages.render_json(401, {"error": "invalid_credentials", "message": FAILURE_MESSAGE})


def _check_origin(request: web.BaseRequest, runtime: Runtime) -> None:
    # SECURITY: browsers send Origin on every cross-site POST; only our own pages may post here.
    origin = foreign_origin(request, runtime.settings.server.public_url)
    if origin is not None:
        raise _CsrfFailure(f"POST from foreign origin {origin[:100]!r}", reason="foreign_origin")


async def _read_small_body(request: web.BaseRequest, timeout_s: float) -> bytes:
    length = request.content_length
    if length is not None and length > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"login body of {length} bytes", reason="login_body_too_large")
    await send_continue(request)
    data = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_any():
                data += chunk
                if len(data) > MAX_FORM_BYTES:
                    raise PayloadTooLarge("login body too large", reason="login_body_too_large")
    except TimeoutError:
        raise ClientStalled("login body not sent in time", reason="client_stalled") from None
    return bytes(data)


def _parse_form(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=16
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("undecodable form", reason="bad_form") from None
    return {name: values[0] for name, values in fields.items()}


def _parse_json(body: bytes) -> dict[str, str]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; [[[[... recurses
        raise BadRequest("login body is not JSON", reason="bad_json") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), str) for key in ("username", "password")
    ):
        raise BadRequest('expected {"username": ..., "password": ...}', reason="bad_json")
    fields = {"username": data["username"], "password": data["password"]}
    _require_encodable(fields)
    return fields


def _require_encodable(fields: dict[str, str]) -> None:
    # JSON can carry lone surrogates ("\ud800") that no store, hash or log can encode.
    for value in fields.values():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("credentials are not valid UTF-8", reason="bad_json") from None


def _login_page(
    request: web.BaseRequest,
    runtime: Runtime,
    *,
    rd: str,
    status: int = 200,
    error: str = "",
    username: str = "",
) -> web.Response:
    token, set_csrf = csrf_token(request, runtime.settings)
    response = pages.render_page(
        "login.html",
        status=status,
        title=runtime.settings.login.title,
        error=pages.Markup(
            f'<p class="error" role="alert">{pages.escape(error)}</p>' if error else ""
        ),
        csrf=token,
        rd=rd,
        username=username,
    )
    if set_csrf is not None:
        response.headers.add("Set-Cookie", set_csrf)
    return response


async def login_page(request: web.BaseRequest, runtime: Runtime) -> web.StreamResponse:
    """GET (and HEAD): the login form; with a live session, who is signed in, "continue" (to
    ``rd``) and "sign out". GET never ends a session: a link checker or an ``<img>`` pointing
    here must not sign anyone out."""
    rd = safe_redirect(request.query.get("rd"))
    try:
        resolved = await resolve_identity(request, runtime, now=time.time())
    except SessionStoreUnavailable:
        resolved = ANONYMOUS  # the form still shows; signing in will say the store is down
    identity = resolved.identity
    if identity is not None and identity.session is not None:
        token, set_csrf = csrf_token(request, runtime.settings)
        response = pages.render_page(
            "signed_in.html",
            title=runtime.settings.login.title,
            username=identity.user.username,
            rd=rd,
            csrf=token,
        )
        if set_csrf is not None:
            response.headers.add("Set-Cookie", set_csrf)
    else:
        response = _login_page(request, runtime, rd=rd)
    if resolved.set_cookie is not None:
        response.headers.add("Set-Cookie", resolved.set_cookie)
    return response


async def login_submit(request: web.BaseRequest, runtime: Runtime) -> web.StreamResponse:
    """POST: form or JSON credentials -> a new session."""
    settings = runtime.settings
    _check_origin(request, runtime)
    as_json = _is_json(request)
    body = await _read_small_body(request, runtime.settings.server.timeouts.body_s)
    fields = _parse_json(body) if as_json else _parse_form(body)
    rd = safe_redirect(fields.get("rd"))
    if not as_json and not csrf_valid(request, settings, fields.get("csrf", "")):
        # A stale form is common (the CSRF cookie expired with the browser session): show a
        # fresh form rather than a bare error page.
        client_ip = resolve_client(request, settings.server.trusted_proxies).ip
        _auth_event("refused (no valid CSRF token)", fields.get("username", ""), client_ip, "csrf")
        return _login_page(request, runtime, rd=rd, status=403, error=_CsrfFailure.public_message)
    username = fields.get("username", "")
    user = await _authenticate(request, runtime, username, fields.get("password", ""))
    if user is None:
        if as_json:
            return _failure_json()
        return _login_page(
            request, runtime, rd=rd, status=401, error=FAILURE_MESSAGE, username=username
        )
    headers: CIMultiDict[str] = CIMultiDict()
    # SECURITY: session fixation: whatever session the browser had ends; a new id is issued.
    await _end_session(request, runtime, headers, clear_cookie=False)
    cookie_value, _ = await runtime.sessions.create(
        user.username, now=time.time(), stamp=user.stamp
    )
    headers.add(
        "Set-Cookie",
        session_cookie(settings, cookie_value, max_age_s=settings.session.absolute_timeout_s),
    )
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


async def _authenticate(
    request: web.BaseRequest, runtime: Runtime, username: str, password: str
) -> User | None:
    """The user, or ``None`` for any failure: unknown, wrong password, or locked out."""
    client = resolve_client(request, runtime.settings.server.trusted_proxies)
    keys = (f"user:{username.casefold()}", f"ip:{throttle_address(client.ip)}")
    return await _attempt(runtime, keys, username, password, client.ip)


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


async def _attempt(
    runtime: Runtime, keys: tuple[str, str], username: str, password: str, client_ip: str
) -> User | None:
    # SECURITY: the attempt is counted before the password is checked, in one atomic step with
    # the lockout check: a burst of concurrent guesses, at one replica or several, meets the
    # limit exactly as a sequence would.
    allowed = await runtime.throttle.reserve(keys, now=time.time())
    # SECURITY: verify even when locked out, so a lockout cannot be told apart by timing.
    user = await runtime.users.authenticate(username, password)
    if not allowed:
        metrics.LOGIN_ATTEMPTS.labels("locked").inc()
        _auth_event("refused (locked out)", username, client_ip, "locked_out")
        return None
    if user is None:
        metrics.LOGIN_ATTEMPTS.labels("failure").inc()
        await runtime.throttle.failure(keys, now=time.time())
        _auth_event("failed", username, client_ip, "bad_credentials")
        return None
    metrics.LOGIN_ATTEMPTS.labels("success").inc()
    await runtime.throttle.success(keys)
    return user


async def _end_session(
    request: web.BaseRequest,
    runtime: Runtime,
    headers: CIMultiDict[str],
    *,
    clear_cookie: bool = True,
) -> None:
    value = session_cookie_value(request, runtime.settings)
    if value is None:
        return
    ended = await runtime.sessions.delete(value)
    if ended is not None:
        # Tokens minted for the session must not outlive it in the cache, nor its WebSockets.
        runtime.tokens.drop_session(ended.sid_hash)
        sid_hash = ended.sid_hash
        await runtime.sockets.close_where(lambda entry: entry.sid_hash == sid_hash)
    if clear_cookie:
        headers.add("Set-Cookie", expired_session_cookie(runtime.settings))


async def logout_page(request: web.BaseRequest, runtime: Runtime) -> web.StreamResponse:
    """GET: a page with a logout button. GET never logs out (link prefetchers, img tags)."""
    identity = (await resolve_identity(request, runtime, now=time.time())).identity
    who = (
        f"You are signed in as {identity.user.username}."
        if identity is not None
        else "You are not signed in."
    )
    token, set_csrf = csrf_token(request, runtime.settings)
    response = pages.render_page("logout.html", who=who, csrf=token)
    if set_csrf is not None:
        response.headers.add("Set-Cookie", set_csrf)
    return response


async def logout_submit(request: web.BaseRequest, runtime: Runtime) -> web.StreamResponse:
    """POST: end the session server-side, expire the cookie, Clear-Site-Data."""
    _check_origin(request, runtime)
    as_json = _is_json(request)
    body = await _read_small_body(request, runtime.settings.server.timeouts.body_s)
    # SECURITY: a cross-site page can post a form but cannot send application/json without a
    # CORS preflight we never grant, so JSON needs no token; forms do.
    if not as_json and not csrf_valid(request, runtime.settings, _parse_form(body).get("csrf", "")):
        raise _CsrfFailure("logout form without a valid CSRF token")
    headers: CIMultiDict[str] = CIMultiDict({"Clear-Site-Data": '"cookies"'})
    await _end_session(request, runtime, headers, clear_cookie=False)
    headers.add("Set-Cookie", expired_session_cookie(runtime.settings))
    log.info("logout", extra={"reason": "logout"})
    if as_json:
        response = web.Response(status=204, headers=pages.SECURITY_HEADERS)
    else:
        response = web.Response(
            status=303, headers={"Location": LOGIN_PATH, **pages.SECURITY_HEADERS}
        )
    response.headers.extend(headers)
    return response


async def userinfo(request: web.BaseRequest, runtime: Runtime) -> web.StreamResponse:
    """GET: the current identity as JSON; 401 without one."""
    now = time.time()
    resolved = await resolve_identity(request, runtime, now=now)
    identity = resolved.identity
    if identity is None:
        response = pages.unauthenticated_json(Unauthenticated.public_message)
    else:
        response = pages.render_json(200, _identity_json(identity, runtime))
    if resolved.set_cookie is not None:
        response.headers.add("Set-Cookie", resolved.set_cookie)
    return response


def _identity_json(identity: Identity, runtime: Runtime) -> dict[str, Any]:
    body: dict[str, Any] = {"user": user_json(identity.user)}
    session = identity.session
    if session is not None:
        timeouts = runtime.settings.session
        expires = min(
            session.created_at + timeouts.absolute_timeout_s,
            session.last_seen_at + timeouts.idle_timeout_s,
        )
        body["session"] = {"created_at": int(session.created_at), "expires_at": int(expires)}
    return body


async def api_token(request: web.BaseRequest, runtime: Runtime) -> web.StreamResponse:
    """POST /.gateway/token: JSON credentials -> a bearer token for API clients."""
    if not runtime.settings.tokens.api_tokens.enabled:
        raise NotFound("API tokens are not enabled", reason="no_endpoint")
    if not _is_json(request):
        raise BadRequest("expected application/json credentials", reason="bad_json")
    _check_origin(request, runtime)
    fields = _parse_json(await _read_small_body(request, runtime.settings.server.timeouts.body_s))
    user = await _authenticate(request, runtime, fields["username"], fields["password"])
    if user is None:
        return _failure_json()
    token, expires_in = runtime.tokens.api_token(user, now=time.time())
    log.info("api token issued", extra={"reason": "api_token", "user": user.username})
    return pages.render_json(
        200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}
    )
