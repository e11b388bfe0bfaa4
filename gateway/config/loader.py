"""YAML text -> validated, frozen :class:`Settings`: parse, interpolate, validate, freeze.

Every problem is collected and raised together in one :class:`ConfigError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from gateway.config.errors import ConfigError, ConfigIssue, describe
from gateway.config.interpolate import interpolate_tree
from gateway.config.reader import ROOT, Context, Section
from gateway.config.routes import build_routes
from gateway.config.server import build_server
from gateway.config.session import build_session
from gateway.config.settings import Settings
from gateway.config.tokens import build_tokens
from gateway.config.upstreams import build_upstreams
from gateway.config.users import build_login, build_users

KEYS = ("server", "session", "users", "login", "tokens", "upstreams", "routes")


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Load and validate the YAML file at ``path``.

    Relative file paths inside it are taken from the file's directory. ``env`` (default
    :data:`os.environ`) supplies ``${VAR}`` values. Raises :class:`ConfigError` listing every
    problem.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        issue = ConfigIssue(str(source), f"cannot read the configuration: {exc.strerror or exc}")
        raise ConfigError([issue], source=source) from None
    except UnicodeDecodeError as exc:
        issue = ConfigIssue(str(source), f"not UTF-8 text (byte {exc.start})")
        raise ConfigError([issue], source=source) from None
    return load_settings_from_text(text, source=source, base_dir=source.absolute().parent, env=env)


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
    if base_dir is None:
        base_dir = source.absolute().parent if source is not None else Path.cwd()
    document = _parse_yaml(text, source)
    ctx = Context(base_dir.absolute())
    tree = interpolate_tree(document, os.environ if env is None else env, ctx.error)
    settings = _build(Section(ctx, "", tree, KEYS), source)
    if ctx.issues:
        raise ConfigError(_in_document_order(ctx.issues, document), source=source)
    return settings


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
        if audience == issuer:
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
    if needs_login and not users.entries:
        ctx.warn("users", "no users are configured, so nobody can sign in")


def _in_document_order(issues: list[ConfigIssue], tree: dict[str, Any]) -> list[ConfigIssue]:
    """Group issues by top-level section in the order the file has them (stable within one)."""
    position = {key: index for index, key in enumerate(tree)}

    def section_of(issue: ConfigIssue) -> int:
        top = re.split(r"[.\[]", issue.path, maxsplit=1)[0]
        return position.get(top, len(position))

    return sorted(issues, key=section_of)


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML loaders silently overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue  # `<<:` merges may override keys on purpose
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {describe(key)}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: Path | None) -> dict[str, Any]:
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_issue(exc)], source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(ROOT, f"invalid YAML: {exc}")], source=source) from None
    if document is None:
        message = "the configuration is empty; it needs at least server, upstreams and routes"
        raise ConfigError([ConfigIssue(ROOT, message)], source=source)
    if not isinstance(document, dict):
        message = f"expected a mapping of sections ({', '.join(KEYS)}), got {describe(document)}"
        raise ConfigError([ConfigIssue(ROOT, message)], source=source)
    return document


def _yaml_issue(exc: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ROOT
    message = f"invalid YAML: {exc.problem or 'syntax error'}"
    if exc.context:
        context_mark = exc.context_mark
        shown = context_mark is not None and context_mark is not mark
        at = f" at line {context_mark.line + 1}" if context_mark and shown else ""
        message += f" ({exc.context}{at})"
    return ConfigIssue(where, message)
