"""Maintaining: the maintainer's loops, and its single pass for `nexusd maintainer --once`.

- React: a run whose Job, pods or events changed (observing.py) is reconciled at once.
- Sweep every `interval`: every non-terminal run is reconciled (so a missed event never leaves
  a run stuck), and lost runs are recovered (recovery.py).
- Collect every `gc_interval` (collecting.py).
- Heartbeat (heartbeats.py), so the BUFFERED runs this maintainer claimed are recovered by
  another one if it dies.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn

import attrs
import trio

from nexusd.core.errors import KubeError, StoreError
from nexusd.core.lifecycle import Stage
from nexusd.stores.checkpoints import DEFAULT_PAGE, StaleCursor

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nexusd.core.clock import Clock
    from nexusd.pipeline.collecting import CollectionReport, Collector
    from nexusd.pipeline.observing import RunKey
    from nexusd.pipeline.reconciling import Reconciler
    from nexusd.pipeline.recovery import LostRunRecovery, SweepReport
    from nexusd.pipeline.submitting import Submitter
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)

NON_TERMINAL = frozenset({Stage.NEW, Stage.BUFFERED, Stage.RUNNING})
DRAIN_POLL_INTERVAL = 0.05


@attrs.frozen
class PassReport:
    reconciled: int
    sweep: SweepReport
    collection: CollectionReport | None
    errors: int


@attrs.define
class Maintainer:
    store: CheckpointStore
    reconciler: Reconciler
    recovery: LostRunRecovery
    collector: Collector
    submitters: list[Submitter]
    clock: Clock
    interval: float
    gc_interval: float

    def statistics(self) -> dict[str, Callable[[], object]]:
        """Snapshots for /readyz: the reconciler and the recovery submitters, by shard."""
        snapshots: dict[str, Callable[[], object]] = {"reconciler": self.reconciler.statistics}
        for submitter in self.submitters:
            name = submitter.shard.name
            snapshots[f"queue:{name}"] = submitter.queue.statistics
            snapshots[f"submitter:{name}"] = submitter.statistics
            snapshots[f"throttle:{name}"] = submitter.throttle.statistics
            snapshots[f"kube:{name}"] = submitter.shard.client.statistics
        return snapshots

    async def sweep(self) -> tuple[int, SweepReport]:
        """Reconcile every non-terminal run, then recover lost ones."""
        reconciled = 0
        cursor = None
        now = self.clock.now()
        while True:
            page = await self.store.stale(
                stages=NON_TERMINAL, modified_before=now, limit=DEFAULT_PAGE, after=cursor
            )
            for checkpoint in page:
                await self.reconciler.reconcile(checkpoint)
            reconciled += len(page)
            if len(page) < DEFAULT_PAGE:
                break
            cursor = StaleCursor.after(page[-1])
        return reconciled, await self.recovery.sweep()

    async def once(self, *, drain_timeout: float) -> PassReport:
        """One pass: reconcile, recover (and wait for those submissions), collect."""
        errors_before = self.reconciler.errors
        reconciled, sweep = await self.sweep()
        with trio.move_on_after(drain_timeout):
            while any(len(s.queue) or s.in_flight for s in self.submitters):  # noqa: ASYNC110
                await trio.sleep(DRAIN_POLL_INTERVAL)
        left = sum(len(s.queue) for s in self.submitters)
        collection = await self.collector.collect()
        errors = self.reconciler.errors - errors_before + collection.errors + left
        return PassReport(reconciled=reconciled, sweep=sweep, collection=collection, errors=errors)

    async def run(
        self,
        *,
        changes: trio.MemoryReceiveChannel[RunKey],
        pending: set[RunKey],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """React to `changes` (each key queued once while in `pending`), sweep, collect."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._react, changes, pending)
            nursery.start_soon(self._every, self.interval, self.sweep, "sweep")
            nursery.start_soon(self._every, self.gc_interval, self.collector.collect, "collection")
            task_status.started()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _react(
        self, changes: trio.MemoryReceiveChannel[RunKey], pending: set[RunKey]
    ) -> None:
        async for algorithm, request_id in changes:
            pending.discard((algorithm, request_id))
            try:
                await self.reconciler.reconcile_key(algorithm, request_id)
            except StoreError:
                logger.exception(
                    "reconciling %s/%s failed; the sweep retries", algorithm, request_id
                )

    async def _every(
        self, period: float, action: Callable[[], Awaitable[object]], what: str
    ) -> NoReturn:
        while True:
            try:
                await action()
            except (StoreError, KubeError):
                logger.exception("maintainer %s failed; retrying in %.0fs", what, period)
            await trio.sleep(period)
