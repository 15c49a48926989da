"""The versioned object store: what etcd plus the watch cache are to a real API server.

Every write takes the next value of one global counter as the object's `resourceVersion` and
appends a `Change` to a bounded history. Watches and the in-process controllers read the
history from a resourceVersion onwards and then wait for the next write, so nothing polls.
A watch whose resourceVersion has fallen out of the history gets 410 Expired, as from the
real watch cache (checklist 25).

With a `Journal` (`DevClusterConfig.persist`) every write is also saved before the store
changes, so before the API server answers; a store opened on a journal starts with its objects
and continues the resourceVersion counter above the last one handed out, with an empty
history: a watch or list from an older resourceVersion gets 410 Expired and relists, as from a
real API server after etcd compaction.
"""

from __future__ import annotations

import collections
import copy
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterator

    from .objects import Obj

ResourceKey = tuple[str, str]  # (group, plural)
ObjectKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped


@attrs.frozen
class Change:
    """One write, as a watch sees it. `obj` is a private snapshot: never mutate it."""

    rv: int
    resource: ResourceKey
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    #: The object's previous state (None for ADDED); a selector watch needs it to turn a
    #: MODIFIED into ADDED/DELETED when the object enters or leaves the selector.
    old: Obj | None = None


class Journal(Protocol):
    """Where a persistent store keeps its objects (`persistence.SqliteJournal`)."""

    def load(self) -> tuple[int, builtins.list[tuple[ResourceKey, Obj]]]:
        """The last resourceVersion handed out (0 if none) and every stored object."""
        ...

    def save(self, resource: ResourceKey, key: ObjectKey, rv: int, obj: Obj | None) -> None:
        """Make this write survive a crash of the process: the object at `rv`, or its
        deletion at `rv` when `obj` is None."""
        ...


class TooOld(Exception):
    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class Store:
    """All objects of all types, plus the change history. Single-threaded (one trio loop)."""

    def __init__(
        self, *, history: int = 10_000, first_rv: int = 100, journal: Journal | None = None
    ) -> None:
        self._rv = first_rv
        self._objects: dict[ResourceKey, dict[ObjectKey, Obj]] = collections.defaultdict(dict)
        self._journal = journal
        if journal is not None:
            last_rv, objects = journal.load()
            self._rv = max(first_rv, last_rv)
            for resource, obj in objects:
                self._objects[resource][_key(obj)] = obj
        self._history: collections.deque[Change] = collections.deque(maxlen=history)
        self._evicted_through = self._rv
        self._changed = trio.Event()

    @property
    def resource_version(self) -> int:
        """The resourceVersion of the latest write (what a list reports)."""
        return self._rv

    def get(self, resource: ResourceKey, namespace: str, name: str) -> Obj | None:
        obj = self._objects[resource].get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def peek(self, resource: ResourceKey, namespace: str, name: str) -> Obj | None:
        """The stored object itself, without a copy: read-only use."""
        return self._objects[resource].get((namespace, name))

    def list(self, resource: ResourceKey, namespace: str | None = None) -> builtins.list[Obj]:
        """Copies of the objects, sorted by namespace then name (etcd key order)."""
        return [copy.deepcopy(o) for o in self.iter(resource, namespace)]

    def iter(self, resource: ResourceKey, namespace: str | None = None) -> Iterator[Obj]:
        """The stored objects (read-only), in key order."""
        items = self._objects[resource]
        for key in sorted(items):
            if namespace is None or key[0] == namespace:
                yield items[key]

    def resources(self) -> builtins.list[ResourceKey]:
        return list(self._objects)

    def put(self, resource: ResourceKey, obj: Obj) -> Obj:
        """Store `obj` (ADDED or MODIFIED), stamping a new resourceVersion; returns a copy."""
        key = _key(obj)
        old = self._objects[resource].get(key)
        stored = copy.deepcopy(obj)
        rv = self._rv + 1
        stored["metadata"]["resourceVersion"] = str(rv)
        if self._journal is not None:
            self._journal.save(resource, key, rv, stored)
        self._rv = rv
        self._objects[resource][key] = stored
        self._record(Change(rv, resource, "MODIFIED" if old else "ADDED", stored, old))
        return copy.deepcopy(stored)

    def remove(self, resource: ResourceKey, namespace: str, name: str) -> Obj | None:
        """Delete the object; the DELETED change carries its last state with a new RV."""
        old = self._objects[resource].get((namespace, name))
        if old is None:
            return None
        rv = self._rv + 1
        if self._journal is not None:
            self._journal.save(resource, (namespace, name), rv, None)
        self._rv = rv
        del self._objects[resource][(namespace, name)]
        final = copy.deepcopy(old)
        final["metadata"]["resourceVersion"] = str(rv)
        self._record(Change(rv, resource, "DELETED", final, old))
        return copy.deepcopy(final)

    def _record(self, change: Change) -> None:
        if len(self._history) == self._history.maxlen:
            self._evicted_through = self._history[0].rv
        self._history.append(change)
        self._changed.set()
        self._changed = trio.Event()

    @property
    def oldest_resource_version(self) -> int:
        """The oldest resourceVersion a watch or an Exact list can still start from."""
        return self._evicted_through

    def snapshot(self, resource: ResourceKey, namespace: str | None, rv: int) -> builtins.list[Obj]:
        """Copies of the objects as they were at `rv` (key order), rebuilt by undoing the
        history after it; raises TooOld if that history was evicted."""
        return [copy.deepcopy(o) for o in self.iter_snapshot(resource, namespace, rv)]

    def iter_snapshot(self, resource: ResourceKey, namespace: str | None, rv: int) -> Iterator[Obj]:
        """The objects as they were at `rv` (read-only, key order); raises TooOld at once if
        that history was evicted."""
        if rv < self._evicted_through:
            raise TooOld(rv, self._evicted_through + 1)
        state = dict(self._objects[resource])
        for change in reversed(self._history):
            if change.rv <= rv:
                break
            if change.resource != resource:
                continue
            key = _key(change.obj)
            if change.type == "ADDED" or change.old is None:
                state.pop(key, None)
            else:
                state[key] = change.old
        return (state[key] for key in sorted(state) if namespace is None or key[0] == namespace)

    def changes_since(self, rv: int) -> builtins.list[Change]:
        """Changes with resourceVersion > rv; raises TooOld if some were evicted."""
        if rv < self._evicted_through:
            raise TooOld(rv, self._evicted_through + 1)
        if rv >= self._rv:
            return []
        out = []
        for change in reversed(self._history):
            if change.rv <= rv:
                break
            out.append(change)
        out.reverse()
        return out

    async def wait_after(self, rv: int) -> None:
        """Return once a write with resourceVersion > rv exists."""
        while self._rv <= rv:
            await self._changed.wait()


def _key(obj: Obj) -> ObjectKey:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])
