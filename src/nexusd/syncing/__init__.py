"""The configuration-sync engine behind `nexusd controller` (upstream's Nexus Configuration
Controller): templates and workgroups of the controller cluster, and the Secrets and
ConfigMaps templates reference, copied into every shard and kept there.

    references.py       what a template needs in a shard (pure)
    copies.py           the shard copy of an object; has it drifted (pure)
    queueing.py         unique keys with per-key back-off
    cache.py            informer sink: objects by name, change callbacks
    status.py           live state: per-shard results, /readyz
    shard_writes.py     the writes for one key in one shard
    shard_sync.py       one shard's reconciler: queue, watches, status
    sweeping.py         the orphan sweep of one shard
    shard_directory.py  reconcilers per kubeconfig, hot reloaded
    controller_side.py  finalizers, statuses, events, adoption in the controller cluster
    reporting.py        the status and Events (pure)
    engine.py           run_configuration_sync: the wiring
"""

from nexusd.syncing.engine import run_configuration_sync
from nexusd.syncing.settings import SyncSettings
from nexusd.syncing.status import SyncStatus

__all__ = ["SyncSettings", "SyncStatus", "run_configuration_sync"]
