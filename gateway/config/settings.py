"""Validated, frozen settings: what the rest of the gateway reads.

Built only by :mod:`gateway.config.loader`; nothing changes them after start-up except an explicit,
atomic reload that builds a whole new :class:`Settings`. Units are in the names (``_s`` seconds,
``_bytes`` bytes).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SessionBackend = Literal["memory", "redis", "cookie"]
SameSite = Literal["strict", "lax", "none"]
AccessLog = Literal["json", "text", "off"]
AccessKind = Literal["public", "authenticated", "deny", "rules"]
Unauthenticated = Literal["auto", "redirect", "status"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTimeouts:
    """``server.timeouts``: how long a client may keep the gateway waiting."""

    request_header_s: float = 10.0
    """The whole request head (request line and headers) must arrive within this."""
    keepalive_s: float = 75.0
    """An idle keep-alive connection is closed after this."""
    body_s: float = 60.0
    """A client that sends no request-body bytes this long is dropped (408)."""
    send_s: float = 60.0
    """A client that accepts no response bytes this long is dropped (its upstream freed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    listen_host: str
    listen_port: int
    public_url: str
    """Origin users reach, without a trailing slash, e.g. ``https://app.example.com``."""
    admin_listen: tuple[str, int] | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    workers: int = 1
    shutdown_grace_s: float = 10.0
    data_dir: Path = Path(".gateway")
    access_log: AccessLog = "json"
    timeouts: ClientTimeouts = ClientTimeouts()

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisSettings:
    url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    """May carry a password (from ``password``/``password_file``): never logged."""
    key_prefix: str = "gw:"
    timeout_s: float = 0.5
    """One store operation (connect included); slower counts as the store being unavailable."""
    cache: bool = True
    """Keep sessions read from Redis in the process while Redis reports every write to them
    (:mod:`gateway.identity.sessions.tracking`)."""
    cache_max_staleness_s: float = 1.0
    """A cached session is served only if Redis confirmed this recently that everything it
    wrote before has been reported."""
    cache_max_entries: int = 100_000
    cache_max_age_s: float = 10.0
    """A kept session is read from Redis again this long after it was read, reported or not
    (Redis reports no ``SWAPDB``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CookieStoreSettings:
    secret: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSettings:
    backend: SessionBackend = "memory"
    cookie_name: str = "gw_session"
    same_site: SameSite = "lax"
    idle_timeout_s: float = 1800.0
    absolute_timeout_s: float = 28800.0
    redis: RedisSettings = RedisSettings()
    cookie: CookieStoreSettings = CookieStoreSettings()


@dataclass(frozen=True, slots=True, kw_only=True)
class UserEntry:
    username: str
    password_hash: str = field(repr=False)
    name: str | None = None
    email: str | None = None
    roles: tuple[str, ...] = ()
    disabled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UsersSettings:
    file: Path | None = None
    htpasswd: Path | None = None
    entries: tuple[UserEntry, ...] = ()
    """Every user of every source, in order (inline, file, htpasswd), each username once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottleSettings:
    max_failures: int = 5
    window_s: float = 300.0
    lockout_s: float = 900.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OidcClaimsSettings:
    """``login.oidc[].claims``: which claim of the provider fills each part of our identity."""

    username: str = "preferred_username"
    """Falls back to ``sub`` when the provider does not send it."""
    email: str = "email"
    name: str = "name"
    roles: str = "groups"
    """A list claim (a single string counts as a list of one); its values become roles."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OidcAllowedSettings:
    """``login.oidc[].allowed``: who may sign in through the provider (any one rule admits);
    nothing listed: anyone the provider signs in."""

    email_domains: tuple[str, ...] = ()
    """Lower-case domain names; an email counts only with ``email_verified: true``."""
    users: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()

    @property
    def restricted(self) -> bool:
        return bool(self.email_domains or self.users or self.roles)


@dataclass(frozen=True, slots=True, kw_only=True)
class OidcProviderSettings:
    """One entry of ``login.oidc``: an external OpenID Connect provider to sign in through."""

    name: str
    """``[a-z0-9-]+``: in the provider's URLs under ``/.gateway/oidc/`` and the session's idp."""
    label: str
    """The text of its button on the login page."""
    issuer: str
    """Exactly as the provider's discovery document states it."""
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    """``None``: a public client (PKCE alone, no client authentication)."""
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    claims: OidcClaimsSettings = OidcClaimsSettings()
    allowed: OidcAllowedSettings = OidcAllowedSettings()


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginSettings:
    title: str = "Sign in"
    throttle: ThrottleSettings = ThrottleSettings()
    oidc: tuple[OidcProviderSettings, ...] = ()
    """External OpenID Connect providers, in the order their buttons are shown."""

    def provider(self, name: str) -> OidcProviderSettings | None:
        return next((p for p in self.oidc if p.name == name), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeySettings:
    """One configured key: a PEM private key file, or an HMAC secret (HS256)."""

    file: Path | None = None
    hmac_secret: bytes | None = field(default=None, repr=False)
    kid: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiTokenSettings:
    enabled: bool = False
    ttl_s: float = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenSettings:
    issuer: str
    ttl_s: float = 60.0
    header: str = "Authorization"
    signing_keys: tuple[SigningKeySettings, ...] = ()
    claims: tuple[str, ...] = ("name", "email", "roles")
    api_tokens: ApiTokenSettings = ApiTokenSettings()


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSettings:
    name: str
    url: str
    """Base URL without a trailing slash, e.g. ``http://127.0.0.1:9000`` or ``http://h:1/base``."""
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    preserve_host: bool = False
    max_connections: int = 100
    allow_get_body: bool = False
    """Forward a body on GET/HEAD/OPTIONS/TRACE (refused with 400 otherwise): only for upstreams
    known to read such bodies; one that ignores them reads the body as the next request."""
    keepalive_after_body: bool = False
    """Keep the connection open after a request that carried a body. False: such a request
    says ``Connection: close``, so an upstream that leaves a body unread never parses it as a
    request; true only for upstreams that read or discard every body."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchSettings:
    host: str | None = None
    """Lower-cased; exact, or ``*.example.com`` for exactly one label."""
    path: str | None = None
    path_prefix: str | None = None
    path_regex: str | None = None
    methods: frozenset[str] | None = None
    ignore_case: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessSettings:
    kind: AccessKind
    roles: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteTokenSettings:
    audience: str | None = None
    ttl_s: float | None = None


IDENTITY_CLAIMS = ("sub", "email", "name", "roles")
"""What an identity header can carry: the username, email, name, or the roles joined by ","."""

DEFAULT_IDENTITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Auth-User", "sub"),
    ("X-Auth-Email", "email"),
    ("X-Auth-Roles", "roles"),
)
"""What ``identity_headers: true`` sends."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSettings:
    name: str
    match: MatchSettings
    upstream: str
    access: AccessSettings
    token: RouteTokenSettings = RouteTokenSettings()
    accept_bearer: bool = False
    unauthenticated: Unauthenticated = "auto"
    identity_headers: tuple[tuple[str, str], ...] = ()
    """``(header, claim)`` pairs sent with an identity: ``identity_headers: true`` is
    :data:`DEFAULT_IDENTITY_HEADERS`, a mapping names its own headers (claims: see
    :data:`IDENTITY_CLAIMS`)."""
    strip_prefix: str | None = None
    max_body_bytes: int | None = None
    websocket: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    server: ServerSettings
    session: SessionSettings
    users: UsersSettings
    login: LoginSettings
    tokens: TokenSettings
    upstreams: Mapping[str, UpstreamSettings]
    """Read-only mapping (``types.MappingProxyType``) keyed by upstream name."""
    routes: tuple[RouteSettings, ...]
    source: Path | None = None
    warnings: tuple[str, ...] = ()
    """Non-fatal findings from validation, shown by ``gateway check`` and logged at start-up."""
