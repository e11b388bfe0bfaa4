"""From a provider's claims to our identity, and who a provider may sign in.

A user who signs in at a provider is not in the local user directory: their identity is mapped
once, at sign-in, from the verified ID token (``login.oidc[].claims``), kept in the session
(:class:`~gateway.identity.sessions.base.ProviderLogin`), and rebuilt from there on every
request (:func:`provider_user`), where the provider's ``allowed`` rules are checked again, so
a reload that narrows them applies to existing sessions at once.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from typing import Any

from gateway.config.settings import OidcAllowedSettings, OidcProviderSettings
from gateway.identity.sessions.base import ProviderLogin
from gateway.identity.users import User

MAX_CLAIM_CHARS = 256
MAX_ROLES = 100

_STAMP_DOMAIN = b"gateway/provider-stamp/v1\x00"


class ClaimsError(ValueError):
    """The claims cannot make an identity (a username that is no valid username)."""


def map_identity(
    provider: OidcProviderSettings, claims: Mapping[str, Any], *, id_token: str = ""
) -> tuple[str, ProviderLogin]:
    """The username and provider login mapped from verified ID token ``claims``.

    ``username`` comes from ``claims.username`` (falling back to ``sub``), roles from the list
    claim ``claims.roles`` (a string counts as one role). Values that are not strings are
    ignored, and so are a name, email or role holding a control character (or a role holding
    ','): they reach identity headers, where roles are joined by ','. Raises
    :class:`ClaimsError` for a username that cannot be one."""
    mapping = provider.claims
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise ClaimsError("the ID token has no subject")
    username = _text(claims.get(mapping.username)) or subject
    if not _valid_username(username):
        raise ClaimsError("the username claim is not a valid username")
    sid = _text(claims.get("sid")) or ""
    login = ProviderLogin(
        idp=provider.name,
        issuer=provider.issuer,
        subject=subject,
        sid=sid,
        email=_header_safe(_text(claims.get(mapping.email))),
        email_verified=claims.get("email_verified") is True,
        name=_header_safe(_text(claims.get(mapping.name))),
        roles=_roles(claims.get(mapping.roles)),
        id_token=id_token,
    )
    return username, login


def admits(allowed: OidcAllowedSettings, username: str, login: ProviderLogin) -> bool:
    """Whether the provider's ``allowed`` rules admit this user: any one rule is enough;
    without rules, everyone the provider signs in."""
    if not allowed.restricted:
        return True
    if username in allowed.users:
        return True
    if allowed.roles and not set(allowed.roles).isdisjoint(login.roles):
        return True
    # SECURITY: an email address counts only when the provider says it verified it; otherwise
    # anyone could claim an address of an allowed domain.
    if allowed.email_domains and login.email is not None and login.email_verified:
        domain = login.email.rpartition("@")[2].lower()
        return domain in allowed.email_domains
    return False


def provider_user(username: str, login: ProviderLogin) -> User:
    """The :class:`User` a provider session stands for (no password: never in the directory)."""
    stamp = hashlib.sha256(
        _STAMP_DOMAIN + login.idp.encode() + b"\x00" + login.subject.encode("utf-8", "replace")
    ).hexdigest()[:22]
    return User(
        username=username,
        name=login.name,
        email=login.email,
        roles=frozenset(login.roles),
        password_hash="",
        stamp=stamp,
        idp=login.idp,
    )


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value[:MAX_CLAIM_CHARS]


def _roles(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    roles = [
        item
        for item in value
        if isinstance(item, str)
        and 0 < len(item) <= MAX_CLAIM_CHARS
        and "," not in item
        and _header_safe(item) is not None
    ]
    return tuple(dict.fromkeys(roles))[:MAX_ROLES]


def _header_safe(value: str | None) -> str | None:
    # SECURITY: users often choose these at the provider; like a local user's (which the
    # configuration checks), they must hold no line break or other control character.
    if value is None or any(unicodedata.category(char)[0] == "C" for char in value):
        return None
    return value


def _valid_username(username: str) -> bool:
    # The same rule as a local username (no separators, controls or ':'): it reaches logs,
    # the JWT's sub and identity headers.
    return (
        0 < len(username) <= MAX_CLAIM_CHARS
        and ":" not in username
        and not any(unicodedata.category(char)[0] in "CZ" for char in username)
    )
