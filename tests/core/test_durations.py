"""Go duration parsing and formatting: pure functions, nothing faked."""

import datetime as dt

import pytest

from nexusd.core.durations import format_go_duration, parse_go_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6h", 21600),
        ("90m", 5400),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("100ms", 0.1),
        ("2h45m30.5s", 9930.5),
        ("0", 0),
        ("-1m", -60),
        ("24h0m0s", 86400),
        ("300us", 0.0003),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_go_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "6", "h", "6x", "1h 30m", "6hours", "--1s", "1.2.3s", "\u0666h", "1d"]
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration(text)


@pytest.mark.parametrize(
    "text",
    [
        "99999999999999999999h",
        "2562047h47m16.854775808s",  # Go's largest Duration + 1ns
        "9223372036854775808ns",
        "-9223372036854775809ns",
        "2562048h",
        "2562047h60m",
        "9" * 5000 + "h",  # more digits than int() converts by default
        "1000000h" * 3,
    ],
)
def test_parse_rejects_what_go_cannot_hold(text: str) -> None:
    with pytest.raises(ValueError, match="out of range, Go durations go up to 2562047h47m16"):
        parse_go_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2562047h47m16.854775807s", dt.timedelta(seconds=9223372036, microseconds=854776)),
        ("9223372036854775807ns", dt.timedelta(seconds=9223372036, microseconds=854776)),
        ("-9223372036854775808ns", -dt.timedelta(seconds=9223372036, microseconds=854776)),
        ("0000000000000000000000001h", dt.timedelta(hours=1)),
        ("1.0000000000000000000000000001h", dt.timedelta(hours=1)),
        ("1.5h", dt.timedelta(minutes=90)),
        ("0.1s", dt.timedelta(milliseconds=100)),
        ("1500ns", dt.timedelta(microseconds=2)),  # µs resolution, rounded half to even
        ("2500ns", dt.timedelta(microseconds=2)),
    ],
)
def test_parse_exactly_at_go_precision(text: str, expected: dt.timedelta) -> None:
    assert parse_go_duration(text) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (86400, "24h0m0s"),
        (21600, "6h0m0s"),
        (5400, "1h30m0s"),
        (90, "1m30s"),
        (1.5, "1.5s"),
        (0, "0s"),
        (0.1, "100ms"),
    ],
)
def test_format_like_go_duration_string(seconds: float, text: str) -> None:
    assert format_go_duration(dt.timedelta(seconds=seconds)) == text
