"""``${VAR}`` and ``${VAR:-default}`` in string values, applied to the parsed YAML tree.

Working on parsed values (not on the YAML text) means an environment variable can only ever
become a string value: it cannot inject keys, lists or YAML syntax.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final


class EnvStr(str):
    """A string that took (part of) its value from the environment.

    Numeric and boolean fields accept these (``workers: ${WORKERS:-2}``), while a literal YAML
    string stays a type error there (``workers: "2"``).
    """

    __slots__ = ()


class _Invalid:
    """Stands in for a value whose problem was already reported, so it is not reported twice."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()

# "$${" is an escape for a literal "${"; a reference without its "}" runs to the end of the string.
_REFERENCE = re.compile(r"\$(\$?)\{([^}]*)(\}?)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

ReportError = Callable[[str, str], None]


def interpolate_tree(value: Any, env: Mapping[str, str], error: ReportError, path: str = "") -> Any:
    """A copy of ``value`` with every string interpolated; the input is never modified.

    Strings with a problem become :data:`INVALID` after ``error(path, message)`` is called.
    """
    # Memoised by identity so YAML aliases stay shared (and recursive ones terminate) instead
    # of being expanded exponentially.
    memo: dict[int, Any] = {}

    def walk(node: Any, at: str) -> Any:
        if isinstance(node, str):
            return _interpolate(node, env, error, at)
        if id(node) in memo:
            return memo[id(node)]
        if isinstance(node, dict):
            mapping: dict[Any, Any] = {}
            memo[id(node)] = mapping
            for key, item in node.items():
                mapping[key] = walk(item, f"{at}.{key}" if at else str(key))
            return mapping
        if isinstance(node, list):
            sequence: list[Any] = []
            memo[id(node)] = sequence
            sequence.extend(walk(item, f"{at}[{index}]") for index, item in enumerate(node))
            return sequence
        return node

    return walk(value, path)


def _interpolate(text: str, env: Mapping[str, str], error: ReportError, path: str) -> Any:
    if "${" not in text:
        return text
    problems: list[str] = []
    substituted = False

    def replace(match: re.Match[str]) -> str:
        nonlocal substituted
        escaped, inner, closing = match.groups()
        if escaped:
            return "${" + inner + closing
        if not closing:
            problems.append(
                f'unterminated "${{{inner}": add the closing "}}" '
                f'(write "$${{" for a literal "${{")'
            )
            return ""
        substituted = True
        name, has_default, default = inner.partition(":-")
        if not _NAME.fullmatch(name):
            problems.append(
                f'invalid reference "${{{inner}}}": expected ${{NAME}} or ${{NAME:-default}}'
            )
            return ""
        found = env.get(name)
        # Shell semantics: ":-" also replaces a variable that is set but empty.
        if found is None or (has_default and found == ""):
            if has_default:
                return default
            problems.append(
                f"environment variable {name} is not set "
                f"(set it, or give a default: ${{{name}:-default}})"
            )
            return ""
        return found

    result = _REFERENCE.sub(replace, text)
    if problems:
        for problem in problems:
            error(path, problem)
        return INVALID
    return EnvStr(result) if substituted else result
