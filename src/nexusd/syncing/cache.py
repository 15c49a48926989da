"""An informer sink that remembers objects by name and reports every change.

Both sides of the sync keep one: the controller cluster's templates, workgroups, Secrets and
ConfigMaps (the desired state), and each shard's copies (what is there). `on_change(resource,
old, new)` is called for every object a watch event or a re-list adds, changes or removes
(old or new is None), so the caller can enqueue exactly the keys affected, including those a
removed reference no longer names. The sync writes its own results back with `put`/`discard`
(no callback), so the next decision does not wait for the watch to catch up. Every object
kept has its `apiVersion` and `kind`, which list items lack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nexusd.kube.client import Resource, WatchEvent

Obj = dict[str, Any]
OnChange = Callable[[Resource, Obj | None, Obj | None], None]


def name_of(obj: Mapping[str, Any]) -> str:
    """`metadata.name`, or "" when absent."""
    return str((obj.get("metadata") or {}).get("name") or "")


def is_live(obj: Mapping[str, Any] | None) -> bool:
    """True for an object that exists and is not being deleted."""
    return obj is not None and not (obj.get("metadata") or {}).get("deletionTimestamp")


class ObjectCache:
    """The last known objects of some resources in one namespace, by name."""

    def __init__(self, resources: Iterable[Resource], *, on_change: OnChange) -> None:
        self._objects: dict[str, dict[str, Obj]] = {r.plural: {} for r in resources}
        self._on_change = on_change

    def get(self, resource: Resource, name: str) -> Obj | None:
        """The object called `name`, or None."""
        return self._objects[resource.plural].get(name)

    def items(self, resource: Resource) -> list[Obj]:
        """Every object of `resource`, by name."""
        objects = self._objects[resource.plural]
        return [objects[name] for name in sorted(objects)]

    def put(self, resource: Resource, obj: Obj) -> None:
        """Remember an object this process just wrote."""
        self._objects[resource.plural][name_of(obj)] = _typed(resource, obj)

    def discard(self, resource: Resource, name: str) -> None:
        """Forget an object this process just deleted."""
        self._objects[resource.plural].pop(name, None)

    def replace_all(self, resource: Resource, items: list[Obj]) -> None:
        """A (re-)list: report what appeared, changed or vanished since the last view."""
        old = self._objects[resource.plural]
        new = {name_of(item): _typed(resource, item) for item in items if name_of(item)}
        self._objects[resource.plural] = new
        for name in sorted(old.keys() | new.keys()):
            self._on_change(resource, old.get(name), new.get(name))

    def resync(self, resource: Resource) -> None:
        """The informer's periodic resync: replay every cached object as unchanged (client-go
        delivers an update with old == new), so the controller looks at each one again."""
        objects = self._objects[resource.plural]
        for name in sorted(objects):
            self._on_change(resource, objects[name], objects[name])

    def apply(self, resource: Resource, event: WatchEvent) -> None:
        """One watch event (BOOKMARK changes nothing)."""
        name = name_of(event.object)
        if not name or event.type not in ("ADDED", "MODIFIED", "DELETED"):
            return
        objects = self._objects[resource.plural]
        old = objects.get(name)
        if event.type == "DELETED":
            objects.pop(name, None)
            self._on_change(resource, old, None)
        else:
            objects[name] = _typed(resource, event.object)
            self._on_change(resource, old, objects[name])


def _typed(resource: Resource, obj: Obj) -> Obj:
    """`obj` with its apiVersion and kind (list items come without them)."""
    obj.setdefault("apiVersion", resource.api_version)
    obj.setdefault("kind", resource.kind)
    return obj
