"""A template's `spec.warmPool`: runs served by a pool of long-lived workers instead of a Job
each (design of issue 13, §1).

Kept apart from `nexusd.kube.pools` (which builds the pool's Deployment from the Job's pod
spec) because `validate_template_spec` checks this field too, and the Job manifests depend on
that validation: this module depends on nothing of nexusd, so the three import without a cycle.
`nexusd.kube.pools` re-exports `WarmPool` and `warm_pool_problems`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

FIELD: Final = "warmPool"
#: Replicas, concurrency and counters are Go int32s in the Deployment and the CRD.
_INT32_MAX: Final = 2**31 - 1
#: "module:function", each side dotted Python identifiers (`pkg.mod:Class.method`).
_HANDLER: Final = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
#: The integer fields: (CRD name, attrs field, lowest allowed value).
_INTEGERS: Final = (
    ("minWorkers", "min_workers", 0),
    ("maxWorkers", "max_workers", 1),
    ("concurrency", "concurrency", 1),
    ("runsPerWorker", "runs_per_worker", 0),
    ("idleTimeoutSeconds", "idle_timeout_seconds", 0),
)


@attrs.frozen
class WarmPool:
    """A valid `spec.warmPool`, with the defaults of a field left out."""

    #: workers kept running without demand
    min_workers: int = 1
    #: workers the pool grows to at most
    max_workers: int = 4
    #: runs one worker holds at once
    concurrency: int = 1
    #: runs after which a worker exits to be restarted (recycled); 0 = never
    runs_per_worker: int = 0
    #: the pool scales down (to what demand needs, at least `min_workers`) only after demand
    #: stayed below its size this long
    idle_timeout_seconds: int = 300
    #: "module:function" the workers call in-process; "" = run the template's command per run
    handler: str = ""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> WarmPool | None:
        """The template's pool, or None when it has none (runs become Jobs).

        Raises ValueError naming the problems when `spec.warmPool` is invalid.
        """
        raw = spec.get(FIELD)
        if raw is None:
            return None
        problems = warm_pool_problems(spec)
        if problems:
            raise ValueError("; ".join(problems))
        values = {name: raw[key] for key, name, _ in _INTEGERS if raw.get(key) is not None}
        return cls(handler=raw.get("handler") or "", **values)


def warm_pool_problems(spec: Mapping[str, Any]) -> list[str]:
    """Problems with a template spec's `warmPool` (empty list = fine, or no pool at all)."""
    raw = spec.get(FIELD)
    where = f"spec.{FIELD}"
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        return [f"{where}: must be an object"]
    problems = []
    for key, _, lowest in _INTEGERS:
        value = raw.get(key)
        if value is not None and not (_is_int(value) and lowest <= value <= _INT32_MAX):
            problems.append(f"{where}.{key}: must be an integer from {lowest} to {_INT32_MAX}")
    least, most = raw.get("minWorkers", 1), raw.get("maxWorkers", 4)
    if _is_int(least) and _is_int(most) and most < least:
        problems.append(f"{where}.maxWorkers must be >= minWorkers ({most} < {least})")
    handler = raw.get("handler")
    if handler is not None and not isinstance(handler, str):
        problems.append(f"{where}.handler: must be a string")
    elif handler and _HANDLER.fullmatch(handler) is None:
        problems.append(
            f"{where}.handler: {handler[:80]!r} is not 'module:function' (dotted Python names)"
        )
    return problems


def _is_int(value: object) -> bool:
    """JSON integers only: booleans are ints to Python, and 1.0 is none to Go's decoder."""
    return isinstance(value, int) and not isinstance(value, bool)
