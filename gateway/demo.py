"""``gateway demo``: the gateway from ``config.example.yaml`` in front of a bundled demo upstream.

Both run in one process and one event loop: the demo upstream listens where the example config's
``app`` upstream points (``127.0.0.1:9000``) and answers every path with a page showing what it
received: method, path, query, every header, the ``X-Auth-*`` headers, and the JWT decoded and
verified against the gateway's JWKS. The gateway listens on ``server.listen`` (``127.0.0.1:8080``).

The example configuration is package data (``gateway/config.example.yaml``, a link to the file at
the root of the repository in a checkout), so the demo runs from a wheel installed anywhere. It
then keeps ``server.data_dir`` in a temporary directory, removed when the demo stops: the
installed package is no place to write a key, nor is the folder the user happens to be in.

Public API: :func:`demo_main` (the command), :func:`run_demo` (the same, awaitable, with ports
that tests can override) and :func:`demo_upstream_app` (the upstream alone).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import hashlib
import html
import json
import logging
import signal
import sys
import tempfile
import time
import types
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any, Final, TextIO

import aiohttp
import jwt
from aiohttp import web
from yarl import URL

import gateway
from gateway.access import Decision, decide_access
from gateway.app import Gateway
from gateway.bundle import Bundle, build
from gateway.config import ConfigError, load_settings
from gateway.config.settings import AccessSettings, Settings
from gateway.identity.users import User, UserDirectory
from gateway.listener import Listener
from gateway.routing import RouteTable

__all__ = [
    "ANY_PORT",
    "DEMO_PASSWORDS",
    "DemoError",
    "demo_main",
    "demo_upstream_app",
    "find_example_config",
    "run_demo",
]

log = logging.getLogger("gateway.demo")

DEMO_PASSWORDS: Final[Mapping[str, str]] = types.MappingProxyType(
    {"alice": "wonderland", "bob": "builder"}
)
"""The demo users' passwords: they match the comments (and hashes) in ``config.example.yaml``."""

EXAMPLE_CONFIG = "config.example.yaml"
"""The example configuration's file name, in the package (and at the root of a checkout)."""
ANY_PORT: Final = 0
"""``upstream_port`` value that lets the demo upstream listen on any free port."""
DEMO_UPSTREAM = "app"
"""The upstream of the example configuration that the demo app stands in for."""
TRY_PATHS: Final = ("/", "/admin", "/api/v1/hello", "/static/app.css")
"""Paths suggested to the user (and linked from the demo page)."""

_STOP_TIMEOUT_S = 2.0
_JWKS_MAX_AGE_S = 300.0
_JWKS_TIMEOUT_S = 5.0


class DemoError(Exception):
    """The demo cannot start; the message is one line for the user (no traceback needed)."""


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def find_example_config() -> Path:
    """The package's ``config.example.yaml`` (in a checkout, the repository's own: the package
    holds a link to it). Raises :class:`DemoError` when the installation lacks it."""
    packaged = Path(gateway.__file__).parent / EXAMPLE_CONFIG
    if not packaged.is_file():
        raise DemoError(
            f"{packaged} is missing: the gateway is installed without its package data; "
            "reinstall it from a wheel or a checkout"
        )
    return packaged.resolve()


