"""One shard's reconciler: its own queue, back-off, watches and status.

`ShardReconciler.run` reports `started()` at once and never raises for the shard's sake, so a
shard that is down (at start or later) is reported in its `ShardState` and never blocks
start-up or the other shards. Its flow:

1. probe the shard until it answers (back-off `backoff_base`..`backoff_max`);
2. follow our labelled copies there (templates, workgroups, Secrets, ConfigMaps) with an
   informer: an edit or delete made in the shard enqueues the owning key, so drift is
   repaired at once; a failing informer (RBAC, CRDs missing) is restarted after a back-off;
3. process keys one at a time: a template or workgroup is made to match the controller
   cluster (`shard_writes`), or removed when it is gone or being deleted there; failures are
   retried with the key's own back-off and recorded for the controller side to report;
4. every `sweep_interval`, delete copies labelled with our alias that no controller object
   owns or references (`sweeping`: missed deletes, copies of an older deployment).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, NoReturn

import trio

from nexusd.core import metrics
from nexusd.core.errors import KubeConflict, KubeError, KubeUnavailable
from nexusd.kube.client import CONFIGMAPS, SECRETS, TEMPLATES, WORKGROUPS, KubeClient, Resource
from nexusd.kube.watching import run_informer
from nexusd.syncing.cache import Obj, ObjectCache, is_live, name_of
from nexusd.syncing.copies import TEMPLATE_KIND, managed_selector, shard_copy
from nexusd.syncing.queueing import KeyQueue
from nexusd.syncing.shard_writes import ShardWriter, SyncFailure
from nexusd.syncing.status import SWEEP, Key, KeyResult, Kind, ShardState
from nexusd.syncing.sweeping import sweep

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.core.clock import Clock
    from nexusd.syncing.settings import SyncSettings

logger = logging.getLogger(__name__)

SHARD_RESOURCES = (TEMPLATES, WORKGROUPS, SECRETS, CONFIGMAPS)
#: Keys of the objects a template/workgroup copy stands for, by shard resource.
_KIND_OF: dict[str, Kind] = {TEMPLATES.plural: "template", WORKGROUPS.plural: "workgroup"}


class ShardReconciler:
    """Keeps one shard in step with the controller cluster's `controller` cache.

    `notify(key)` tells the controller side that a key's result changed (None: the shard's
    reachability did, so every status may have to say so).
    """

    def __init__(
        self,
        *,
        name: str,
        client: KubeClient,
        settings: SyncSettings,
        controller: ObjectCache,
        notify: Callable[[Key | None], None],
        clock: Clock,
    ) -> None:
        self.client = client
        self.settings = settings
        self.controller = controller
        self.queue: KeyQueue[Key] = KeyQueue(
            base=settings.backoff_base, maximum=settings.backoff_max
        )
        self.state = ShardState(name=name, pending=lambda: len(self.queue))
        self.cache = ObjectCache(SHARD_RESOURCES, on_change=self._shard_changed)
        self._notify = notify
        self._clock = clock
        self._cache_synced = trio.Event()

    @property
    def name(self) -> str:
        return self.state.name

    def enqueue(self, key: Key) -> None:
        """Sync `key` in this shard soon."""
        self.queue.add(key)

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Steps 1-4 of the module docstring, until cancelled."""
        logger.info("shard %s: reconciler starting (%s)", self.name, self.client.server)
        task_status.started()
        metrics.watch_sync(self.state)
        try:
            await self._wait_reachable()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._follow_shard)
                await self._cache_synced.wait()
                self._enqueue_everything()
                nursery.start_soon(self._sweep_periodically)
                await self._work()
        finally:
            metrics.unwatch_sync(self.state)
            logger.info("shard %s: reconciler stopped", self.name)

    async def _wait_reachable(self) -> None:
        attempt = 0
        while True:
            try:
                await self.client.list(TEMPLATES, namespace=self.settings.namespace, limit=1)
                return
            except KubeError as exc:
                self._set_reachable(False, str(exc))
                await trio.sleep(self._delay(attempt))
                attempt += 1

    async def _follow_shard(self) -> None:
        """The shard informer, restarted after errors it does not handle itself."""
        attempt = 0
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(
                        functools.partial(
                            run_informer,
                            client=self.client,
                            resources=SHARD_RESOURCES,
                            namespace=self.settings.namespace,
                            sink=self.cache,
                            label_selector=managed_selector(self.settings.alias),
                            resync_seconds=self.settings.resync,
                            relist_on_resync=True,  # drift is repaired from a fresh list
                        )
                    )
                    self._set_reachable(True, "")
                    self._cache_synced.set()
                    attempt = 0
            except* KubeError as group:
                self._set_reachable(False, str(group.exceptions[0]))
                logger.warning("shard %s: watch failed: %s", self.name, group.exceptions[0])
            await trio.sleep(self._delay(attempt))
            attempt += 1

    async def _sweep_periodically(self) -> NoReturn:
        while True:
            self.queue.add(SWEEP)
            await trio.sleep(self.settings.sweep_interval)

    async def _work(self) -> NoReturn:
        while True:
            key = await self.queue.get()
            await self._process(key)

    async def _process(self, key: Key) -> None:
        writer = ShardWriter(
            client=self.client,
            namespace=self.settings.namespace,
            alias=self.settings.alias,
            cache=self.cache,
            shard=self.name,
        )
        try:
            deleted = await self._sync(writer, key)
        except SyncFailure as failure:
            self._set_reachable(True, "")
            self._record(key, KeyResult(ok=False, message=failure.message, reason=failure.reason))
        except KubeConflict:
            self.queue.retry(key)  # our view was stale; the watch is catching up
            return
        except KubeUnavailable as exc:
            self._set_reachable(False, str(exc))
            self._record(key, KeyResult(ok=False, message=f"shard unreachable: {exc}"))
        except KubeError as exc:
            self._set_reachable(True, "")
            message = (
                f'Synchronization/update of a resource "{key[1]}" referenced by '
                f'NexusAlgorithmTemplate "{key[1]}" failed with a fatal error {exc}'
            )
            self._record(key, KeyResult(ok=False, message=message, reason="ErrResourceSyncError"))
        else:
            self.queue.forget(key)
            self._set_reachable(True, "")
            self.state.last_sync = self._clock.now()
            previous = self.state.results.get(key)
            wrote_at = self.state.last_sync if writer.wrote else None
            if wrote_at is None and previous is not None:
                wrote_at = previous.wrote_at
            self._record(key, KeyResult(ok=True, deleted=deleted, wrote_at=wrote_at))
            return
        delay = self.queue.retry(key)
        logger.info("shard %s: %s %s failed; retrying in %.2f s", self.name, *key, delay)

    async def _sync(self, writer: ShardWriter, key: Key) -> bool:
        """Sync one key; True if the source is gone and so is its copy now."""
        kind, name = key
        if kind == "sweep":
            for stale in await sweep(writer, controller=self.controller):
                self.queue.add(stale)
            return False
        resource = TEMPLATES if kind == "template" else WORKGROUPS
        source = self.controller.get(resource, name)
        if not is_live(source):
            if kind == "template":
                await writer.delete_template(name)
            else:
                await writer.delete(WORKGROUPS, name)
            return True
        assert source is not None
        if kind == "template":
            await writer.sync_template(source, self.controller.get)
        else:
            await writer.ensure(WORKGROUPS, shard_copy(source, alias=self.settings.alias))
        return False

    def _shard_changed(self, resource: Resource, old: Obj | None, new: Obj | None) -> None:
        """Drift: a copy changed or vanished in the shard; sync the keys it belongs to."""
        for obj in (old, new):
            if obj is None:
                continue
            if resource.plural in _KIND_OF:
                self.queue.add((_KIND_OF[resource.plural], name_of(obj)))
                continue
            owners = (obj.get("metadata") or {}).get("ownerReferences") or []
            for ref in owners:
                if ref.get("kind") == TEMPLATE_KIND:
                    self.queue.add(("template", str(ref.get("name"))))
            if not owners:
                self.queue.add(SWEEP)

    def _enqueue_everything(self) -> None:
        for template in self.controller.items(TEMPLATES):
            self.queue.add(("template", name_of(template)))
        for workgroup in self.controller.items(WORKGROUPS):
            self.queue.add(("workgroup", name_of(workgroup)))
        self.queue.add(SWEEP)

    def _record(self, key: Key, result: KeyResult) -> None:
        if key == SWEEP:
            return
        previous = self.state.results.get(key)
        if (
            result.deleted
            and self.controller.get(TEMPLATES if key[0] == "template" else WORKGROUPS, key[1])
            is None
        ):
            self.state.results.pop(key, None)  # gone everywhere: nothing left to report
        else:
            self.state.results[key] = result
        if result != previous:
            self._notify(key)

    def _set_reachable(self, reachable: bool, error: str) -> None:
        """Record reachability; tell the controller side when it changed, or when the first
        error of a shard never reached is known (statuses name it)."""
        changed = reachable != self.state.reachable
        first_error = not reachable and error and not self.state.last_error
        self.state.reachable = reachable
        self.state.last_error = error
        if first_error and not changed:
            self._notify(None)
        if changed:
            logger.log(
                logging.INFO if reachable else logging.WARNING,
                "shard %s is %s%s",
                self.name,
                "reachable" if reachable else "unreachable",
                f": {error}" if error else "",
            )
            self._notify(None)

    def _delay(self, attempt: int) -> float:
        return min(self.settings.backoff_max, self.settings.backoff_base * 2.0 ** min(attempt, 30))
