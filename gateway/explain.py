"""``gateway explain METHOD URL [--user NAME] [--header "Name: value" ...]``: what the gateway
would do with one request.

Everything is decided by the pipeline that serves requests, never by a copy of it: the request's
facts go through :func:`gateway.plan.locate` and :func:`gateway.plan.decide` exactly as
``gateway run`` sends them (Host grammar, path normalisation, the reserved prefix, route
matching, access, the WebSocket origin check, the login answer, the prefix stripped), and the JWT
is minted by the real :class:`gateway.tokens.TokenMinter` (for a stand-in session, with keys
loaded without writing anything to disk). Nothing is sent anywhere; no secret (password hash,
key) is printed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import jwt
from multidict import CIMultiDict

from gateway.bundle import Bundle
from gateway.config.settings import RouteSettings
from gateway.config.values import HTTP_TOKEN, did_you_mean
from gateway.describe import describe_access, describe_match
from gateway.headers import header_tokens
from gateway.identity.sessions.base import Session
from gateway.identity.users import User
from gateway.oidc.claims import ClaimsError, admits, map_identity, provider_user
from gateway.plan import (
    RESERVED_PREFIX,
    Caller,
    Facts,
    Login,
    Own,
    Refusal,
    Routed,
    decide,
    locate,
)
from gateway.tokens import GENERATED_KEY_NAME, TokenMinter
from gateway.tokens.upstream import token_audience_ttl, x_auth_headers

__all__ = ["STAND_IN_SID_HASH", "explain"]

STAND_IN_SID_HASH = "explain-stand-in-session-not-a-real-sid-hash"
"""The ``sid_hash`` of the session tokens are minted for: obviously not a real one (those are
64 hex digits), so the ``sid`` claim shown can never match a live session's."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
"""Default ports: browsers leave them out of ``Host``, so routes never see them."""

Lines = list[tuple[str, str]]