def demo_main(
    *,
    config_path: Path | None = None,
    gateway_port: int | None = None,
    upstream_port: int | None = None,
) -> int:
    """``gateway demo``: serve the demo until SIGINT/SIGTERM; returns the exit code.

    0 after a signal; 1 with a one-line message on stderr when the demo cannot start (the
    example config is missing or invalid, a port is busy). See :func:`run_demo` for the
    parameters (all default to the example configuration's values; ``upstream_port``
    :data:`ANY_PORT` picks a free one).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
    try:
        asyncio.run(
            run_demo(
                config_path=config_path, gateway_port=gateway_port, upstream_port=upstream_port
            )
        )
    except DemoError as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a SIGINT before the handlers were installed
        return 0
    return 0


async def run_demo(
    *,
    config_path: Path | None = None,
    gateway_port: int | None = None,
    upstream_port: int | None = None,
    out: TextIO | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Serve the gateway and the demo upstream in this event loop until stopped.

    ``config_path``: the configuration to serve (default :func:`find_example_config`, then
    with a temporary ``server.data_dir``); its ``upstreams.app`` is where the demo upstream
    listens. ``gateway_port`` / ``upstream_port`` override the ports of ``server.listen`` (and
    ``public_url``) and of ``upstreams.app.url``; ``upstream_port`` :data:`ANY_PORT` lets the
    system pick a free port for the upstream.
    Prints the URL, the demo credentials and paths to try to ``out`` (default stdout), then
    serves until ``stop`` is set or, with ``handle_signals``, SIGINT or SIGTERM arrives (a
    cancelled task stops too). Raises :class:`DemoError` when it cannot start, e.g. a busy port.
    """
    out = sys.stdout if out is None else out
    path = find_example_config() if config_path is None else config_path
    any_port = upstream_port == ANY_PORT
    settings = demo_settings(
        path, gateway_port=gateway_port, upstream_port=None if any_port else upstream_port
    )
    upstream_url = URL(settings.upstreams[DEMO_UPSTREAM].url)
    upstream_host = upstream_url.host or "127.0.0.1"
    server = settings.server
    stop = asyncio.Event() if stop is None else stop

    async with contextlib.AsyncExitStack() as stack:
        if config_path is None:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-demo-"))
            server = dataclasses.replace(server, data_dir=Path(data_dir))
            settings = dataclasses.replace(settings, server=server)
        jwks_url = f"{_local_origin(server.listen_host, server.listen_port)}/.gateway/jwks.json"
        upstream = demo_upstream_app(
            jwks_url, token_header=settings.tokens.header, issuer=settings.tokens.issuer
        )
        wanted = ANY_PORT if any_port else upstream_url.port or 80
        bound = await _serve(stack, upstream, upstream_host, wanted, "the demo upstream")
        if bound != upstream_url.port:
            settings = _with_upstream_port(settings, bound)
            upstream_url = URL(settings.upstreams[DEMO_UPSTREAM].url)
        try:
            bundle = build(settings, generate_key=True)
        except ConfigError as exc:
            issues = "; ".join(str(issue) for issue in exc.issues)
            raise DemoError(f"{path}: invalid configuration: {issues}") from None
        gateway = Gateway(bundle)
        stack.push_async_callback(gateway.close)
        listener = Listener(gateway.handle, server.timeouts, plain=gateway.handle_plain)
        stack.push_async_callback(listener.stop)
        host, port = server.listen_host, server.listen_port
        try:
            await listener.start(host, port)
        except OSError as exc:
            raise _listen_error(exc, host, port, "the gateway") from None
        _print_banner(out, bundle, path, upstream_url)
        if handle_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
                stack.callback(loop.remove_signal_handler, signum)
        await stop.wait()
        print("gateway demo: stopping", file=out, flush=True)


def demo_settings(
    path: Path, *, gateway_port: int | None = None, upstream_port: int | None = None
) -> Settings:
    """The settings the demo serves: ``path`` loaded, with the ports overridden when given.

    Raises :class:`DemoError` for an invalid file or one without an ``app`` upstream on
    plain http.
    """
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        issues = "; ".join(str(issue) for issue in exc.issues)
        raise DemoError(f"{path}: invalid configuration: {issues}") from None
    upstream = settings.upstreams.get(DEMO_UPSTREAM)
    if upstream is None or URL(upstream.url).scheme != "http":
        raise DemoError(f'{path}: the demo needs an http upstream named "{DEMO_UPSTREAM}"')
    server = settings.server
    if gateway_port is not None:
        public_url = str(URL(server.public_url).with_port(gateway_port)).rstrip("/")
        server = dataclasses.replace(server, listen_port=gateway_port, public_url=public_url)
        tokens = settings.tokens
        if tokens.issuer == settings.server.public_url:  # the default: follows public_url
            tokens = dataclasses.replace(tokens, issuer=public_url)
        settings = dataclasses.replace(settings, server=server, tokens=tokens)
    if upstream_port is not None:
        settings = _with_upstream_port(settings, upstream_port)
    return settings


