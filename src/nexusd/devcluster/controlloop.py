"""What the ReplicaSet and Deployment controllers share: an owner index and the sync loop.

Both follow the store's change history like kube-controller-manager's informers do: a change
of an object, or of one it controls, marks the controller's object dirty, and each dirty one is
converged with one `sync(key)`, which may ask for another look at a trio time (a pod becoming
available after minReadySeconds, a pod create to retry). Intervals use `trio.current_time()`,
so autojump-clock tests run them instantly.
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, NoReturn

import trio

from .storage import TooOld

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .objects import Obj
    from .operations import Operations
    from .storage import Change, ResourceKey

Key = tuple[str, str]  # (namespace, name)


def key_of(obj: Obj) -> Key:
    """An object's (namespace, name)."""
    return (obj["metadata"]["namespace"], obj["metadata"]["name"])


def controller_ref(obj: Obj, kind: str) -> Obj | None:
    """The ownerReference with `controller: true` naming a `kind`, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


class OwnerIndex:
    """Controller uid -> names of the `resource` objects it controls, kept from the changes."""

    def __init__(self, ops: Operations, resource: ResourceKey, owner_kind: str) -> None:
        self.ops = ops
        self.resource = resource
        self.owner_kind = owner_kind
        self.names: dict[str, set[str]] = collections.defaultdict(set)

    def rebuild(self) -> None:
        self.names.clear()
        for obj in self.ops.store.iter(self.resource):
            self.add(obj)

    def add(self, obj: Obj) -> None:
        ref = controller_ref(obj, self.owner_kind)
        if ref is not None:
            self.names[ref["uid"]].add(obj["metadata"]["name"])

    def follow(self, change: Change) -> Key | None:
        """Index one change; the (namespace, name) of the controller it concerns, if any."""
        owner = None
        for state in (change.old, change.obj):
            ref = controller_ref(state, self.owner_kind) if state else None
            if ref is not None:
                self.names[ref["uid"]].discard(change.obj["metadata"]["name"])
                owner = (change.obj["metadata"]["namespace"], ref["name"])
        if change.type != "DELETED":
            self.add(change.obj)
        return owner

    def owned(self, owner: Obj) -> list[Obj]:
        """Copies of the objects `owner` controls (by uid), in name order."""
        meta = owner["metadata"]
        out = []
        for name in sorted(self.names.get(meta["uid"], ())):
            obj = self.ops.store.get(self.resource, meta["namespace"], name)
            ref = controller_ref(obj, self.owner_kind) if obj else None
            if obj is not None and ref is not None and ref["uid"] == meta["uid"]:
                out.append(obj)
        return out


async def run_control_loop(
    *,
    ops: Operations,
    sync: Callable[[Key], float | None],
    dirty_from: Callable[[Change], Iterable[Key]],
    resync: Callable[[], set[Key]],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Sync every key `resync` gives, then the keys `dirty_from` finds in each change, and
    each key again at the time its last sync asked for. `resync` also rebuilds the caller's
    indexes (at start, and when the change history moved on too far)."""
    dirty = resync()
    cursor = ops.store.resource_version
    timers: dict[Key, float] = {}
    task_status.started()
    while True:
        for key in sorted(dirty):
            timers.pop(key, None)
            wake = sync(key)
            if wake is not None:
                timers[key] = wake
        with trio.move_on_at(min(timers.values(), default=math.inf)):
            await ops.store.wait_after(cursor)
        try:
            changes = ops.store.changes_since(cursor)
            dirty = {key for change in changes for key in dirty_from(change)}
        except TooOld:
            dirty = resync()
        cursor = ops.store.resource_version
        now = trio.current_time()
        dirty |= {key for key, at in timers.items() if at <= now}
