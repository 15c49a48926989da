"""The engine's live state: what `/readyz` reports and what template statuses are built from.

Each shard reconciler owns one `ShardState` and records there, per key, the outcome of its
last sync (`KeyResult`). The controller side reads those results to write each object's
status and emit events; `SyncStatus` gathers the shard states for the health endpoints. A shard
being down is reported here, never waited for: `ready()` depends on the controller cluster only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable

#: What a queue holds: ("template" | "workgroup" | "secret" | "configmap" | "sweep", name).
Kind = Literal["template", "workgroup", "secret", "configmap", "sweep"]
Key = tuple[Kind, str]
SWEEP: Key = ("sweep", "")


@attrs.frozen
class KeyResult:
    """The outcome of a shard's last sync of one template or workgroup.

    `reason` is the Warning event reason of a failure ("" when ok, or when the shard is only
    unreachable: that is reported per shard, not as an event per object). `deleted`: the source
    is gone or being deleted, and so is the shard copy. `wrote_at`: when a sync last changed
    something in the shard (None: not since this process started).
    """

    ok: bool
    message: str = ""
    reason: str = ""
    deleted: bool = False
    wrote_at: dt.datetime | None = None


@attrs.define
class ShardState:
    """One shard, as its reconciler last saw it."""

    name: str
    reachable: bool = False
    last_error: str = ""
    last_sync: dt.datetime | None = None
    results: dict[Key, KeyResult] = attrs.field(factory=dict)
    pending: Callable[[], int] = lambda: 0

    def details(self) -> dict[str, Any]:
        synced = sorted(f"{kind}/{name}" for (kind, name), r in self.results.items() if r.ok)
        return {
            "reachable": self.reachable,
            "last_error": self.last_error,
            "last_sync": self.last_sync.isoformat() if self.last_sync else None,
            "pending": self.pending(),
            "synced": synced,
        }


class SyncStatus:
    """Live state of `run_configuration_sync`, for `/readyz` and diagnostics."""

    def __init__(self) -> None:
        self.controller_synced = False
        self.shards: dict[str, ShardState] = {}

    def ready(self) -> bool:
        """True once the controller cluster's caches are loaded (shards may be down: they are
        reported in `details()`, and never hold readiness back)."""
        return self.controller_synced

    def details(self) -> dict[str, Any]:
        """Per shard: reachable, last error, keys pending, objects synced."""
        return {
            "controller_synced": self.controller_synced,
            "shards": {name: self.shards[name].details() for name in sorted(self.shards)},
        }
