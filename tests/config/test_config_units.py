import pytest

from gateway.config import parse_duration, parse_size
from gateway.config.units import format_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("8h", 28800.0),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        (" 10 s ", 10.0),
        ("45", 45.0),
        (45, 45.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
    ids=repr,
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5x", 'invalid duration "5x": expected a number with a unit ms, s, m, h or d'),
        ("5 minutes", 'invalid duration "5 minutes"'),
        ("5M", 'invalid duration "5M"'),
        ("", 'invalid duration ""'),
        ("-5s", 'invalid duration "-5s": must not be negative'),
        (-1, "invalid duration -1: must not be negative"),
        (float("inf"), "must be a finite number"),
        (True, "expected a duration"),
        (None, "got null"),
        ([1], "got a list"),
    ],
    ids=repr,
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="duration") as info:
        parse_duration(value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512KiB", 512 * 1024),
        ("10MiB", 10 * 1024**2),
        ("1GiB", 1024**3),
        ("1.5KiB", 1536),
        ("1KB", 1000),
        ("10MB", 10_000_000),
        ("1GB", 10**9),
        ("100B", 100),
        ("2048", 2048),
        (2048, 2048),
        (0, 0),
    ],
    ids=repr,
)
def test_parse_size_accepts(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10 megabytes", 'invalid size "10 megabytes": expected a number with a unit B, KiB'),
        ("10mib", 'invalid size "10mib"'),
        ("0.5B", "not a whole number of bytes"),
        ("-1KiB", "must not be negative"),
        (-1, "invalid size -1: must not be negative"),
        (1.5, "expected a size"),
        (False, "got false"),
    ],
    ids=repr,
)
def test_parse_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="size") as info:
        parse_size(value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(28800, "8h"), (1800, "30m"), (90, "90s"), (0.5, "500ms"), (172800, "2d"), (0, "0ms")],
)
def test_format_duration_is_exact_and_short(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
