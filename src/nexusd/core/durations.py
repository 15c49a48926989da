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
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> dt.timedelta:
    """Parse like Go's `time.ParseDuration`; raise ValueError naming the text when invalid."""
    body = text.strip()
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return dt.timedelta(0)
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total_ns = 0.0
    position = 0
    for match in _PART.finditer(body):
        if match.start() != position:
            raise ValueError(f"invalid duration {text!r}")
        total_ns += float(match.group(1)) * _UNIT_NS[match.group(2)]
        position = match.end()
    if position != len(body):
        raise ValueError(f"invalid duration {text!r}: missing or unknown unit")
    return dt.timedelta(microseconds=sign * total_ns / 1_000)


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
