"""``login.oidc``: external OpenID Connect providers to sign in through (CONTRACT section 2)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from gateway.config import files, values
from gateway.config.errors import describe
from gateway.config.reader import Section
from gateway.config.settings import (
    OidcAllowedSettings,
    OidcClaimsSettings,
    OidcProviderSettings,
)

KEYS = (
    "name",
    "label",
    "issuer",
    "client_id",
    "client_secret",
    "client_secret_file",
    "scopes",
    "claims",
    "allowed",
)
CLAIM_KEYS = ("username", "email", "name", "roles")
ALLOWED_KEYS = ("email_domains", "users", "roles")

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_CLAIM = re.compile(r"[^\s\x00-\x1f]{1,128}")
_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}|[a-z0-9-]{1,63}")


def build_oidc(section: Section) -> tuple[OidcProviderSettings, ...]:
    """Validate ``login.oidc``, a list of providers with unique names."""
    providers: list[OidcProviderSettings] = []
    names: dict[str, str] = {}
    for path, item in section.items("oidc", "providers ({name, issuer, client_id, ...})"):
        entry = Section(section.ctx, path, item, KEYS)
        if entry.broken:
            continue
        provider = _provider(entry)
        if provider is None:
            continue
        if provider.name in names:
            section.ctx.error(
                entry.at("name"),
                f'duplicate provider name "{provider.name}", already at {names[provider.name]}',
            )
            continue
        names[provider.name] = path
        providers.append(provider)
    return tuple(providers)


def _provider(entry: Section) -> OidcProviderSettings | None:
    name = entry.require("name", _provider_name, "[a-z0-9-]+, used in URLs and as the idp")
    issuer = entry.require("issuer", issuer_url, "the provider's issuer URL")
    client_id = entry.require("client_id", values.text, "the client id registered at the provider")
    secret: str | None = None
    if entry.exclusive("client_secret", "client_secret_file"):
        secret = entry.get("client_secret", None, _secret)
        if entry.has("client_secret_file"):
            secret = entry.path_to("client_secret_file", files.read_secret_text)
    default_scopes: tuple[str, ...] = ("openid", "email", "profile")
    scopes = entry.get("scopes", default_scopes, _scopes)
    claims = entry.section("claims", CLAIM_KEYS)
    defaults = OidcClaimsSettings()
    mapping = OidcClaimsSettings(
        username=claims.get("username", defaults.username, _claim_name),
        email=claims.get("email", defaults.email, _claim_name),
        name=claims.get("name", defaults.name, _claim_name),
        roles=claims.get("roles", defaults.roles, _claim_name),
    )
    allowed = entry.section("allowed", ALLOWED_KEYS)
    rules = OidcAllowedSettings(
        email_domains=allowed.get("email_domains", (), values.string_list("domain names", _domain)),
        users=allowed.get("users", (), values.string_list("usernames")),
        roles=allowed.get("roles", (), values.string_list("role names")),
    )
    if name is None or issuer is None or client_id is None:
        return None
    label = entry.get("label", f"Sign in with {name}", values.text)
    return OidcProviderSettings(
        name=name,
        label=label,
        issuer=issuer,
        client_id=client_id,
        client_secret=secret,
        scopes=scopes,
        claims=mapping,
        allowed=rules,
    )


def _provider_name(value: Any) -> str:
    name = values.string(value)
    if not _NAME.fullmatch(name):
        raise values.Invalid(
            f"expected lower-case letters, digits and '-' (at most 64), got {describe(value)}"
        )
    return name


def issuer_url(value: Any) -> str:
    """An absolute https URL without query or fragment (http only on a loopback host)."""
    url = values.text(value)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise values.Invalid(f"expected an https:// URL, got {describe(value)}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise values.Invalid(f"expected an https:// URL, got {describe(value)}")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        # SECURITY: discovery, keys and the token exchange (with the client secret) must not
        # travel in clear over a network.
        raise values.Invalid(
            f"expected an https:// URL (http only for a loopback host), got {describe(value)}"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise values.Invalid(
            f"an issuer has no query, fragment or user information, got {describe(value)}"
        )
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise values.Invalid(f"expected the client secret, got {describe(value, secret=True)}")
    return str(value)


def _scopes(value: Any) -> tuple[str, ...]:
    scopes = values.string_list("scopes", _scope)(value)
    if "openid" not in scopes:
        raise values.Invalid('must include "openid" (OpenID Connect sign-in needs it)')
    return tuple(dict.fromkeys(scopes))


def _scope(value: Any) -> str:
    scope = values.text(value)
    if any(char.isspace() or char in '"\\' or ord(char) < 0x21 for char in scope):
        raise values.Invalid(f"expected a scope name, got {describe(value)}")
    return scope


def _claim_name(value: Any) -> str:
    claim = values.string(value)
    if not _CLAIM.fullmatch(claim):
        raise values.Invalid(f"expected a claim name, got {describe(value)}")
    return claim


def _domain(value: Any) -> str:
    domain = values.text(value).strip().lower().removeprefix("@")
    if not _DOMAIN.fullmatch(domain):
        raise values.Invalid(f"expected a domain name such as example.com, got {describe(value)}")
    return domain