def _with_upstream_port(settings: Settings, port: int) -> Settings:
    upstream = settings.upstreams[DEMO_UPSTREAM]
    url = str(URL(upstream.url).with_port(port)).rstrip("/")
    upstreams = dict(settings.upstreams)
    upstreams[DEMO_UPSTREAM] = dataclasses.replace(upstream, url=url)
    return dataclasses.replace(settings, upstreams=types.MappingProxyType(upstreams))


def _local_origin(host: str, port: int) -> str:
    """Where this process reaches its own listener (a wildcard address means loopback)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - not binding, mapping a wildcard to loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(
    stack: contextlib.AsyncExitStack, app: web.Application, host: str, port: int, what: str
) -> int:
    """Serve ``app`` on ``host:port`` until ``stack`` closes; returns the port it listens on
    (the one the system picked for :data:`ANY_PORT`)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_STOP_TIMEOUT_S)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        raise _listen_error(exc, host, port, what) from None
    bound: int = runner.addresses[0][1]
    return bound


def _listen_error(exc: OSError, host: str, port: int, what: str) -> DemoError:
    if exc.errno == errno.EADDRINUSE:
        return DemoError(
            f"port {port} on {host} is already in use, so {what} cannot listen there "
            "(is another gateway or demo running? `gateway demo --port N` picks other ports)"
        )
    return DemoError(f"{what} cannot listen on {host}:{port}: {exc.strerror or exc}")


def _print_banner(out: TextIO, bundle: Bundle, config: Path, upstream_url: URL) -> None:
    public_url = bundle.settings.server.public_url
    users = bundle.users
    lines = [
        f"gateway demo: open {public_url}/",
        f"  config     {config}",
        f"  upstream   demo app on {upstream_url} (shows the headers and JWT it receives)",
        "",
        "Sign in as:",
    ]
    width = max((len(user.username) for user in users), default=0)
    for user in users:
        password = DEMO_PASSWORDS.get(user.username, "(password not known to the demo)")
        roles = ", ".join(sorted(user.roles)) or "none"
        lines.append(f"  {user.username:<{width}} / {password:<12} roles: {roles}")
    table = bundle.routes
    host = URL(public_url).host_port_subcomponent or ""
    tries = [(public_url + path, _who_may(table, host, path, users)) for path in TRY_PATHS]
    tries.append((f"{public_url}/.gateway/logout", "sign out"))
    width = max(len(url) for url, _ in tries)
    lines += ["", "Try:", *(f"  {url:<{width}}  {who}" for url, who in tries)]
    lines += ["", "Press Ctrl+C to stop."]
    print("\n".join(lines), file=out, flush=True)


def _who_may(table: RouteTable, host: str, path: str, users: UserDirectory) -> str:
    """Who may GET ``path``, by the real route table and access rules."""
    route = table.match("GET", host, path)
    if route is None:
        return "no route: 404"
    access = route.access
    if access.kind == "public":
        return f"anyone (route {route.name})"
    if access.kind == "deny":
        return f"nobody (route {route.name})"
    allowed = [
        _why(user, access)
        for user in users
        if decide_access(access, user.username, user.roles) is Decision.ALLOW
    ]
    who = ", ".join(allowed) if allowed else "none of the demo users"
    return f"{who} (route {route.name})"


def _why(user: User, access: AccessSettings) -> str:
    if user.username in access.users:
        return f"{user.username} by name"
    roles = sorted(access.roles & user.roles)
    if roles:
        return f"{user.username} by role {', '.join(roles)}"
    return user.username


# --------------------------------------------------------------------------------------------
# The demo upstream
# --------------------------------------------------------------------------------------------


