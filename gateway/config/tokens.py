"""The ``tokens:`` section: the JWTs minted for upstreams and API clients.

Only the shape is checked here; the key files are parsed once, by the code that signs with them,
when the configuration is loaded whole (:func:`gateway.bundle.build`), which reports a weak or
unsupported key naming its file.
"""

from __future__ import annotations

from typing import Any

from gateway.config import files, values
from gateway.config.errors import describe
from gateway.config.reader import Section
from gateway.config.settings import (
    ApiTokenSettings,
    ServerSettings,
    SigningKeySettings,
    TokenSettings,
)

KEYS = ("issuer", "ttl", "header", "signing_keys", "claims", "api_tokens")
KEY_KEYS = ("file", "hmac_secret_file", "kid")
API_TOKEN_KEYS = ("enabled", "ttl")
CLAIMS = ("name", "email", "roles")

MIN_HMAC_SECRET_BYTES = 32
# Tokens cannot be revoked, so their lifetime is what bounds a leaked one.
MAX_TOKEN_TTL_S = 86400.0
TOKEN_TTL = values.duration(positive=True, maximum=MAX_TOKEN_TTL_S)

# Headers the gateway or HTTP itself owns; carrying the token in one would break the request.
_RESERVED_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "host",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-request-id",
    }
)


def build_tokens(root: Section, server: ServerSettings) -> TokenSettings:
    """Validate ``tokens:``; the issuer defaults to ``server.public_url``."""
    section = root.section("tokens", KEYS)
    api = section.section("api_tokens", API_TOKEN_KEYS)
    tokens = TokenSettings(
        issuer=section.get("issuer", server.public_url, values.text),
        ttl_s=section.get("ttl", 60.0, TOKEN_TTL),
        header=section.get("header", "Authorization", _header),
        signing_keys=_signing_keys(section),
        claims=section.get("claims", CLAIMS, _claims),
        api_tokens=ApiTokenSettings(
            enabled=api.get("enabled", False, values.boolean),
            ttl_s=api.get("ttl", 3600.0, TOKEN_TTL),
        ),
    )
    return tokens


def _header(value: Any) -> str:
    name = values.http_token(value)
    if name.lower() in _RESERVED_HEADERS:
        raise values.Invalid(
            f'"{name}" is managed by the gateway or HTTP and cannot carry the token'
        )
    return name


def _claims(value: Any) -> tuple[str, ...]:
    def claim(item: Any) -> str:
        name = values.string(item)
        if name not in CLAIMS:
            hint = values.did_you_mean(name, CLAIMS)
            raise values.Invalid(
                f"unknown claim {describe(item)}{hint}; allowed: {', '.join(CLAIMS)}"
            )
        return name

    claims = values.string_list(f"claim names ({', '.join(CLAIMS)})", claim)(value)
    repeated = [(index, name) for index, name in enumerate(claims) if name in claims[:index]]
    if repeated:
        index, name = repeated[0]
        raise values.Invalid(f'"{name}" is listed twice', at=f"[{index}]")
    return claims


def _signing_keys(section: Section) -> tuple[SigningKeySettings, ...]:
    keys: list[SigningKeySettings] = []
    kids: dict[str, str] = {}
    what = "keys ({file: ...} or {hmac_secret_file: ...})"
    for path, item in section.items("signing_keys", what):
        entry = Section(section.ctx, path, item, KEY_KEYS)
        if entry.broken:
            # Reported; an empty entry keeps the others at their index, where the key files
            # are read and reported even when the rest of the configuration has problems.
            keys.append(SigningKeySettings())
            continue
        kid = entry.get("kid", None, values.text)
        if kid is not None:
            if kid in kids:
                section.ctx.error(entry.at("kid"), f'duplicate kid "{kid}", already at {kids[kid]}')
            kids.setdefault(kid, path)
        given = [key for key in ("file", "hmac_secret_file") if entry.has(key)]
        if len(given) != 1:
            found = "both" if given else "neither"
            section.ctx.error(path, f"needs exactly one of file or hmac_secret_file, got {found}")
            keys.append(SigningKeySettings(kid=kid))
            continue
        keys.append(
            SigningKeySettings(
                file=entry.file("file"),
                hmac_secret=entry.path_to(
                    "hmac_secret_file",
                    lambda p: files.read_secret(p, min_bytes=MIN_HMAC_SECRET_BYTES),
                ),
                kid=kid,
            )
        )
    return tuple(keys)
