"""Durations and sizes as written in the YAML (``30s``, ``10MiB``) and back."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from gateway.config.errors import describe

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {
    "ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600),
    "d": Decimal(86400),
}
_DURATION_HELP = (
    'a number with a unit ms, s, m, h or d (e.g. "500ms", "30s", "5m", "8h", "2d") '
    "or a number of seconds"
)

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?")
_SIZE_UNITS = {
    "B": 1,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
}
_SIZE_HELP = (
    'a number with a unit B, KiB, MiB, GiB, TiB, KB, MB, GB or TB (e.g. "512KiB", "10MiB") '
    "or a number of bytes"
)


def parse_duration(value: object) -> float:
    """Seconds in ``value``: ``"500ms"``, ``"30s"``, ``"5m"``, ``"8h"``, ``"2d"`` or a number.

    Raises :class:`ValueError` naming the value and the accepted forms.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"invalid duration {describe(value)}: must be a finite number")
        if value < 0:
            raise ValueError(f"invalid duration {describe(value)}: must not be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match:
            number, unit = match.groups()
            return float(Decimal(number) * _DURATION_UNITS[unit or "s"])
        if value.strip().startswith("-"):
            raise ValueError(f"invalid duration {describe(value)}: must not be negative")
        raise ValueError(f"invalid duration {describe(value)}: expected {_DURATION_HELP}")
    raise ValueError(f"expected a duration, {_DURATION_HELP}, got {describe(value)}")


def parse_size(value: object) -> int:
    """Bytes in ``value``: ``"512KiB"``, ``"10MiB"``, ``"1GiB"``, ``"1MB"`` or an integer of bytes.

    ``KiB``/``MiB``/``GiB`` are powers of 1024, ``KB``/``MB``/``GB`` powers of 1000. Raises
    :class:`ValueError` naming the value and the accepted forms.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"invalid size {value}: must not be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match:
            number, unit = match.groups()
            size = Decimal(number) * _SIZE_UNITS[unit or "B"]
            if size != size.to_integral_value():
                raise ValueError(f"invalid size {describe(value)}: not a whole number of bytes")
            return int(size)
        if value.strip().startswith("-"):
            raise ValueError(f"invalid size {describe(value)}: must not be negative")
        raise ValueError(f"invalid size {describe(value)}: expected {_SIZE_HELP}")
    raise ValueError(f"expected a size, {_SIZE_HELP}, got {describe(value)}")


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` for messages: ``28800`` -> ``"8h"``."""
    millis = round(seconds * 1000)
    for unit, factor in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % factor == 0:
            return f"{millis // factor}{unit}"
    return f"{millis}ms"
