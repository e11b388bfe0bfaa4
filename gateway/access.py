"""The allow/deny decision for a route and an identity."""

from __future__ import annotations

import enum

from gateway.config.settings import AccessSettings


class Decision(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    """Forbidden whoever asks: 403."""
    LOGIN = "login"
    """Needs an identity the caller has not shown: 401 or a redirect to the login page."""


def decide_access(access: AccessSettings, username: str | None, roles: frozenset[str]) -> Decision:
    """Decide for one request. ``username`` is ``None`` for an anonymous caller."""
    if access.kind == "public":
        return Decision.ALLOW
    if access.kind == "deny":
        return Decision.DENY
    if username is None:
        return Decision.LOGIN
    if access.kind == "authenticated":
        return Decision.ALLOW
    # rules: allowed if the user has ANY listed role or IS a listed user
    if username in access.users or not access.roles.isdisjoint(roles):
        return Decision.ALLOW
    return Decision.DENY
