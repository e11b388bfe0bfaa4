"""YAML text -> validated, frozen :class:`Settings`: parse, interpolate, validate, freeze.

Every problem is collected and raised together in one :class:`ConfigError`, in file order.
:func:`check_settings` goes on past them and returns what it could build, so that the files
the configuration names (keys) can be checked in the same run (:func:`gateway.bundle.load`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from gateway.config.document import SECTIONS, Document, parse
from gateway.config.errors import ConfigError, ConfigIssue, describe
from gateway.config.interpolate import interpolate_tree
from gateway.config.reader import Context, Section
from gateway.config.routes import build_routes
from gateway.config.server import build_server
from gateway.config.session import build_session
from gateway.config.settings import Settings
from gateway.config.tokens import build_tokens
from gateway.config.upstreams import build_upstreams
from gateway.config.users import build_login, build_users
from gateway.config.values import did_you_mean

KEYS = SECTIONS


@dataclass(frozen=True, slots=True, kw_only=True)
class Checked:
    """A configuration validated as far as it goes: the settings, with defaults standing in for
    invalid values, and every problem found, in file order."""

    settings: Settings | None
    """``None`` when the file could not be read or is not a YAML mapping."""
    issues: tuple[ConfigIssue, ...]
    source: Path | None = None
    document: Document | None = None

    def error(self, more: Iterable[ConfigIssue] = ()) -> ConfigError:
        """These problems and ``more`` (found later, in the files the settings name), in file
        order. One of ``more`` at, under or above a path already reported is left out: it is the
        same mistake seen again (a secret file that could not be read is no key either)."""
        reported = [issue.path for issue in self.issues]
        later = [
            issue
            for issue in more
            if not any(_within(issue.path, at) or _within(at, issue.path) for at in reported)
        ]
        issues = [*self.issues, *later]
        if self.document is not None:
            issues = self.document.place(issues)
        return ConfigError(issues, source=self.source)


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or (path.startswith(ancestor) and path[len(ancestor)] in ".[:")


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Load and validate the YAML file at ``path``.

    Relative file paths inside it are taken from the file's directory. ``env`` (default
    :data:`os.environ`) supplies ``${VAR}`` values. Raises :class:`ConfigError` listing every
    problem.
    """
    return _settings_of(check_settings(path, env))


def load_settings_from_text(
    text: str,
    *,
    source: Path | None = None,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Validate configuration given as YAML text.

    ``source`` is recorded in :attr:`Settings.source`. Relative file paths are taken from
    ``base_dir``, by default the directory of ``source``, else the current directory.
    """
    return _settings_of(check_settings_text(text, source=source, base_dir=base_dir, env=env))


def _settings_of(checked: Checked) -> Settings:
    if checked.issues or checked.settings is None:
        raise checked.error()
    return checked.settings


def check_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Checked:
    """Like :func:`load_settings`, but the problems are returned with what could be built."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        issue = ConfigIssue(str(source), f"cannot read the configuration: {exc.strerror or exc}")
        return Checked(settings=None, issues=(issue,), source=source)
    except UnicodeDecodeError as exc:
        issue = ConfigIssue(str(source), f"not UTF-8 text (byte {exc.start})")
        return Checked(settings=None, issues=(issue,), source=source)
    return check_settings_text(text, source=source, base_dir=source.absolute().parent, env=env)


def check_settings_text(
    text: str,
    *,
    source: Path | None = None,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Checked:
    """Like :func:`load_settings_from_text`, but the problems are returned with what could be
    built."""
    if base_dir is None:
        base_dir = source.absolute().parent if source is not None else Path.cwd()
    try:
        document = parse(text, source)
    except ConfigError as exc:
        return Checked(settings=None, issues=tuple(exc.issues), source=source)
    ctx = Context(base_dir.absolute())
    ctx.issues.extend(document.issues)
    tree = interpolate_tree(document.tree, os.environ if env is None else env, ctx.error)
    settings = _build(Section(ctx, "", tree, KEYS), source)
    issues = tuple(document.place(ctx.issues))
    return Checked(settings=settings, issues=issues, source=source, document=document)


def _build(root: Section, source: Path | None) -> Settings:
    server = build_server(root)
    session = build_session(root, server)
    users = build_users(root)
    login = build_login(root)
    tokens = build_tokens(root, server)
    upstreams, upstream_names = build_upstreams(root)
    routes = build_routes(root, upstream_names)
    settings = Settings(
        server=server,
        session=session,
        users=users,
        login=login,
        tokens=tokens,
        upstreams=MappingProxyType(upstreams),
        routes=routes,
        source=source,
    )
    _check_audiences(root.ctx, settings)
    _warn(root.ctx, settings)
    return replace(settings, warnings=tuple(root.ctx.warnings))


def _check_audiences(ctx: Context, settings: Settings) -> None:
    # SECURITY: API bearer tokens are the ones whose aud is the issuer. An upstream token with
    # that audience would be accepted back as an API token: an upstream could replay it.
    issuer = settings.tokens.issuer
    for i, route in enumerate(settings.routes):
        audience = route.token.audience or route.upstream
        if audience and audience == issuer:  # "" stands for a value already reported
            where = "token.audience" if route.token.audience else "upstream"
            ctx.error(
                f"routes[{i}].{where}",
                f'the upstream token audience "{audience}" equals tokens.issuer, which only '
                "API tokens may carry; choose another audience",
            )


def _warn(ctx: Context, settings: Settings) -> None:
    # Shadowed routes are found by gateway.routing.shadowed_routes, which knows the match rules.
    used = {route.upstream for route in settings.routes}
    for name in settings.upstreams:
        if name not in used:
            ctx.warn(f"upstreams.{name}", "not used by any route")
    users = settings.users
    needs_login = any(route.access.kind in ("authenticated", "rules") for route in settings.routes)
    if needs_login and not users.entries and not settings.login.oidc:
        ctx.warn("users", "no users are configured, so nobody can sign in")
    else:
        _warn_unknown_users(ctx, settings)


def _warn_unknown_users(ctx: Context, settings: Settings) -> None:
    """A rule naming a user that no source defines lets nobody in by that name: most often a
    typo, or a user still to be added (usernames are compared exactly, letter case included).
    With OpenID Connect providers a name no local source defines may be a provider's user; with
    several providers, a rule naming users admits that name from each of them."""
    known = [entry.username for entry in settings.users.entries]
    names = set(known)
    providers = [provider.name for provider in settings.login.oidc]
    for i, route in enumerate(settings.routes):
        if route.access.users and len(providers) > 1:
            listed = ", ".join(sorted(route.access.users))
            ctx.warn(
                f"routes[{i}].access.users",
                f"usernames are not told apart by provider: {listed} may sign in through any of "
                f"the providers {', '.join(providers)} (whose usernames, preferred_username by "
                "default, each provider assigns on its own); name roles instead, or limit each "
                "provider's users with its allowed rules",
            )
        if providers:
            continue  # a name no local source defines may be a provider's user
        for username in sorted(route.access.users - names):
            ctx.warn(
                f"routes[{i}].access.users",
                f"no user {describe(username)} is defined in users{did_you_mean(username, known)}; "
                "this rule lets nobody in by that name",
            )
