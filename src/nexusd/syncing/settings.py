"""The sync engine's settings: plain values, mapped by `nexusd controller` from its settings.

Defaults are upstream's (`NEXUS__ALIAS`, `NEXUS__CONTROLLER_NAMESPACE`,
`NEXUS__FAILURE_RATE_BASE_DELAY` / `..._MAX_DELAY`, the 30 s informer resync).
"""

from __future__ import annotations

from pathlib import Path  # noqa: TC003 (attrs resolves the annotation at run time)

import attrs


@attrs.frozen
class SyncSettings:
    alias: str = "controller-cluster"
    """Value of the `configuration-owner` label on every copy, so several controllers (or
    environments) can sync into one shard without touching each other's copies."""
    namespace: str = "nexus"
    """The one namespace followed in the controller cluster and mirrored in every shard."""
    shards_dir: Path | None = None
    """Directory of `<shard>.kubeconfig` files; None: only the shards passed in directly."""
    shards_rescan: float = 10.0
    """Seconds between scans of `shards_dir` (files added, removed or changed)."""
    backoff_base: float = 0.03
    """Seconds before a failed key is retried the first time; doubles per failure."""
    backoff_max: float = 5.0
    """Longest retry delay of a failed key, in seconds."""
    resync: float = 30.0
    """Seconds between full re-lists of every informer (a missed event is caught then)."""
    sweep_interval: float = 60.0
    """Seconds between orphan sweeps of each shard (copies no controller object needs)."""
