"""Configuration problems: each one names its YAML path and the rule it broke."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in the configuration, e.g. ``routes[2].access.roles: expected a list ...``."""

    path: str
    """Where the problem is: a YAML path (``routes[2].access.roles``) or a file position."""
    message: str
    """The rule that was broken and what was found instead."""
    line: int | None = None
    """The line of the configuration file the problem is written on (or under), when known;
    ``None`` for a problem in a file the configuration names, or with nothing written."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; :attr:`issues` holds every problem found, in order."""

    def __init__(self, issues: Iterable[ConfigIssue], *, source: Path | None = None) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        self.source = source
        super().__init__("\n".join(str(issue) for issue in self.issues))


def describe(value: object, *, secret: bool = False) -> str:
    """Render a YAML value for an error message: ``"admin"``, ``5``, ``true``, ``a list``.

    With ``secret`` only the kind of value is shown, so a misplaced password never reaches a log.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number" if secret else repr(value)
    if isinstance(value, str):
        if secret:
            return "a string"
        shown = value if len(value) <= 80 else value[:77] + "..."
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    # YAML can also produce dates, timestamps, sets and binary data.
    return f"a {type(value).__name__}"