def explain(
    bundle: Bundle,
    method: str,
    url: str,
    *,
    user: str | None = None,
    headers: Sequence[str] = (),
    now: float | None = None,
    idp: str | None = None,
    claims: Sequence[str] = (),
) -> str:
    """Describe what the gateway would do with ``METHOD URL`` for ``user`` (None: anonymous;
    else signed in with a session, as a browser is).

    ``url`` is an absolute ``http(s)://host[:port]/path?query`` URL (the Host routes match on is
    taken from it, without the scheme's default port, as browsers send it) or a path starting
    with ``/``, which is taken relative to ``server.public_url``. The path is taken byte-exact,
    as a client would send it (no client-side clean-up); a fragment is ignored, as clients never
    send one. ``headers`` (``"Name: value"``) are request headers that take part in the
    decision: ``Host`` (instead of the URL's), ``Accept`` (a browser navigation),
    ``Origin``, ``Upgrade`` and ``Connection`` (a WebSocket handshake). ``now`` (Unix time,
    default the current time) dates the JWT shown.

    With ``idp`` (a provider of ``login.oidc``) the caller signed in at that OpenID Connect
    provider instead: ``claims`` (``"name=value"``, a name given twice makes a list) are the
    claims of its ID token, mapped through the provider's ``claims:`` as at sign-in (``user``,
    when given, is the username claim); a caller the provider's ``allowed`` rules refuse gets
    no session.

    Returns the report: aligned ``key: value`` lines giving the normalised path (or the 400
    refusing the request), the route that matches (or 404), the decision (``allow``, ``deny
    (403)``, ``login required`` with what an anonymous caller gets), the upstream URL that would
    be called, the headers the gateway adds, and the JWT header and claims it would send.

    Raises :class:`ValueError` with a message for the user: a malformed method, URL or header,
    an unknown ``user``.
    """
    settings = bundle.settings
    method = method.upper()
    if not HTTP_TOKEN.fullmatch(method):
        raise ValueError(f"invalid HTTP method {method!r}")
    target = _parse_url(url, settings.server.public_url)
    sent = _parse_headers(headers)
    refused_at_sign_in = None
    if idp is not None:
        caller, refused_at_sign_in = _provider_caller(bundle, idp, user, claims)
    elif claims:
        raise ValueError("--claim needs --idp: the provider whose ID token holds the claims")
    else:
        caller = _find_user(bundle, user) if user is not None else None
    facts = _facts(method, target, sent)
    lines: Lines = [("request", f"{method} {target.display}")]
    lines.extend((name.lower(), value) for name, value in sent.items())
    if refused_at_sign_in is not None:
        lines.append(("sign-in", refused_at_sign_in))

    located = locate(facts, bundle.routes)
    if isinstance(located, Refusal):
        error = located.error
        if error.reason == "bad_host":
            lines.append(("host", facts.host))
            lines.append(
                ("result", f"400: {error} ({error.reason}); refused before any route is tried")
            )
        elif error.status == 404:
            lines.append(("path", facts.raw_path))
            lines.append(("host", facts.host))
            lines.append(("result", "404: no route matches"))
        else:
            lines.append(("path", facts.raw_path))
            lines.append(
                (
                    "result",
                    f"{error.status}: {error} ({error.reason}); refused before any route is tried",
                )
            )
        return _render(lines)
    path = located.path
    shown = path if path == facts.raw_path else f"{path} (normalised from {facts.raw_path})"
    lines.append(("path", shown))
    if facts.query:
        lines.append(("query", f"{facts.query} (never takes part in matching)"))
    if isinstance(located, Own):
        lines.append(
            (
                "result",
                f"served by the gateway itself ({RESERVED_PREFIX} is reserved, never proxied)",
            )
        )
        return _render(lines)

    route = located.route
    index = settings.routes.index(route)
    lines.append(("route", f"{route.name} (routes[{index}]: {describe_match(route.match)})"))
    lines.append(("access", describe_access(route.access)))
    if caller is None:
        lines.append(("user", "anonymous (no session)"))
    else:
        roles = ", ".join(sorted(caller.roles)) or "none"
        signed_in = f", signed in at {caller.idp}" if caller.idp is not None else ""
        lines.append(("user", f"{caller.username} (roles: {roles}{signed_in})"))

    who = Caller(caller.username, caller.roles, by_session=True) if caller is not None else None
    decision = decide(located, facts, who, public_url=settings.server.public_url)
    if isinstance(decision, Refusal):
        error = decision.error
        if error.reason == "websocket_origin":
            lines.append(("decision", f"refused (403): {error}"))
        else:
            lines.append(("decision", "deny (403)"))
        lines.append(("token", "none: the request never reaches the upstream"))
        return _render(lines)
    if isinstance(decision, Own):
        lines.append(("decision", "login required, but not asked for (a file fetched unasked)"))
        lines.append(
            (
                "result",
                f"served by the gateway itself: its own {decision.path}, never a login "
                f"redirect or 401 for an anonymous GET or HEAD of {path} (a public route "
                "would pass the upstream's)",
            )
        )
        lines.append(("token", "none: the request never reaches the upstream"))
        return _render(lines)
    if isinstance(decision, Login):
        lines.append(("decision", "login required"))
        public_url = settings.server.public_url
        accept_given = "Accept" in sent
        lines.extend(
            _unauthenticated(route, located, facts, decision, public_url, accept_given=accept_given)
        )
        lines.append(("token", "none: the request never reaches the upstream"))
        return _render(lines)

    lines.append(("decision", "allow"))
    upstream = settings.upstreams[route.upstream]
    upstream_url = (
        upstream.url + decision.upstream_path + ("?" + facts.query if facts.query else "")
    )
    lines.append(("upstream", f"{upstream.name}: {method} {upstream_url}"))
    if decision.prefix:
        lines.append(
            (
                "",
                f"strip_prefix {route.strip_prefix} removed; X-Forwarded-Prefix: {decision.prefix}",
            )
        )
    if caller is None:
        lines.append(("token", "none: an anonymous caller is forwarded without identity"))
        return _render(lines)
    lines.extend(_identity_lines(bundle, route, caller, time.time() if now is None else now))
    return _render(lines)


def _parse_headers(headers: Sequence[str]) -> CIMultiDict[str]:
    parsed: CIMultiDict[str] = CIMultiDict()
    for header in headers:
        name, colon, value = header.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not HTTP_TOKEN.fullmatch(name):
            raise ValueError(f'expected a header as "Name: value", got {header!r}')
        if any(ord(char) < 0x20 and char != "\t" for char in value):
            raise ValueError(f"control characters in the value of {name}")
        parsed.add(name, value)
    return parsed


