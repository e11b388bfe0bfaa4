"""Converters from one YAML value to a typed one; each raises :class:`Invalid` with the rule broken.

They are strict on purpose: ``"yes"`` is not a boolean and ``true`` is not a number. Strings that
came from ``${VAR}`` are the exception (see :class:`~gateway.config.interpolate.EnvStr`), since
the environment can only hold strings.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gateway.config.errors import describe
from gateway.config.interpolate import EnvStr
from gateway.config.units import format_duration, parse_duration, parse_size

# RFC 9110 token characters: HTTP methods, header names and (RFC 6265) cookie names.
HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Invalid(ValueError):
    """A value broke a rule; ``at`` is a path suffix (``"[1]"``) when one element is at fault.

    :attr:`problems` lists every ``(at, message)`` so one list can report all its bad elements.
    """

    def __init__(self, message: str, *, at: str = "") -> None:
        super().__init__(message)
        self.problems: list[tuple[str, str]] = [(at, message)]

    @classmethod
    def combine(cls, errors: Sequence[Invalid]) -> Invalid:
        combined = cls(errors[0].problems[0][1], at=errors[0].problems[0][0])
        combined.problems = [problem for error in errors for problem in error.problems]
        return combined


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when ``word`` is close to one of ``options``, else ``""``."""
    candidates = list(options)
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not close:
        close = [option for option in candidates if option.lower() == word.lower()][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def quoted(options: Sequence[str]) -> str:
    """``"a", "b" or "c"``."""
    items = [f'"{option}"' for option in options]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {describe(value)}")
    return str(value)  # drops the EnvStr marker


def text(value: Any) -> str:
    """A string that is not blank."""
    result = string(value)
    if not result.strip():
        raise Invalid("must not be empty")
    return result


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, EnvStr) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise Invalid(f"expected true or false, got {describe(value)}")


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, EnvStr) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected a whole number, got {describe(value)}")
        if minimum is not None and value < minimum:
            raise Invalid(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise Invalid(f"must be at most {maximum}, got {value}")
        return value

    return convert


def duration(*, positive: bool = False, maximum: float | None = None) -> Callable[[Any], float]:
    """Seconds; ``positive`` rejects zero, ``maximum`` is inclusive."""

    def convert(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if positive and seconds == 0:
            raise Invalid("must be longer than zero")
        if maximum is not None and seconds > maximum:
            raise Invalid(f"must be at most {format_duration(maximum)}, got {describe(value)}")
        return seconds

    return convert


def size(value: Any) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        # YAML 1.1 reads a bare `off` as false; take it as the word the user wrote.
        if value is False and "off" in options:
            return "off"
        if isinstance(value, str) and value in options:
            return str(value)
        hint = did_you_mean(value, options) if isinstance(value, str) else ""
        raise Invalid(f"expected {quoted(options)}, got {describe(value)}{hint}")

    return convert


def string_list(what: str, check: Callable[[str], str] = text) -> Callable[[Any], tuple[str, ...]]:
    """A list of strings, e.g. ``what="role names"``; ``check`` validates each element."""

    def convert(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise Invalid(f"expected a list of {what}, got {describe(value)}")
        items: list[str] = []
        errors: list[Invalid] = []
        for index, item in enumerate(value):
            try:
                items.append(check(item))
            except Invalid as exc:
                errors.append(Invalid(str(exc), at=f"[{index}]"))
        if errors:
            raise Invalid.combine(errors)
        return tuple(items)

    return convert


def http_token(value: Any) -> str:
    """An RFC 9110 token (header names, methods)."""
    result = string(value)
    if not HTTP_TOKEN.fullmatch(result):
        raise Invalid(
            f"expected an HTTP token (letters, digits and !#$%&'*+-.^_`|~), got {describe(value)}"
        )
    return result
