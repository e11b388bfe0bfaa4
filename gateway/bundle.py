"""The loader: the configuration with everything it names, read and checked once.

:func:`load` (or :func:`build`, from settings already validated) returns one immutable
:class:`Bundle`: the settings, the users, the signing keys and the compiled routes. It is built
once per start and per reload, and every consumer (the server, ``gateway check``, ``gateway
explain``) takes what it needs from it; nothing else reads users files or key files. Every
problem, of the YAML or of a file it names, is raised together as one
:class:`~gateway.config.ConfigError`, in file order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.config import ConfigError, ConfigIssue
from gateway.config.loader import check_settings
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
    """Non-fatal findings (the configuration's, and the route table's: routes that can never
    match, a strip_prefix that never applies, a prefix rule a laxer route undercuts), for
    ``gateway check`` and the start-up log."""


def load(
    path: str | Path, *, env: Mapping[str, str] | None = None, generate_key: bool = False
) -> Bundle:
    """Read the configuration at ``path`` and everything it names (see :func:`build`).

    Every problem is reported in one :class:`ConfigError`, in file order: those of the YAML
    and those of the files it names (users, secrets, signing keys) together, even when the YAML
    has problems of its own. Nothing is written unless the configuration is valid.
    """
    checked = check_settings(path, env)
    settings = checked.settings
    if settings is None:
        raise checked.error()
    keys, problems = _keys(settings, generate=generate_key and not checked.issues)
    if checked.issues or problems or keys is None:
        raise checked.error(problems)
    return _bundle(settings, keys)


def build(settings: Settings, *, generate_key: bool = False) -> Bundle:
    """Read the users and signing keys ``settings`` name and compile its routes.

    With ``generate_key`` (``gateway run``), a missing generated key is created in
    ``server.data_dir``; without it nothing is written and an in-memory key stands in (see
    :func:`gateway.tokens.keys.load_keyset`). Raises :class:`ConfigError` with every problem.
    """
    keys, problems = _keys(settings, generate=generate_key)
    if problems or keys is None:
        raise ConfigError(problems, source=settings.source)
    return _bundle(settings, keys)


def _keys(settings: Settings, *, generate: bool) -> tuple[KeySet | None, list[ConfigIssue]]:
    """The signing keys, or every problem with them."""
    try:
        keys = load_keyset(settings.tokens, settings.server.data_dir, generate=generate)
    except KeyConfigError as exc:
        return None, [ConfigIssue(path, message) for path, message in exc.issues]
    if settings.tokens.api_tokens.enabled and keys.api_signing is None:
        # SECURITY: an HMAC secret is shared with upstreams; a token it signs must not be a
        # credential the gateway accepts, so API tokens need a key only the gateway holds.
        problem = ConfigIssue(
            "tokens.api_tokens.enabled",
            "API tokens need a private key (signing_keys: - file: ...), not only HMAC "
            "secrets, which upstreams also hold",
        )
        return keys, [problem]
    return keys, []


def _bundle(settings: Settings, keys: KeySet) -> Bundle:
    routes = RouteTable(settings.routes)
    return Bundle(
        settings=settings,
        users=load_users(settings.users),
        keys=keys,
        routes=routes,
        warnings=(*settings.warnings, *routes.warnings()),
    )
