"""The ``session:`` section: store backend, cookie attributes, timeouts."""

from __future__ import annotations

from typing import Any, cast, get_args
from urllib.parse import quote, urlsplit

from gateway.config import files, values
from gateway.config.errors import describe
from gateway.config.reader import Section
from gateway.config.settings import (
    CookieStoreSettings,
    RedisSettings,
    SameSite,
    ServerSettings,
    SessionBackend,
    SessionSettings,
)
from gateway.config.units import format_duration

KEYS = ("backend", "cookie_name", "same_site", "idle_timeout", "absolute_timeout", "redis",
        "cookie")
REDIS_KEYS = ("url", "url_file", "password", "password_file", "key_prefix", "timeout", "cache")
REDIS_CACHE_KEYS = ("enabled", "max_staleness", "max_age", "max_entries")
COOKIE_KEYS = ("secret_file",)

MIN_SECRET_BYTES = 32
# Browsers cap cookie lifetimes at 400 days (RFC 6265bis); a longer session would end early.
MAX_ABSOLUTE_TIMEOUT_S = 400 * 86400.0


def build_session(root: Section, server: ServerSettings) -> SessionSettings:
    """Validate ``session:`` against ``server`` (https decides cookie defaults and prefixes)."""
    section = root.section("session", KEYS)
    ctx = section.ctx
    backend = cast(
        SessionBackend, section.get("backend", "memory", values.choice(*get_args(SessionBackend)))
    )
    same_site = cast(SameSite, section.get("same_site", "lax", values.choice(*get_args(SameSite))))
    known_scheme = bool(server.public_url)  # "" when public_url itself was invalid
    default_name = "__Host-gw_session" if server.https else "gw_session"
    cookie_name = section.get("cookie_name", default_name, _cookie_name)
    if known_scheme and not server.https:
        # Browsers recognise the prefixes in any letter case.
        lowered = cookie_name.lower()
        prefix = next((p for p in ("__Host-", "__Secure-") if lowered.startswith(p.lower())), None)
        if prefix:
            ctx.error(
                section.at("cookie_name"),
                f'"{cookie_name}": browsers accept a {prefix} cookie only with Secure, which '
                "needs an https server.public_url",
            )
        if same_site == "none":
            ctx.warn(
                section.at("same_site"),
                '"none" with an http public_url: browsers will drop the cookie',
            )
    if backend == "memory" and server.workers > 1:
        ctx.error(
            section.at("backend"),
            f'"memory" cannot be used with server.workers = {server.workers}: sessions would not '
            "be shared between worker processes; use redis or cookie",
        )
    if backend == "cookie" and server.workers > 1:
        ctx.warn(
            section.at("backend"),
            f'"cookie" with server.workers = {server.workers}: a logout is remembered only by '
            "the worker that handled it, so the old cookie keeps working on the others (and "
            "after a restart) until it expires; use redis for logouts that hold everywhere",
        )
    idle = section.get("idle_timeout", 1800.0, values.duration(positive=True))
    absolute = section.get(
        "absolute_timeout", 28800.0, values.duration(positive=True, maximum=MAX_ABSOLUTE_TIMEOUT_S)
    )
    if idle > absolute:
        ctx.error(
            section.at("idle_timeout"),
            f"must not be longer than session.absolute_timeout ({format_duration(absolute)}), "
            f"got {format_duration(idle)}",
        )
    cookie_section = section.section("cookie", COOKIE_KEYS)
    if backend == "cookie" and not cookie_section.has("secret_file") and not cookie_section.broken:
        ctx.error(
            cookie_section.at("secret_file"),
            'required when session.backend is "cookie": the key that seals session cookies',
        )
    return SessionSettings(
        backend=backend,
        cookie_name=cookie_name,
        same_site=same_site,
        idle_timeout_s=idle,
        absolute_timeout_s=absolute,
        redis=_redis(section.section("redis", REDIS_KEYS)),
        cookie=_cookie_store(cookie_section),
    )


def _cookie_name(value: Any) -> str:
    name = values.string(value)
    if not values.HTTP_TOKEN.fullmatch(name):
        raise values.Invalid(
            f"expected a cookie name (letters, digits and !#$%&'*+-.^_`|~), got {describe(value)}"
        )
    return name


def _cookie_store(section: Section) -> CookieStoreSettings:
    secret = section.path_to(
        "secret_file", lambda path: files.read_secret(path, min_bytes=MIN_SECRET_BYTES)
    )
    return CookieStoreSettings(secret=secret)


def _redis(section: Section) -> RedisSettings:
    url: str | None = None
    if section.exclusive("url", "url_file"):
        url = section.get("url", None, _redis_url)
        if section.has("url_file"):
            url = section.path_to("url_file", lambda path: _redis_url(files.read_secret_text(path)))
    password: str | None = None
    if section.exclusive("password", "password_file"):
        password = section.get("password", None, _password)
        if section.has("password_file"):
            password = section.path_to("password_file", files.read_secret_text)
    url = url or RedisSettings().url
    if password is not None:
        url = section.convert(section.path, url, url, lambda u: _with_password(u, password))
    cache = section.section("cache", REDIS_CACHE_KEYS)
    return RedisSettings(
        url=url,
        key_prefix=section.get("key_prefix", "gw:", values.string),
        timeout_s=section.get("timeout", 0.5, values.duration(positive=True, maximum=60)),
        cache=cache.get("enabled", True, values.boolean),
        cache_max_staleness_s=cache.get(
            "max_staleness", 1.0, values.duration(positive=True, maximum=60)
        ),
        cache_max_age_s=cache.get("max_age", 10.0, values.duration(positive=True, maximum=3600)),
        cache_max_entries=cache.get(
            "max_entries", 100_000, values.integer(minimum=1, maximum=10_000_000)
        ),
    )


def _password(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise values.Invalid(f"expected a password string, got {describe(value, secret=True)}")
    return str(value)


def _redis_url(value: Any) -> str:
    url = values.string(value).strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        # Never echo the value: a Redis URL may hold a password.
        raise values.Invalid("expected a redis://, rediss:// or unix:// URL")
    if scheme != "unix":
        try:
            parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        except ValueError:
            raise values.Invalid("the Redis URL has an invalid port") from None
        if not parts.hostname:
            raise values.Invalid("the Redis URL needs a host")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise values.Invalid("the Redis URL's database (its path) must be a number")
    return url


def _with_password(url: str, password: str) -> str:
    """``url`` with ``password`` added, since :class:`RedisSettings` has no field of its own."""
    parts = urlsplit(url)
    if parts.password is not None:
        raise values.Invalid(
            "url already holds a password; remove it there or drop password/password_file"
        )
    if parts.scheme.lower() == "unix":
        query = f"{parts.query}&" if parts.query else ""
        return parts._replace(query=f"{query}password={quote(password, safe='')}").geturl()
    user = parts.username or ""  # still percent-encoded as written
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}").geturl()
