"""One-line descriptions of routes for people: ``gateway check``'s table and ``gateway explain``."""

from __future__ import annotations

from gateway.config.settings import AccessSettings, MatchSettings


def describe_match(match: MatchSettings) -> str:
    """E.g. ``host=admin.example.com path_prefix=/admin methods=GET,POST``."""
    parts = []
    if match.host is not None:
        parts.append(f"host={match.host}")
    for key, value in (
        ("path", match.path),
        ("path_prefix", match.path_prefix),
        ("path_regex", match.path_regex),
    ):
        if value is not None:
            parts.append(f"{key}={value}")
    if match.methods:
        parts.append("methods=" + ",".join(sorted(match.methods)))
    if match.ignore_case:
        parts.append("ignore_case")
    return " ".join(parts)


def describe_access(access: AccessSettings) -> str:
    """``public``, ``authenticated``, ``deny``, or e.g. ``roles=admin users=alice`` (any of)."""
    if access.kind != "rules":
        return access.kind
    parts = []
    if access.roles:
        parts.append("roles=" + ",".join(sorted(access.roles)))
    if access.users:
        parts.append("users=" + ",".join(sorted(access.users)))
    return " ".join(parts)
