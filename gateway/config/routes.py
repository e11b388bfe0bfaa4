"""The ``routes:`` section: what each request matches, who may pass, and where it goes."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, cast, get_args

from gateway.config import values
from gateway.config.errors import describe
from gateway.config.reader import Section
from gateway.config.settings import (
    DEFAULT_IDENTITY_HEADERS,
    IDENTITY_CLAIMS,
    AccessKind,
    AccessSettings,
    MatchSettings,
    RouteSettings,
    RouteTokenSettings,
    Unauthenticated,
)
from gateway.config.tokens import TOKEN_TTL
from gateway.config.upstreams import NAME, NAME_RULE
from gateway.errors import BadRequest
from gateway.hosts import HostPattern
from gateway.paths import normalise_path

KEYS = ("name", "match", "upstream", "access", "token", "accept_bearer", "unauthenticated",
        "identity_headers", "strip_prefix", "max_body", "websocket")
MATCH_KEYS = ("host", "path", "path_prefix", "path_regex", "methods", "ignore_case")
PATH_KEYS = ("path", "path_prefix", "path_regex")
ACCESS_KEYS = ("roles", "users")
TOKEN_KEYS = ("audience", "ttl")
ACCESS_WORDS = ("public", "authenticated", "deny")
ACCESS_HELP = '"public", "authenticated", "deny" or {roles: [...], users: [...]}'


def build_routes(root: Section, upstreams: Collection[str]) -> tuple[RouteSettings, ...]:
    """Validate ``routes:``; ``upstreams`` are the names a route may use (empty: don't check)."""
    ctx = root.ctx
    items = root.items("routes", "routes")
    if root.raw("routes") in (None, []):
        ctx.error("routes", "at least one route is required; first match wins, in file order")
    routes: list[RouteSettings] = []
    names: dict[str, str] = {}
    for path, item in items:
        section = Section(ctx, path, item, KEYS)
        if section.broken:
            continue  # reported as not a mapping; its missing keys would only repeat that
        name = section.require("name", _name)
        if name is not None:
            if name in names:
                message = f'duplicate route name "{name}", already at {names[name]}'
                ctx.error(section.at("name"), message)
            names.setdefault(name, path)
        upstream = section.require("upstream", values.text, "the name of an upstream")
        if upstream is not None and upstreams and upstream not in upstreams:
            ctx.error(
                section.at("upstream"),
                f'unknown upstream "{upstream}"{values.did_you_mean(upstream, upstreams)}; '
                f"defined upstreams: {', '.join(sorted(upstreams))}",
            )
        token = section.section("token", TOKEN_KEYS)
        routes.append(RouteSettings(
            name=name or "",
            match=_match(section),
            upstream=upstream or "",
            access=_access(section),
            token=RouteTokenSettings(
                audience=token.get("audience", None, values.text),
                ttl_s=token.get("ttl", None, TOKEN_TTL),
            ),
            accept_bearer=section.get("accept_bearer", False, values.boolean),
            unauthenticated=cast(Unauthenticated, section.get(
                "unauthenticated", "auto", values.choice(*get_args(Unauthenticated))
            )),
            identity_headers=section.get("identity_headers", (), _identity_headers),
            strip_prefix=section.get("strip_prefix", None, _strip_prefix),
            max_body_bytes=section.get("max_body", None, values.size),
            websocket=section.get("websocket", False, values.boolean),
        ))
    return tuple(routes)


def _name(value: Any) -> str:
    name = values.string(value)
    if not NAME.fullmatch(name):
        raise values.Invalid(f"route names may use {NAME_RULE}; got {describe(value)}")
    return name


def _match(route: Section) -> MatchSettings:
    section = route.section("match", MATCH_KEYS)
    given = [key for key in PATH_KEYS if section.has(key)]
    if len(given) != 1 and not section.broken:
        found = ", ".join(given) if given else "none"
        route.ctx.error(
            section.path, f"needs exactly one of path, path_prefix or path_regex; got {found}"
        )
    ignore_case = section.get("ignore_case", False, values.boolean)
    return MatchSettings(
        host=section.get("host", None, _host),
        path=section.get("path", None, _path),
        path_prefix=section.get("path_prefix", None, _path),
        path_regex=section.get("path_regex", None, lambda value: _regex(value, ignore_case)),
        methods=section.get("methods", None, _methods),
        ignore_case=ignore_case,
    )


def _host(value: Any) -> str:
    try:
        return str(HostPattern.parse(values.string(value)))
    except ValueError as exc:
        raise values.Invalid(f"{exc}, got {describe(value)}") from None


def _path(value: Any) -> str:
    path = values.string(value)
    if not path.startswith("/"):
        raise values.Invalid(f'must start with "/", got {describe(value)}')
    try:
        # The rules requests are held to: a path they refuse could never match.
        normalise_path(path)
    except BadRequest as exc:
        hint = ""
        if exc.reason == "path_invalid_char":
            hint = " (percent-encode it; the query string never takes part in matching)"
        raise values.Invalid(f"not a valid path: {exc}{hint}") from None
    return path


def _regex(value: Any, ignore_case: bool) -> str:
    pattern = values.string(value)
    try:
        re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise values.Invalid(f"invalid regular expression {describe(value)}: {exc}") from None
    return pattern


def _methods(value: Any) -> frozenset[str]:
    methods = values.string_list("HTTP methods", values.http_token)(value)
    if not methods:
        raise values.Invalid("must not be empty; leave methods out to match every method")
    return frozenset(method.upper() for method in methods)


def _strip_prefix(value: Any) -> str:
    prefix = _path(value)
    if prefix != "/" and prefix.endswith("/"):
        raise values.Invalid(
            f'must not end with "/" (write "/api", not "/api/"), got {describe(value)}'
        )
    return prefix


# Headers HTTP or the gateway owns: an identity cannot travel in them.
RESERVED_HEADERS = frozenset({
    "authorization", "connection", "content-length", "content-type", "cookie", "host",
    "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "x-forwarded-for",
    "x-forwarded-host", "x-forwarded-proto", "x-forwarded-prefix", "x-request-id",
})


def _identity_headers(value: Any) -> tuple[tuple[str, str], ...]:
    """``true`` / ``false`` or a mapping of header names to claims."""
    if not isinstance(value, dict):
        return DEFAULT_IDENTITY_HEADERS if values.boolean(value) else ()
    errors: list[values.Invalid] = []
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for header, claim in value.items():
        at = f".{header}" if isinstance(header, str) else ""
        try:
            name = values.http_token(header)
            lowered = name.lower().replace("_", "-")
            if lowered in RESERVED_HEADERS:
                raise values.Invalid(f'"{name}" is managed by HTTP or the gateway')
            if lowered in seen:
                raise values.Invalid(f'"{name}" is listed twice')
            seen.add(lowered)
            if not isinstance(claim, str) or claim not in IDENTITY_CLAIMS:
                hint = values.did_you_mean(claim, IDENTITY_CLAIMS) if isinstance(claim, str) else ""
                raise values.Invalid(
                    f"expected one of {', '.join(IDENTITY_CLAIMS)}, got {describe(claim)}{hint}"
                )
        except values.Invalid as exc:
            errors.append(values.Invalid(str(exc), at=at))
            continue
        pairs.append((name, claim))
    if errors:
        raise values.Invalid.combine(errors)
    if not pairs:
        raise values.Invalid("expected true, false, or a mapping such as {Remote-User: sub}")
    return tuple(pairs)


def _access(route: Section) -> AccessSettings:
    value = route.raw("access")
    if value is None:
        route.ctx.error(route.at("access"), f"required: {ACCESS_HELP}")
        return AccessSettings(kind="deny")
    if isinstance(value, dict):
        section = route.section("access", ACCESS_KEYS)
        roles = section.get("roles", None, values.string_list("role names"))
        users = section.get("users", None, values.string_list("usernames"))
        given_ok = all(section.raw(key) is None or found is not None
                       for key, found in (("roles", roles), ("users", users)))
        if given_ok and not roles and not users:
            route.ctx.error(
                section.path, 'needs at least one role or user (use "deny" to let nobody in)'
            )
        return AccessSettings(
            kind="rules", roles=frozenset(roles or ()), users=frozenset(users or ())
        )
    word = route.get("access", None, _access_word)
    return AccessSettings(kind=word or "deny")


def _access_word(value: Any) -> AccessKind:
    if isinstance(value, str) and value in ACCESS_WORDS:
        return cast(AccessKind, str(value))
    hint = values.did_you_mean(value, ACCESS_WORDS) if isinstance(value, str) else ""
    raise values.Invalid(f"expected {ACCESS_HELP}, got {describe(value)}{hint}")
