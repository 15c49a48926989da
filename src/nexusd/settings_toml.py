"""Settings written back as TOML: `config/nexusd.example.toml` is `render(Settings())`, and
`nexusd config` prints the settings a mode would run with.

Written by hand: tomllib only reads, and the file's comments (each key's doc and env name)
are what make it useful; a TOML writer (tomli-w) would drop them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import attrs

from nexusd.core.durations import format_go_duration
from nexusd.settings import ENV_PREFIX, Settings

HEADER = """\
# nexusd settings: every key, its default and its environment variable.
# Precedence: built-in defaults < this file (--config) < NEXUS__SECTION__KEY environment < flags.
# Durations are Go duration strings ("100ms", "24h") or seconds; sizes are bytes or \
quantities ("64Mi").
# Unknown sections or keys, and values that do not parse, stop nexusd at start (exit code 2).
"""

#: The comment after each [section] header.
TITLES = {
    "http": "HTTP API",
    "node": "this process",
    "data": "data directory (nexusd dev and single-machine installs)",
    "store": "checkpoint store",
    "postgres": 'PostgreSQL checkpoint store (store.kind = "postgres")',
    "payloads": "payload and result store",
    "s3": 'S3 payload store (payloads.kind = "s3")',
    "kube": "Kubernetes",
    "submission": "virtual queues and Job submission",
    "maintainer": "maintainer (nexusd maintainer, and in nexusd dev)",
    "shutdown": "shutdown",
    "logging": "logging",
    "dev": "nexusd dev only",
    "controller": "nexusd controller: the configuration controller",
    "election": "leader election of nexusd controller replicas",
    "auth": "access control: bearer tokens for the API, completion tokens for the runs",
    "receiver": "where the runs' pods report completions",
    "warm": "warm pools: workers that lease runs instead of a Job per run",
    "worker": "nexusd worker: a warm pool's worker, in the pool's pods",
}

_SIZE_UNITS = (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def render(settings: Settings) -> str:
    """Every section and key of `settings`, each under its doc and environment name."""
    parts = [HEADER]
    for section in attrs.fields(Settings):
        group = getattr(settings, section.name)
        parts.append(f"\n[{section.name}]  # {TITLES.get(section.name, section.name)}\n")
        for field in attrs.fields(type(group)):
            env = f"{ENV_PREFIX}{section.name.upper()}__{field.name.upper()}"
            parts.append(f"# {field.metadata.get('doc', '')}. Env: {env}\n")
            value = _value(getattr(group, field.name), field.metadata.get("kind", ""))
            parts.append(f"{field.name} = {value}\n")
    return "".join(parts)


def format_value(dotted: str, value: Any) -> str:
    """`value` of the setting "section.key" as the TOML file spells it."""
    section, key = dotted.split(".", 1)
    field = attrs.fields_dict(type(getattr(Settings(), section)))[key]
    return _value(value, field.metadata.get("kind", ""))


def _value(value: Any, kind: str) -> str:
    if kind == "duration":
        return json.dumps(format_go_duration(dt.timedelta(seconds=value)))
    if kind == "size":
        for unit, factor in _SIZE_UNITS:
            if value and value % factor == 0:
                return json.dumps(f"{value // factor}{unit}")
        return str(value)
    if value is None or isinstance(value, Path):
        return json.dumps("" if value is None else str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)
