"""What the controller cluster is told: each object's status and the Events about it.

The status is a pure function of the object, its previous status and the shards' results, so
calling it again with nothing new gives an equal dict and the caller skips the write (no churn
on resync). Upstream's shape is kept (`conditions[type=Ready, reason=AlgorithmReady]` with its
messages, `syncedSecrets`, `syncedConfigurations`, `syncedToClusters`), with sorted lists,
Ready=False carrying the error when a sync fails, and one entry per shard:

    shards: [{name, ready, message, lastSyncTime}]

`lastSyncTime` is when a sync last changed something in that shard, kept from the previous
status when nothing did (a restart alone changes nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from nexusd.syncing.cache import name_of
from nexusd.syncing.references import template_references

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable, Mapping

    from nexusd.syncing.status import Kind, ShardState

COMPONENT: Final = "nexus-configuration-controller"
READY_REASON: Final = "AlgorithmReady"
_LABELS: Final = {"template": "Algorithm", "workgroup": "Workgroup"}


def desired_status(
    obj: Mapping[str, Any], *, kind: Kind, shards: Iterable[ShardState], now: dt.datetime
) -> dict[str, Any]:
    """The status `obj` should have, given every shard's last result for it."""
    name = name_of(obj)
    previous = obj.get("status") or {}
    previous_shards = {entry.get("name"): entry for entry in previous.get("shards") or []}
    entries = [
        _shard_entry(shard, (kind, name), previous_shards.get(shard.name), now)
        for shard in sorted(shards, key=lambda shard: shard.name)
    ]
    label = f'{_LABELS[kind]} "{name}"'
    failed = [entry for entry in entries if not entry["ready"] and entry["message"] != "pending"]
    if failed:
        ready, message = False, f'{failed[0]["message"]} (shard "{failed[0]["name"]}")'
    elif all(entry["ready"] for entry in entries):
        ready, message = True, f"{label} ready"
    else:
        ready, message = False, f"{label} initializing"
    status: dict[str, Any] = {
        "conditions": [_ready_condition(previous, ready, message, now)],
        "syncedToClusters": [entry["name"] for entry in entries if entry["ready"]],
        "shards": entries,
    }
    if kind == "template":
        refs = template_references(obj)
        synced = bool(status["syncedToClusters"])
        status["syncedSecrets"] = list(refs.secrets) if synced else []
        status["syncedConfigurations"] = list(refs.configmaps) if synced else []
    return status


def initial_status(obj: Mapping[str, Any], *, kind: Kind, now: dt.datetime) -> dict[str, Any]:
    """Upstream's first status: Ready=False, "<Label> "<n>" initializing"."""
    message = f'{_LABELS[kind]} "{name_of(obj)}" initializing'
    return {"conditions": [_ready_condition({}, False, message, now)]}


def is_ready(status: Mapping[str, Any]) -> bool:
    """True if the status's Ready condition is True."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def announces_sync(previous: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True if moving from `previous` to `desired` deserves a `Synced` event: the object is
    ready and either was not, or a shard has just received a change."""
    if not is_ready(desired):
        return False
    before = {e.get("name"): e.get("lastSyncTime") for e in previous.get("shards") or []}
    changed = any(e.get("lastSyncTime") != before.get(e["name"]) for e in desired["shards"])
    return changed or not is_ready(previous)


def event(
    obj: Mapping[str, Any], *, reason: str, message: str, warning: bool, now: dt.datetime
) -> dict[str, Any]:
    """A core v1 Event about `obj`, from upstream's component."""
    metadata = obj["metadata"]
    timestamp = _timestamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid", ""),
            "resourceVersion": metadata.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }


def synced_message(obj: Mapping[str, Any]) -> str:
    """Upstream's `Synced` message."""
    return f"Resource of type {obj['kind']} synced successfully"


def _shard_entry(
    shard: ShardState, key: tuple[Kind, str], previous: Mapping[str, Any] | None, now: dt.datetime
) -> dict[str, Any]:
    result = shard.results.get(key)
    if result is None:
        ready = False
        message = "pending" if shard.reachable else f"shard unreachable: {shard.last_error}"
    else:
        ready, message = result.ok, result.message
    entry: dict[str, Any] = {"name": shard.name, "ready": ready, "message": message}
    if result is not None and result.wrote_at is not None:
        entry["lastSyncTime"] = _timestamp(result.wrote_at)
    elif previous and previous.get("lastSyncTime"):
        entry["lastSyncTime"] = previous["lastSyncTime"]
    elif ready:
        entry["lastSyncTime"] = _timestamp(now)
    return entry


def _ready_condition(
    previous: Mapping[str, Any], ready: bool, message: str, now: dt.datetime
) -> dict[str, Any]:
    """The Ready condition; its transition time moves only when its status does."""
    status = "True" if ready else "False"
    old: Mapping[str, Any] = next(
        (c for c in previous.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    moved = old.get("status") != status or not old.get("lastTransitionTime")
    return {
        "type": "Ready",
        "status": status,
        "reason": READY_REASON,
        "message": message,
        "lastTransitionTime": _timestamp(now) if moved else old["lastTransitionTime"],
    }


def _timestamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
