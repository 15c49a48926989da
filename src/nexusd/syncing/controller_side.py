"""The controller cluster's side: what is desired, and what is reported back.

An informer follows the templates, workgroups, Secrets and ConfigMaps of the controller
namespace. Every change is fanned out to the shard reconcilers as the keys it affects (a
Secret/ConfigMap change re-syncs the templates referencing it), and queued here for:

- the finalizer: added to every live template and workgroup, so a delete waits until every
  shard has removed its copy (also a delete made while the controller was down: the object is
  still there, with a deletionTimestamp); removed once every shard reports its copy gone;
- the status, rebuilt from the shards' results and written only when it changed; Events when
  a sync starts failing (each distinct failure once) and `Synced` when it succeeds;
- adoption: the `referenced-by` annotation on each referenced Secret/ConfigMap, naming the
  templates that use it (an annotation, so no garbage collector ever deletes the user's object).

Write failures are retried with the key's back-off; the informer keeps the view current.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Final, NoReturn

import attrs
import trio

from nexusd.core.errors import KubeError
from nexusd.kube.client import CONFIGMAPS, EVENTS, SECRETS, TEMPLATES, WORKGROUPS, Resource
from nexusd.kube.watching import run_informer
from nexusd.syncing import reporting
from nexusd.syncing.cache import Obj, ObjectCache, is_live, name_of
from nexusd.syncing.copies import REFERENCED_BY_ANNOTATION
from nexusd.syncing.queueing import KeyQueue
from nexusd.syncing.references import template_references

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.core.clock import Clock
    from nexusd.kube.client import KubeClient
    from nexusd.syncing.settings import SyncSettings
    from nexusd.syncing.status import Key, Kind, ShardState, SyncStatus

logger = logging.getLogger(__name__)

FINALIZER: Final = "science.sneaksanddata.com/configuration-controller"
CONTROLLER_RESOURCES = (TEMPLATES, WORKGROUPS, SECRETS, CONFIGMAPS)
_RESOURCE_OF: Final[dict[str, Resource]] = {
    "template": TEMPLATES,
    "workgroup": WORKGROUPS,
    "secret": SECRETS,
    "configmap": CONFIGMAPS,
}
_KIND_OF: Final[dict[str, Kind]] = {
    TEMPLATES.plural: "template",
    WORKGROUPS.plural: "workgroup",
    SECRETS.plural: "secret",
    CONFIGMAPS.plural: "configmap",
}


@attrs.frozen
class _StatusOf(Resource):
    """The `/status` subresource of a resource (what the status is written through)."""

    def path(self, *, namespace: str | None, name: str | None = None) -> str:
        base = super().path(namespace=namespace, name=name)
        return base if name is None else f"{base}/status"


def status_of(resource: Resource) -> Resource:
    return _StatusOf(resource.group, resource.version, resource.plural, resource.kind)


class ControllerSide:
    """See the module docstring. `fanout(key)` hands a key to every shard reconciler."""

    def __init__(
        self,
        *,
        client: KubeClient,
        settings: SyncSettings,
        status: SyncStatus,
        fanout: Callable[[Key], None],
        clock: Clock,
    ) -> None:
        self.client = client
        self.settings = settings
        self.status = status
        self.cache = ObjectCache(CONTROLLER_RESOURCES, on_change=self._changed)
        self.queue: KeyQueue[Key] = KeyQueue(
            base=settings.backoff_base, maximum=settings.backoff_max
        )
        self._fanout = fanout
        self._clock = clock
        self._warned: dict[Key, set[tuple[str, str]]] = {}
        #: Set once the shards are registered: no status is written before.
        self.shards_known = trio.Event()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Load the controller namespace, report started, then process keys forever."""
        try:
            async with trio.open_nursery() as nursery:
                await self._follow(nursery, task_status)
        finally:
            self.status.controller_synced = False
        raise AssertionError("unreachable")  # pragma: no cover

    async def _follow(self, nursery: trio.Nursery, task_status: trio.TaskStatus[None]) -> NoReturn:
        """Load the namespace into the cache, then process keys (in `nursery`)."""
        await nursery.start(
            functools.partial(
                run_informer,
                client=self.client,
                resources=CONTROLLER_RESOURCES,
                namespace=self.settings.namespace,
                sink=self.cache,
                resync_seconds=self.settings.resync,
                relist_on_resync=True,  # drift is repaired from a fresh list
            )
        )
        self.status.controller_synced = True
        task_status.started()
        await self.shards_known.wait()
        while True:
            key = await self.queue.get()
            try:
                await self._process(key)
                self.queue.forget(key)
            except KubeError as exc:
                delay = self.queue.retry(key)
                logger.warning("%s %s: %s; retrying in %.2f s", *key, exc, delay)

    def shard_changed(self, key: Key | None) -> None:
        """A shard's result for `key` changed (None: for every key, e.g. it went down)."""
        if key is not None:
            self.queue.add(key)
            return
        for resource in (TEMPLATES, WORKGROUPS):
            for obj in self.cache.items(resource):
                self.queue.add((_KIND_OF[resource.plural], name_of(obj)))

    def _changed(self, resource: Resource, old: Obj | None, new: Obj | None) -> None:
        kind = _KIND_OF[resource.plural]
        name = name_of(new or old or {})
        self.queue.add((kind, name))
        if kind == "workgroup":
            self._fanout((kind, name))
        elif kind == "template":
            self._fanout((kind, name))
            for obj in (old, new):
                refs = template_references(obj or {})
                self._queue_all("secret", refs.secrets)
                self._queue_all("configmap", refs.configmaps)
        else:
            for template in self._users(kind, name):
                self._fanout(("template", template))

    def _queue_all(self, kind: Kind, names: tuple[str, ...]) -> None:
        for name in names:
            self.queue.add((kind, name))

    def _users(self, kind: Kind, name: str) -> list[str]:
        """The live templates referencing Secret/ConfigMap `name`, sorted."""
        users = []
        for template in self.cache.items(TEMPLATES):
            refs = template_references(template)
            if is_live(template) and name in (
                refs.secrets if kind == "secret" else refs.configmaps
            ):
                users.append(name_of(template))
        return users

    async def _process(self, key: Key) -> None:
        kind, name = key
        resource = _RESOURCE_OF[kind]
        obj = self.cache.get(resource, name)
        if obj is None:
            self._warned.pop(key, None)
        elif kind in ("secret", "configmap"):
            await self._annotate(resource, obj, self._users(kind, name))
        elif not is_live(obj):
            await self._finish_delete(resource, kind, obj)
        elif FINALIZER not in (obj["metadata"].get("finalizers") or []):
            finalizers = [*(obj["metadata"].get("finalizers") or []), FINALIZER]
            await self._replace(resource, obj, finalizers=finalizers)
        else:
            await self._report(resource, kind, obj)

    async def _finish_delete(self, resource: Resource, kind: Kind, obj: Obj) -> None:
        finalizers = obj["metadata"].get("finalizers") or []
        if FINALIZER not in finalizers:
            return
        key = (kind, name_of(obj))
        waiting = [
            shard.name
            for shard in self.status.shards.values()
            if not ((result := shard.results.get(key)) and result.deleted)
        ]
        if waiting:
            logger.info("%s %s: waiting for shards %s to delete it", *key, ", ".join(waiting))
            return
        await self._replace(resource, obj, finalizers=[f for f in finalizers if f != FINALIZER])
        logger.info("%s %s: deleted in every shard; finalizer removed", *key)

    async def _report(self, resource: Resource, kind: Kind, obj: Obj) -> None:
        now = self._clock.now()
        previous = obj.get("status") or {}
        if not previous.get("conditions"):
            obj = await self._write_status(
                resource, obj, reporting.initial_status(obj, kind=kind, now=now)
            )
            previous = obj.get("status") or {}
        shards = list(self.status.shards.values())
        desired = reporting.desired_status(obj, kind=kind, shards=shards, now=now)
        await self._warn(obj, kind, shards)
        if desired == previous:
            return
        await self._write_status(resource, obj, desired)
        if reporting.announces_sync(previous, desired):
            await self._emit(obj, "Synced", reporting.synced_message(obj), warning=False)

    async def _warn(self, obj: Obj, kind: Kind, shards: list[ShardState]) -> None:
        """One Warning per distinct failure, until the object syncs everywhere."""
        key = (kind, name_of(obj))
        failures = {
            (result.reason, result.message)
            for shard in shards
            if (result := shard.results.get(key)) is not None and result.reason
        }
        warned = self._warned.setdefault(key, set())
        for reason, message in sorted(failures - warned):
            await self._emit(obj, reason, message, warning=True)
        self._warned[key] = failures

    async def _annotate(self, resource: Resource, obj: Obj, users: list[str]) -> None:
        annotations = dict(obj["metadata"].get("annotations") or {})
        value = ",".join(users)
        if annotations.get(REFERENCED_BY_ANNOTATION, "") == value:
            return
        if value:
            annotations[REFERENCED_BY_ANNOTATION] = value
        else:
            annotations.pop(REFERENCED_BY_ANNOTATION)
        await self._replace(resource, obj, annotations=annotations)

    async def _replace(self, resource: Resource, obj: Obj, **metadata: Any) -> None:
        body = {**obj, "metadata": {**obj["metadata"], **metadata}}
        updated = await self.client.replace(
            resource, namespace=self.settings.namespace, name=name_of(obj), body=body
        )
        self.cache.put(resource, updated)

    async def _write_status(self, resource: Resource, obj: Obj, status: dict[str, Any]) -> Obj:
        updated = await self.client.replace(
            status_of(resource),
            namespace=self.settings.namespace,
            name=name_of(obj),
            body={**obj, "status": status},
        )
        self.cache.put(resource, updated)
        return updated

    async def _emit(self, obj: Obj, reason: str, message: str, *, warning: bool) -> None:
        body = reporting.event(
            obj, reason=reason, message=message, warning=warning, now=self._clock.now()
        )
        try:
            await self.client.create(EVENTS, namespace=self.settings.namespace, body=body)
        except KubeError as exc:  # an Event is worth a log line, not a failed sync
            logger.warning("event %s about %s not recorded: %s", reason, name_of(obj), exc)