class _Jwks:
    """The gateway's public keys, fetched with aiohttp (never blocking the loop the gateway
    itself may share) and cached; fetched again for an unknown kid or after five minutes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: aiohttp.ClientSession | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")

    async def key(self, kid: str) -> jwt.PyJWK:
        stale = time.monotonic() - self._fetched_at > _JWKS_MAX_AGE_S
        if stale or kid not in self._keys:
            await self._fetch()
        key = self._keys.get(kid)
        if key is None:
            raise LookupError(
                f"kid {kid!r} is not in the JWKS at {self.url} (HS256 keys are never published)"
            )
        return key

    async def _fetch(self) -> None:
        if self.session is None:
            raise LookupError("the JWKS client is not running")
        try:
            async with self.session.get(self.url) as response:
                if response.status != 200:
                    raise LookupError(f"GET {self.url} answered {response.status}")
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise LookupError(f"cannot fetch the JWKS from {self.url}: {exc!r}") from None
        try:
            keyset = jwt.PyJWKSet.from_dict(document)
        except (jwt.PyJWKSetError, jwt.PyJWKError) as exc:
            raise LookupError(f"unusable JWKS at {self.url}: {exc}") from None
        self._keys = {key.key_id: key for key in keyset.keys if key.key_id is not None}
        self._fetched_at = time.monotonic()


@dataclasses.dataclass(frozen=True, slots=True)
class _Options:
    token_header: str
    issuer: str | None
    links: tuple[str, ...]


_JWKS: Final = web.AppKey("gateway.demo.jwks", _Jwks)
_OPTIONS: Final = web.AppKey("gateway.demo.options", _Options)


def demo_upstream_app(
    jwks_url: str,
    *,
    token_header: str = "Authorization",  # noqa: S107 - a header name, not a secret
    issuer: str | None = None,
    links: Sequence[str] = TRY_PATHS,
) -> web.Application:
    """The demo upstream: answers every method and path with what it received.

    An HTML page by default, JSON when the client asks for ``application/json`` (and not
    ``text/html``): ``method``, ``path``, ``query``, ``headers`` (every header, as
    ``[name, value]`` pairs in order), ``identity_headers`` (the ``X-Auth-*`` ones) and
    ``token``: ``null`` without one, else ``{"header", "claims", "verified", "verification"}``
    with the JWT from ``token_header`` (``Authorization: Bearer``, or the bare token in any
    other header) decoded, and its signature, ``exp``/``nbf``/``iat`` and, when ``issuer`` is
    given, ``iss`` verified against the keys at ``jwks_url``. ``aud`` is shown, not checked:
    a real upstream must also check that it is its own audience. ``links``: paths the page
    links to.
    """
    app = web.Application()
    jwks = _Jwks(jwks_url)
    app[_JWKS] = jwks
    app[_OPTIONS] = _Options(token_header=token_header, issuer=issuer, links=tuple(links))

    async def client_session(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=_JWKS_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            jwks.session = session
            yield
            jwks.session = None

    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/{tail:.*}", _show)
    return app


async def _show(request: web.Request) -> web.Response:
    options = request.app[_OPTIONS]
    data = await _received(request, request.app[_JWKS], options)
    accept = request.headers.get("Accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return web.json_response(data, headers={"Cache-Control": "no-store"})
    return web.Response(
        text=_render_page(data, options.links),
        content_type="text/html",
        headers=_PAGE_HEADERS,
    )


async def _received(request: web.Request, jwks: _Jwks, options: _Options) -> dict[str, Any]:
    path, _, query = request.raw_path.partition("?")
    headers = list(request.headers.items())
    return {
        "method": request.method,
        "path": path,
        "query": query,
        "headers": [[name, value] for name, value in headers],
        "identity_headers": {
            name: value for name, value in headers if name.lower().startswith("x-auth-")
        },
        "token_header": options.token_header,
        "token": await _token(request, jwks, options),
    }


async def _token(request: web.Request, jwks: _Jwks, options: _Options) -> dict[str, Any] | None:
    name = options.token_header
    value = request.headers.get(name)
    if value is None:
        return None
    token = value.strip()
    if name.lower() == "authorization":
        scheme, _, token = token.partition(" ")
        if scheme.lower() != "bearer":
            return {"error": f"{name} is not a Bearer token", "verified": False}
        token = token.strip()
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        return {"error": f"not a JWT: {exc}", "verified": False}
    result: dict[str, Any] = {"header": header, "claims": claims}
    kid = header.get("kid")
    try:
        if not isinstance(kid, str):
            raise LookupError("the JWT header has no kid")
        key = await jwks.key(kid)
        jwt.decode(
            token,
            key=key,
            algorithms=[key.algorithm_name],
            issuer=options.issuer,
            options={"verify_aud": False, "require": ["exp", "iat", "nbf", "sub"]},
        )
    except (LookupError, jwt.PyJWTError) as exc:
        result["verified"] = False
        result["verification"] = f"verification failed: {exc}"
    else:
        result["verified"] = True
        result["verification"] = f"signature verified with kid {kid} ({key.algorithm_name})"
    return result


# --- the page ---------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
main{max-width:60rem;margin:0 auto;padding:1.5rem}
h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;vertical-align:top;padding:.3rem .6rem;border-bottom:1px solid #e3e6ec}
th{width:14rem;font-weight:600;white-space:nowrap}
td,pre{font-family:ui-monospace,monospace;font-size:13px;word-break:break-all}
pre{background:#fff;padding:.8rem;margin:.3rem 0;white-space:pre-wrap;border:1px solid #e3e6ec}
.bar{display:flex;gap:1rem;flex-wrap:wrap;align-items:baseline}
.ok{color:#0a6b2b;font-weight:600}.bad{color:#a11a1a;font-weight:600}.muted{color:#5b6475}
a{color:#2557c7}
"""

_CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()}'; "
    "img-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)

_PAGE_HEADERS: Final = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gateway demo upstream</title>
<style>$style</style>
</head>
<body>
<main>
<h1>What the upstream received</h1>
<p class="bar"><span>$who</span><a href="/.gateway/logout">Sign out</a></p>
<p class="bar"><span class="muted">Try:</span>$links</p>
<h2>Request</h2>
<table>
<tr><th>method</th><td>$method</td></tr>
<tr><th>path</th><td>$path</td></tr>
<tr><th>query</th><td>$query</td></tr>
</table>
<h2>JWT in $token_header</h2>
$token
<h2>X-Auth-* headers</h2>
$identity
<h2>All headers</h2>
<table>
$headers
</table>
</main>
</body>
</html>
""")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _rows(pairs: Sequence[Sequence[str]]) -> str:
    return "\n".join(f"<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>" for name, value in pairs)


def _render_page(data: Mapping[str, Any], links: Sequence[str]) -> str:
    token: dict[str, Any] | None = data["token"]
    claims: dict[str, Any] = (token or {}).get("claims") or {}
    if token is None:
        who = "No identity: an anonymous request (or the upstream was called directly)."
        jwt_section = '<p class="muted">No token: the gateway sends one only with an identity.</p>'
    else:
        who = f"Signed in as {claims.get('sub', '?')}."
        jwt_section = _jwt_section(token)
    identity = data["identity_headers"]
    identity_html = (
        f"<table>\n{_rows(list(identity.items()))}\n</table>"
        if identity
        else '<p class="muted">None (the route\'s identity_headers is off, or no identity).</p>'
    )
    return _PAGE.substitute(
        style=_STYLE,
        who=_e(who),
        links=" ".join(f'<a href="{_e(link)}">{_e(link)}</a>' for link in links),
        method=_e(data["method"]),
        path=_e(data["path"]),
        query=_e(data["query"]) or '<span class="muted">(none)</span>',
        token_header=_e(data["token_header"]),
        token=jwt_section,
        identity=identity_html,
        headers=_rows(data["headers"]),
    )


def _jwt_section(token: Mapping[str, Any]) -> str:
    if "error" in token:
        return f'<p class="bad">{_e(token["error"])}</p>'
    status = "ok" if token["verified"] else "bad"
    parts = [f'<p class="{status}">{_e(token["verification"])}</p>']
    claims: dict[str, Any] = token["claims"]
    exp = claims.get("exp")
    if isinstance(exp, int):
        left = exp - int(time.time())
        when = f"expires in {left} s" if left >= 0 else f"expired {-left} s ago"
        parts.append(f'<p class="muted">{_e(when)}; the gateway mints a fresh one as needed.</p>')
    parts.append(f"<h3>header</h3>\n<pre>{_e(json.dumps(token['header'], indent=2))}</pre>")
    parts.append(f"<h3>claims</h3>\n<pre>{_e(json.dumps(claims, indent=2))}</pre>")
    return "\n".join(parts)
