"""Maintaining: the maintainer's loops, and its single pass for `nexusd maintainer --once`.

- React: `WORKERS` workers take run keys from the shared `RunQueue` (waking.py: unique,
  bounded) — woken by the informers when a run's Job, pods or events changed, or when a rule's
  grace is over — and reconcile each.
- Sweep every `interval`: every non-terminal run is reconciled (so a missed event, or a key the
  full queue dropped, never leaves a run stuck), and lost runs are recovered (recovery.py). The
  sweep claims each key in the same queue, so a run a worker is reconciling is not reconciled
  twice at once, and a queued one is not done again by a worker right after.
- Collect every `gc_interval` (collecting.py).
- Heartbeat (heartbeats.py), so the BUFFERED runs this maintainer claimed are recovered by
  another one if it dies.

Failure isolation: one run's reconcile that fails in any way (a store error, or a malformed or
surprising Job, Pod or Event the rules trip over) is logged with the run, counted in the
reconciler's `errors`, and skipped; the next wake-up or sweep tries again. It never ends the
maintainer. Only cancellation passes through.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, NoReturn

import attrs
import trio

from nexusd.core.errors import KubeError, StoreError
from nexusd.core.lifecycle import Stage
from nexusd.pipeline.waking import RunQueue
from nexusd.stores.checkpoints import DEFAULT_PAGE, StaleCursor

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nexusd.core.clock import Clock
    from nexusd.core.records import Checkpoint
    from nexusd.pipeline.collecting import CollectionReport, Collector
    from nexusd.pipeline.reconciling import Reconciler
    from nexusd.pipeline.recovery import LostRunRecovery, SweepReport
    from nexusd.pipeline.submitting import Submitter
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)

NON_TERMINAL = frozenset({Stage.NEW, Stage.BUFFERED, Stage.RUNNING})
DRAIN_POLL_INTERVAL = 0.05
#: Concurrent reconciles from the queue: reconciles are short store writes and, rarely, a Job
#: deletion (bounded by the shard's throttle); a few overlap store latency.
WORKERS = 4


@attrs.frozen
class PassReport:
    reconciled: int
    sweep: SweepReport
    collection: CollectionReport | None
    errors: int
    #: CPU seconds of this process by phase ("sweep", "collection"; `--once` adds "caches"),
    #: so an operator sees what a pass costs, not only how long it waited
    cpu: dict[str, float] = attrs.field(factory=dict)


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
    queue: RunQueue = attrs.field(factory=RunQueue)
    workers: int = WORKERS

    def statistics(self) -> dict[str, Callable[[], object]]:
        """Snapshots for /readyz: the reconciler and the recovery submitters, by shard."""
        snapshots: dict[str, Callable[[], object]] = {
            "reconciler": self.reconciler.statistics,
            "run_queue": self.queue.statistics,
        }
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
                await self._sweep_one(checkpoint)
            reconciled += len(page)
            if len(page) < DEFAULT_PAGE:
                break
            cursor = StaleCursor.after(page[-1])
        return reconciled, await self.recovery.sweep()

    async def once(self, *, drain_timeout: float) -> PassReport:
        """One pass: reconcile, recover (and wait for those submissions), collect."""
        errors_before = self.reconciler.errors
        began = time.process_time()
        reconciled, sweep = await self.sweep()
        swept = time.process_time()
        with trio.move_on_after(drain_timeout):
            while any(len(s.queue) or s.in_flight for s in self.submitters):  # noqa: ASYNC110
                await trio.sleep(DRAIN_POLL_INTERVAL)
        left = sum(len(s.queue) for s in self.submitters)
        drained = time.process_time()
        collection = await self.collector.collect()
        cpu = {
            "sweep": swept - began,
            "resubmission": drained - swept,
            "collection": time.process_time() - drained,
        }
        errors = self.reconciler.errors - errors_before + collection.errors + left
        return PassReport(
            reconciled=reconciled, sweep=sweep, collection=collection, errors=errors, cpu=cpu
        )

    async def _sweep_one(self, checkpoint: Checkpoint) -> None:
        key = (checkpoint.algorithm, checkpoint.id)
        if not self.queue.claim(key):
            return  # a worker has it now, and runs it again after (it is marked dirty)
        try:
            await self.reconciler.reconcile_isolated(checkpoint)
        finally:
            self.queue.done(key)

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Work the queue, sweep, collect."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.queue.run_timers)
            for _ in range(self.workers):
                nursery.start_soon(self._work)
            nursery.start_soon(self._every, self.interval, self.sweep, "sweep")
            nursery.start_soon(self._every, self.gc_interval, self.collector.collect, "collection")
            task_status.started()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _work(self) -> NoReturn:
        while True:
            algorithm, request_id = key = await self.queue.get()
            try:
                await self.reconciler.reconcile_key_isolated(algorithm, request_id)
            finally:
                self.queue.done(key)

    async def _every(
        self, period: float, action: Callable[[], Awaitable[object]], what: str
    ) -> NoReturn:
        while True:
            try:
                await action()
            except (StoreError, KubeError):
                logger.exception("maintainer %s failed; retrying in %.0fs", what, period)
            await trio.sleep(period)