def _facts(method: str, target: _Target, sent: CIMultiDict[str]) -> Facts:
    """The request's facts as the server reads them from the request line and headers."""
    upgrade = sent.get("Upgrade")
    websocket = (
        method == "GET"
        and upgrade is not None
        and "websocket" in header_tokens((upgrade,))
        and "upgrade" in header_tokens(sent.getall("Connection", ()))
    )
    return Facts(
        method=method,
        raw_path=target.raw_path,
        query=target.query,
        host=sent.get("Host", target.host),
        browser="text/html" in sent.get("Accept", ""),
        websocket=websocket,
        origin=sent.get("Origin"),
    )


class _Target:
    __slots__ = ("display", "host", "query", "raw_path")

    def __init__(self, display: str, host: str, raw_path: str, query: str) -> None:
        self.display = display
        self.host = host
        self.raw_path = raw_path
        self.query = query


def _parse_url(url: str, public_url: str) -> _Target:
    """Split ``url`` the way a request line is split: byte-exact, without clean-up."""
    if url.startswith("/"):
        origin = public_url
        rest = url
    else:
        scheme, sep, after = url.partition("://")
        if not sep or scheme.lower() not in _DEFAULT_PORTS:
            raise ValueError(f"expected an http(s):// URL or a path starting with /, got {url!r}")
        cut = min((i for i in (after.find(c) for c in "/?#") if i != -1), default=len(after))
        origin, rest = f"{scheme.lower()}://{after[:cut]}", after[cut:]
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid URL {url!r}: {exc}") from None
    netloc = parts.netloc.rpartition("@")[2]  # a user:password@ part never reaches Host
    if not parts.hostname or any(c.isspace() or ord(c) < 0x20 for c in netloc):
        raise ValueError(f"invalid URL {url!r}: no valid host")
    host = netloc
    if port is not None and port == _DEFAULT_PORTS[parts.scheme]:
        host = netloc[: netloc.rfind(":")]
    rest = rest.partition("#")[0]
    raw_path, _, query = rest.partition("?")
    # An empty path is "/" on the request line (RFC 9112 3.2.1).
    raw_path = raw_path or "/"
    display = f"{parts.scheme}://{host}{raw_path}" + (f"?{query}" if query else "")
    return _Target(display, host, raw_path, query)


def _find_user(bundle: Bundle, username: str) -> User:
    users = bundle.users
    found = users.get(username)
    if found is None:
        known = users.usernames()
        listed = ", ".join(known) if known else "none configured"
        raise ValueError(
            f"unknown user {username!r}{did_you_mean(username, known)}; known users: {listed}"
        )
    return found


def _provider_caller(
    bundle: Bundle, idp: str, user: str | None, given: Sequence[str]
) -> tuple[User | None, str | None]:
    """The caller a provider's ID token with ``given`` claims makes, or ``None`` and why the
    sign-in would be refused."""
    settings = bundle.settings.login
    provider = settings.provider(idp)
    if provider is None:
        known = [p.name for p in settings.oidc]
        listed = ", ".join(known) if known else "none configured"
        raise ValueError(
            f"unknown provider {idp!r}{did_you_mean(idp, known)}; login.oidc has: {listed}"
        )
    claims: dict[str, Any] = {}
    for item in given:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise ValueError(f'expected a claim as "name=value", got {item!r}')
        typed: Any = {"true": True, "false": False}.get(value, value)
        if name in claims:
            previous = claims[name]
            claims[name] = [*previous, typed] if isinstance(previous, list) else [previous, typed]
        elif name == provider.claims.roles:
            claims[name] = [typed]
        else:
            claims[name] = typed
    if user is not None:
        claims.setdefault(provider.claims.username, user)
    claims.setdefault("sub", claims.get(provider.claims.username))
    try:
        username, login = map_identity(provider, claims)
    except ClaimsError as exc:
        raise ValueError(f"these claims make no identity: {exc}") from None
    if username in bundle.users:
        return None, f"refused: {username!r} is a local user's name (anonymous below)"
    if not admits(provider.allowed, username, login):
        index = settings.oidc.index(provider)
        return None, f"refused by login.oidc[{index}].allowed (anonymous below)"
    return provider_user(username, login), None


