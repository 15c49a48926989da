"""The garbage collector: ownerReference cascades and the foreground/orphan finalizers.

It follows the store's change history (no polling) and keeps an index from owner uid to
dependents. When an owner disappears its dependents are deleted in the background (08a, 08e).
An owner being deleted with `foregroundDeletion` loses the finalizer once its dependents are
gone (08b, 06); one with `orphan` first has its uid stripped from the dependents'
ownerReferences (08c, 08d). Like the real GC it records no Events. Started on a persisted store,
it first finishes what a crashed cluster left halfway: dependents of owners already gone are
deleted, foreground and orphan deletions completed.
"""

from __future__ import annotations

import collections
import logging
from typing import NoReturn

import trio

from .objects import ApiError, Obj, owner_uids
from .operations import FOREGROUND, ORPHAN, Operations
from .storage import Change, ResourceKey, TooOld

logger = logging.getLogger(__name__)

Ref = tuple[ResourceKey, str, str]


class GarbageCollector:
    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        self.dependents: dict[str, set[Ref]] = collections.defaultdict(set)
        self.pending: set[Ref] = set()

    def rebuild(self) -> None:
        self.dependents.clear()
        self.pending.clear()
        for key in self.ops.store.resources():
            for obj in self.ops.store.iter(key):
                self._index(key, obj)

    def vanished_owners(self) -> list[str]:
        """Owner uids that dependents name but no stored object has."""
        uids = {
            obj["metadata"]["uid"]
            for key in self.ops.store.resources()
            for obj in self.ops.store.iter(key)
        }
        return [uid for uid in self.dependents if uid not in uids]

    def _ref(self, key: ResourceKey, obj: Obj) -> Ref:
        meta = obj["metadata"]
        return (key, meta.get("namespace", ""), meta["name"])

    def _index(self, key: ResourceKey, obj: Obj) -> None:
        ref = self._ref(key, obj)
        for uid in owner_uids(obj):
            self.dependents[uid].add(ref)
        finalizers = obj["metadata"].get("finalizers") or []
        if obj["metadata"].get("deletionTimestamp") and (
            FOREGROUND in finalizers or ORPHAN in finalizers
        ):
            self.pending.add(ref)

    def observe(self, change: Change) -> str | None:
        """Update the index; return the uid of an owner that just disappeared."""
        ref = self._ref(change.resource, change.obj)
        if change.old is not None:
            for uid in owner_uids(change.old):
                self.dependents[uid].discard(ref)
        if change.type == "DELETED":
            return str(change.obj["metadata"]["uid"])
        self._index(change.resource, change.obj)
        return None

    def _live(self, uid: str) -> list[tuple[Obj, Ref]]:
        out = []
        for ref in list(self.dependents.get(uid, ())):
            obj = self.ops.store.peek(*ref)
            if obj is None or uid not in owner_uids(obj):
                self.dependents[uid].discard(ref)
            else:
                out.append((obj, ref))
        return out

    def _delete(self, ref: Ref, obj: Obj) -> None:
        rt = self.ops.registry.by_key(ref[0])
        if rt is None or obj["metadata"].get("deletionTimestamp"):
            return
        try:
            self.ops.delete(
                rt,
                ref[1],
                ref[2],
                propagation="Background",
                preconditions={"uid": obj["metadata"]["uid"]},
            )
        except ApiError:
            logger.debug("gc: delete of %s lost a race", ref)

    def collect_orphaned_dependents(self, uid: str) -> None:
        for obj, ref in self._live(uid):
            self._delete(ref, obj)
        self.dependents.pop(uid, None)

    def finish_pending(self) -> None:
        for ref in list(self.pending):
            owner = self.ops.store.get(*ref)
            rt = self.ops.registry.by_key(ref[0])
            if owner is None or rt is None:
                self.pending.discard(ref)
                continue
            uid = owner["metadata"]["uid"]
            finalizers = owner["metadata"].get("finalizers") or []
            deps = self._live(uid)
            if ORPHAN in finalizers:
                for obj, dep_ref in deps:
                    self._strip_owner(dep_ref, obj, uid)
                finalizers.remove(ORPHAN)
            elif FOREGROUND in finalizers:
                for obj, dep_ref in deps:
                    self._delete(dep_ref, obj)
                if deps:
                    continue
                finalizers.remove(FOREGROUND)
            self.pending.discard(ref)
            owner["metadata"]["finalizers"] = finalizers
            self.ops.write(rt, owner)

    def _strip_owner(self, ref: Ref, obj: Obj, uid: str) -> None:
        rt = self.ops.registry.by_key(ref[0])
        if rt is None:
            return
        updated = self.ops.store.get(*ref)
        assert updated is not None
        refs = [r for r in updated["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
        if refs:
            updated["metadata"]["ownerReferences"] = refs
        else:
            updated["metadata"].pop("ownerReferences", None)
        self.ops.write(rt, updated)


async def run_garbage_collector(
    *, ops: Operations, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> NoReturn:
    gc = GarbageCollector(ops)
    gc.rebuild()
    for uid in gc.vanished_owners():
        gc.collect_orphaned_dependents(uid)
    gc.finish_pending()
    cursor = ops.store.resource_version
    task_status.started()
    while True:
        await ops.store.wait_after(cursor)
        try:
            changes = ops.store.changes_since(cursor)
        except TooOld:
            gc.rebuild()
            changes = []
        cursor = ops.store.resource_version
        gone = [uid for uid in (gc.observe(c) for c in changes) if uid]
        for uid in gone:
            gc.collect_orphaned_dependents(uid)
        gc.finish_pending()
