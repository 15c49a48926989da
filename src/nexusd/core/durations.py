"""Go duration strings (`"6h"`, `"90m"`, `"1h30m0.5s"`), as upstream's API and config use them.

Written by hand because the contract is Go's `time.ParseDuration` / `Duration.String()` exactly
(units ns..h, signed, fractional, `24h0m0s` output), and no maintained Python package implements
both directions with those rules.
"""

from __future__ import annotations

import datetime as dt
import re

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
#: Go's Duration is an int64 of nanoseconds: at most 2562047h47m16.854775807s, about 292 years.
_MAX_NS = 2**63 - 1
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> dt.timedelta:
    """Parse like Go's `time.ParseDuration`; raise ValueError naming the text when invalid,
    including beyond Go's range (Go answers `invalid duration` there too)."""
    body = text.strip()
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return dt.timedelta(0)
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total_ns = 0
    position = 0
    for match in _PART.finditer(body):
        if match.start() != position:
            raise ValueError(f"invalid duration {text!r}")
        total_ns += _nanoseconds(match.group(1), _UNIT_NS[match.group(2)], text)
        if total_ns > _MAX_NS + (sign < 0):  # Go's range is -2**63 ns .. 2**63-1 ns
            raise _out_of_range(text)
        position = match.end()
    if position != len(body):
        raise ValueError(f"invalid duration {text!r}: missing or unknown unit")
    seconds, rest_ns = divmod(sign * total_ns, 1_000_000_000)
    return dt.timedelta(seconds=seconds, microseconds=rest_ns / 1_000)


def _nanoseconds(number: str, unit_ns: int, text: str) -> int:
    """`number` units in whole nanoseconds, in integers as Go computes them (a float
    overflows on long digit strings)."""
    whole, _, fraction = number.partition(".")
    whole = whole.lstrip("0")
    if len(whole) > 19:  # more than any int64 of nanoseconds (and than int() may convert)
        raise _out_of_range(text)
    fraction = fraction[:19]  # Go ignores the digits after these too
    fraction_ns = int(fraction) * unit_ns // 10 ** len(fraction) if fraction else 0
    return int(whole or "0") * unit_ns + fraction_ns


def _out_of_range(text: str) -> ValueError:
    return ValueError(
        f"invalid duration {text!r}: out of range, Go durations go up to "
        "2562047h47m16.854775807s (about 292 years)"
    )


def format_go_duration(value: dt.timedelta) -> str:
    """Format like Go's `Duration.String()` for durations of one second or more (`24h0m0s`)."""
    micros = round(value.total_seconds() * 1_000_000)
    if micros == 0:
        return "0s"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    if micros < 1_000_000:
        return f"{sign}{micros / 1_000:g}ms" if micros >= 1_000 else f"{sign}{micros}µs"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = f"{rest / 1_000_000:.6f}".rstrip("0").rstrip(".")
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"
