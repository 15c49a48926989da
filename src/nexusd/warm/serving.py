"""The worker loop: lease runs while there are free slots, run each, report, stop cleanly.

    lease (long poll, max = free slots) -> one task per run: execute -> done item -> Reporter
                                                     cancelled / lost -> stopped, nothing reported

A run is executed by an `Execute` callable (`nexusd.warm.commands` starts a process,
`nexusd.warm.handlers` calls a Python function); it returns the run's `Finished` item and calls
`started()` once the run really began (a process started, a handler called).

Ending, in order, whether asked to stop (SIGTERM) or recycled after `runs` runs:
1. no more leases (a lease long poll in flight is cancelled; a run the scheduler leased in that
   instant comes back to its queue when its lease expires);
2. on stop only: runs leased but not started are released at once (the scheduler requeues them
   without counting a lost attempt), and running ones get `grace` seconds to finish; those still
   running then are cancelled (a process group gets SIGTERM, then SIGKILL) and released too, as
   their work was interrupted by this worker, not lost by the run;
3. every done and release item is reported (on stop: retried for at most `final_report`
   seconds; what could not be reported then comes back when its lease expires);
then `run` returns.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from nexusd.warm.leasing import retrying
from nexusd.warm.reporting import Reporter

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.warm.leasing import Attempt, Finished, Lease, LeasedRun, Retry, WorkerApi

logger = logging.getLogger(__name__)

#: Shortest time between two lease requests that leased nothing: a scheduler that answers at
#: once rather than holding the request open (long poll) is not asked in a tight loop.
EMPTY_LEASE_INTERVAL = 1.0


class Execute(Protocol):
    async def __call__(self, run: LeasedRun, started: Callable[[], None]) -> Finished: ...


@attrs.frozen
class WorkerLimits:
    """The `worker.*` and `shutdown.grace` settings the loop works by."""

    concurrency: int = 1
    runs: int = 0  # 0 = never recycled
    max_wait: float = 20.0
    report_batch: int = 1000
    grace: float = 10.0
    final_report: float = 10.0


@attrs.define
class _Held:
    run: LeasedRun
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    started: bool = False
    #: cancelled or lost at the scheduler: report nothing
    dropped: bool = False


@attrs.frozen
class WorkerStatistics:
    """Runs leased so far and held now, outcomes waiting to be reported, reports answered,
    requests to the scheduler that failed transiently (and were retried)."""

    leased: int
    held: int
    pending_reports: int
    reports: int
    failed_requests: int


class Worker:
    """One worker of one warm pool; `run` serves until recycled or stopped."""

    def __init__(
        self, *, api: WorkerApi, execute: Execute, limits: WorkerLimits, retry: Retry
    ) -> None:
        self._api = api
        self._execute = execute
        self._limits = limits
        self._retry = retry
        self._held: dict[str, _Held] = {}
        self._leased = 0
        self._stopping = trio.Event()
        self._leasing = trio.CancelScope()
        self._reporter = Reporter(
            api=api,
            retry=retry,
            holding=self.holding,
            stop_run=self.drop,
            batch=limits.report_batch,
        )

    def holding(self) -> list[Attempt]:
        return [held.run.key for held in self._held.values()]

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            leased=self._leased,
            held=len(self._held),
            pending_reports=self._reporter.pending,
            reports=self._reporter.reports,
            failed_requests=self._api.failures,
        )

    def stop(self) -> None:
        """Stop leasing and end (see the module docstring); `run` returns when done."""
        if not self._stopping.is_set():
            logger.info("stopping: %d runs held", len(self._held))
        self._stopping.set()
        self._leasing.cancel()

    def drop(self, request_id: str) -> bool:
        """The scheduler cancelled the run, or this worker lost its lease: stop it, and
        report nothing for it. False if the run is not (or no longer) held here."""
        held = self._held.get(request_id)
        if held is None or held.dropped:
            return False
        held.dropped = True
        held.scope.cancel()
        return True

    async def run(self, *, task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as reporting:
            await reporting.start(self._reporter.run_flushing)
            await reporting.start(self._reporter.run_renewing)
            async with trio.open_nursery() as runs:
                task_status.started(self)
                with self._leasing:
                    await self._lease(runs)
                await self._finish()
            await self._final_report()
            reporting.cancel_scope.cancel()
        logger.info("worker ended after %d runs", self._leased)

    # --- leasing ------------------------------------------------------------------------------

    def _wanted(self) -> int:
        free = self._limits.concurrency - len(self._held)
        if self._limits.runs:
            free = min(free, self._limits.runs - self._leased)
        return free

    async def _lease(self, runs: trio.Nursery) -> None:
        while not self._limits.runs or self._leased < self._limits.runs:
            most = self._wanted()
            if most <= 0:
                await self._reporter.wait_changed()
                continue

            async def attempt(most: int = most) -> Lease:
                return await self._api.lease(most=most, wait=self._limits.max_wait)

            asked = trio.current_time()
            lease = await retrying(attempt, retry=self._retry, what="lease")
            self._reporter.lease_seconds = lease.lease_seconds
            if not lease.runs:
                await trio.sleep_until(asked + min(self._limits.max_wait, EMPTY_LEASE_INTERVAL))
            for run in lease.runs:
                if self._wanted() <= 0 or run.request_id in self._held:
                    # More than asked for: not ours to run now, give it back at once.
                    self._reporter.release(run.key)
                    continue
                self._leased += 1
                held = self._held[run.request_id] = _Held(run)
                runs.start_soon(self._serve_run, held, name=f"run {run.request_id}")
            self._reporter.changed()
        logger.info("leased %d runs: recycling", self._leased)

    # --- one run ------------------------------------------------------------------------------

    async def _serve_run(self, held: _Held) -> None:
        run = held.run
        extra = {"request_id": run.request_id}

        def started() -> None:
            held.started = True

        finished: Finished | None = None
        try:
            with held.scope:
                logger.debug("run %s attempt %d", run.request_id, run.attempt, extra=extra)
                finished = await self._execute(run, started)
        finally:
            del self._held[run.request_id]
            if held.dropped:
                logger.info("run %s stopped, nothing reported", run.request_id, extra=extra)
                self._reporter.changed()
            elif finished is None:
                # Cancelled by this worker's stop: not the run's fault, give it back now.
                self._reporter.release(run.key)
            else:
                self._reporter.done(finished)

    # --- ending -------------------------------------------------------------------------------

    async def _finish(self) -> None:
        """Wait until no run is held; a stop (now or meanwhile) hurries them up."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._interrupt_on_stop)
            while self._held:
                await self._reporter.wait_changed()
            nursery.cancel_scope.cancel()

    async def _interrupt_on_stop(self) -> None:
        await self._stopping.wait()
        for held in self._held.values():
            if not held.started:
                held.scope.cancel()
        await trio.sleep(self._limits.grace)
        if self._held:
            logger.warning("%d runs still running after the grace: stopping them", len(self._held))
        for held in self._held.values():
            held.scope.cancel()

    async def _final_report(self) -> None:
        async with trio.open_nursery() as nursery:

            async def deadline() -> None:
                await self._stopping.wait()
                await trio.sleep(self._limits.final_report)
                nursery.cancel_scope.cancel()

            nursery.start_soon(deadline)
            await self._reporter.flushed()
            nursery.cancel_scope.cancel()
        if self._reporter.pending:
            logger.error(
                "exiting with %d outcomes not reported: their runs are given to another "
                "worker when their leases expire",
                self._reporter.pending,
            )
