"""The loader: the configuration with everything it names, read and checked once.

:func:`load` (or :func:`build`, from settings already validated) returns one immutable
:class:`Bundle`: the settings, the users, the signing keys and the compiled routes. It is built
once per start and per reload, and every consumer (the server, ``gateway check``, ``gateway
explain``) takes what it needs from it; nothing else reads users files or key files. Every
problem, of the YAML or of a file it names, is raised together as one
:class:`~gateway.config.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.config import ConfigError, ConfigIssue, load_settings
from gateway.config.settings import Settings
from gateway.identity.users import UserDirectory, load_users
from gateway.routing import RouteTable
from gateway.tokens.keys import KeyConfigError, KeySet, load_keyset

__all__ = ["Bundle", "build", "load"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Bundle:
    """One loaded configuration; never changed (a reload builds another)."""

    settings: Settings
    users: UserDirectory
    keys: KeySet
    routes: RouteTable
    warnings: tuple[str, ...]
    """Non-fatal findings (the configuration's, routes that can never match), for
    ``gateway check`` and the start-up log."""


def load(
    path: str | Path, *, env: Mapping[str, str] | None = None, generate_key: bool = False
) -> Bundle:
    """Read the configuration at ``path`` and everything it names (see :func:`build`)."""
    return build(load_settings(path, env), generate_key=generate_key)


def build(settings: Settings, *, generate_key: bool = False) -> Bundle:
    """Read the users and signing keys ``settings`` name and compile its routes.

    With ``generate_key`` (``gateway run``), a missing generated key is created in
    ``server.data_dir``; without it nothing is written and an in-memory key stands in (see
    :func:`gateway.tokens.keys.load_keyset`). Raises :class:`ConfigError` with every problem.
    """
    issues: list[ConfigIssue] = []
    keys: KeySet | None = None
    try:
        keys = load_keyset(settings.tokens, settings.server.data_dir, generate=generate_key)
    except KeyConfigError as exc:
        issues.extend(ConfigIssue(path, message) for path, message in exc.issues)
    if keys is not None and settings.tokens.api_tokens.enabled and keys.api_signing is None:
        # SECURITY: an HMAC secret is shared with upstreams; a token it signs must not be a
        # credential the gateway accepts, so API tokens need a key only the gateway holds.
        issues.append(
            ConfigIssue(
                "tokens.api_tokens.enabled",
                "API tokens need a private key (signing_keys: - file: ...), not only HMAC "
                "secrets, which upstreams also hold",
            )
        )
    if issues or keys is None:
        raise ConfigError(issues, source=settings.source)
    routes = RouteTable(settings.routes)
    return Bundle(
        settings=settings,
        users=load_users(settings.users),
        keys=keys,
        routes=routes,
        warnings=(*settings.warnings, *routes.shadowed()),
    )