def _unauthenticated(
    route: RouteSettings,
    located: Routed,
    facts: Facts,
    decision: Login,
    public_url: str,
    *,
    accept_given: bool,
) -> Lines:
    """What an anonymous caller gets, as :func:`gateway.plan.decide` answers it; for
    ``unauthenticated: auto`` on a GET without an ``Accept`` header, both answers."""
    status = '401 {"error": "unauthenticated"} with WWW-Authenticate: Bearer realm="gateway"'

    def answer(login: Login) -> str:
        return f"302 to {login.redirect}" if login.redirect is not None else status

    if route.unauthenticated != "auto":
        return [("anonymous", f"{answer(decision)} (unauthenticated: {route.unauthenticated})")]
    if facts.method not in ("GET", "HEAD"):
        return [("anonymous", f"{answer(decision)} (unauthenticated: auto, not a GET/HEAD)")]
    if accept_given:
        kind = "a browser navigation" if facts.browser else "not a browser navigation"
        return [("anonymous", f"{answer(decision)} (unauthenticated: auto, {kind})")]
    as_browser = decide(located, facts.navigating(True), None, public_url=public_url)
    as_client = decide(located, facts.navigating(False), None, public_url=public_url)
    assert isinstance(as_browser, Login) and isinstance(as_client, Login)
    return [
        ("anonymous", "unauthenticated: auto:"),
        ("", f"browser navigation (Accept: text/html): {answer(as_browser)}"),
        ("", f"other clients: {answer(as_client)}"),
    ]


def _identity_lines(bundle: Bundle, route: RouteSettings, user: User, now: float) -> Lines:
    settings = bundle.settings
    tokens = settings.tokens
    # Loaded without generate_key: without a key file yet, an in-memory key signs.
    keyset = bundle.keys
    minter = TokenMinter(keyset, tokens)
    stand_in = Session(
        sid_hash=STAND_IN_SID_HASH, username=user.username, created_at=now, last_seen_at=now
    )
    audience, ttl_s = token_audience_ttl(tokens, route)
    try:
        token = minter.mint_upstream(user, stand_in, audience=audience, ttl_s=ttl_s, now=now)
    except ValueError as exc:
        return [("token", f"cannot be minted: {exc}")]
    header: dict[str, Any] = jwt.get_unverified_header(token)
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})

    lines: Lines = []
    if tokens.header.lower() == "authorization":
        sent = [f"{tokens.header}: Bearer <the JWT below>"]
    else:
        sent = [f"{tokens.header}: <the JWT below>"]
    sent.extend(f"{name}: {value}" for name, value in x_auth_headers(route, user).items())
    lines.extend(_block("sends", sent))
    aud_from = "route token.audience" if route.token.audience else "the upstream's name"
    ttl_from = "route token.ttl" if route.token.ttl_s else "tokens.ttl"
    lifetime = claims["exp"] - claims["iat"]
    lines.append(("jwt", f"aud {audience} ({aud_from}), lifetime {lifetime}s ({ttl_from})"))
    lines.extend(_block("jwt header", _pretty(header)))
    lines.extend(_block("jwt claims", _pretty(claims)))
    notes = ["sid comes from a stand-in session: every real session has its own"]
    if keyset.ephemeral:
        key_file = settings.server.data_dir / GENERATED_KEY_NAME
        notes.append(
            f"no signing key generated yet ({key_file} is created by `gateway run`): "
            "the kid shown is a placeholder"
        )
    lines.extend(_block("note", notes))
    return lines


def _pretty(value: dict[str, Any]) -> list[str]:
    """A JSON object, one member per line (lists stay on their member's line)."""
    members = [
        f"  {json.dumps(key)}: {json.dumps(item, ensure_ascii=False)}"
        for key, item in value.items()
    ]
    return ["{", *(line + "," for line in members[:-1]), *members[-1:], "}"]


def _block(key: str, values: Sequence[str]) -> Lines:
    return [(key if i == 0 else "", value) for i, value in enumerate(values)]


def _render(lines: Lines) -> str:
    width = max(len(key) for key, _ in lines) + 2
    out = []
    for key, value in lines:
        label = f"{key}:" if key else ""
        out.append(f"{label:<{width}}{value}".rstrip())
    return "\n".join(out) + "\n"
