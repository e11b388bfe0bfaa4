"""Reading one YAML mapping at a known path, collecting every problem instead of stopping.

A getter that meets a bad value records a :class:`ConfigIssue` and returns its default, so
validation carries on and the user sees all problems at once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

from gateway.config import files
from gateway.config.document import ROOT, join
from gateway.config.errors import ConfigIssue, describe
from gateway.config.interpolate import INVALID
from gateway.config.values import Invalid, did_you_mean

T = TypeVar("T")

__all__ = ["ROOT", "Context", "Section", "join"]


class Context:
    """What one load shares: where relative paths start, and the problems found so far."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(path or ROOT, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}")


class Section:
    """A mapping with a fixed set of ``keys``; unknown keys are reported on construction.

    A missing or null section reads as empty; a non-mapping is reported and reads as empty, and
    is :attr:`broken` so that its "required" keys are not reported on top.
    """

    def __init__(self, ctx: Context, path: str, value: Any, keys: Collection[str]) -> None:
        self.ctx = ctx
        self.path = path
        self.data: dict[str, Any] = {}
        self.broken = value is INVALID or not (value is None or isinstance(value, Mapping))
        if value is None or value is INVALID:
            return
        if not isinstance(value, Mapping):
            allowed = ", ".join(keys)
            ctx.error(path, f"expected a mapping with keys {allowed}; got {describe(value)}")
            return
        for key, item in value.items():
            if not isinstance(key, str):
                ctx.error(path, f"keys must be names, got {describe(key)}")
            elif key in keys:
                self.data[key] = item
            else:
                hint = did_you_mean(key, keys) or f"; allowed keys: {', '.join(keys)}"
                ctx.error(join(path, key), f"unknown key{hint}")

    def at(self, key: str) -> str:
        return join(self.path, key)

    def has(self, key: str) -> bool:
        """Whether ``key`` was given (a value already reported as invalid counts as given)."""
        return self.data.get(key) is not None

    def raw(self, key: str) -> Any:
        """The value as parsed, ``None`` when absent, :data:`INVALID` when already reported."""
        return self.data.get(key)

    def get(self, key: str, default: T, convert: Callable[[Any], T]) -> T:
        """``convert(value)``, or ``default`` when the key is absent or its value is invalid."""
        value = self.data.get(key)
        if value is None or value is INVALID:
            return default
        return self.convert(self.at(key), value, default, convert)

    def require(self, key: str, convert: Callable[[Any], T], hint: str = "") -> T | None:
        """Like :meth:`get` but a missing key is an error; ``None`` means a problem was reported."""
        if self.data.get(key) is None:
            if self.broken:
                return None
            self.ctx.error(self.at(key), "required" + (f": {hint}" if hint else ""))
            return None
        return self.get(key, None, convert)

    def convert(self, path: str, value: Any, default: T, convert: Callable[[Any], T]) -> T:
        """Convert a value found at ``path``, reporting every problem it has."""
        if value is INVALID:
            return default
        try:
            return convert(value)
        except Invalid as exc:
            for suffix, message in exc.problems:
                self.ctx.error(path + suffix, message)
            return default

    def section(self, key: str, keys: Collection[str]) -> Section:
        return Section(self.ctx, self.at(key), self.data.get(key), keys)

    def items(self, key: str, what: str) -> list[tuple[str, Any]]:
        """The elements of a list with their paths; a non-list is reported and reads as empty."""
        value = self.data.get(key)
        if value is None or value is INVALID:
            return []
        if not isinstance(value, list):
            self.ctx.error(self.at(key), f"expected a list of {what}, got {describe(value)}")
            return []
        return [(join(self.at(key), index), item) for index, item in enumerate(value)]

    def path_to(self, key: str, check: Callable[[Path], T]) -> T | None:
        """The file named by ``key`` (relative to the config's directory) through ``check``."""
        path = self.file(key)
        if path is None:
            return None
        return self.convert(self.at(key), path, None, check)

    def file(self, key: str) -> Path | None:
        """The file named by ``key``, relative to the config's directory (read later, by whoever
        parses it, which reports a file it cannot read)."""
        name = self.get(key, None, _file_name)
        return None if name is None else files.resolve(self.ctx.base_dir, name)

    def exclusive(self, first: str, second: str) -> bool:
        """Report when both ``first`` and ``second`` are given; ``True`` when at most one is."""
        if self.has(first) and self.has(second):
            self.ctx.error(self.path, f"give either {first} or {second}, not both")
            return False
        return True


def _file_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a file path, got {describe(value)}")
    return str(value)
