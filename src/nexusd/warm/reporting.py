"""Reporting: finished and released attempts to the scheduler, in batches, and lease renewal.

Two loops share one `Reporter`:
- `run_flushing` sends every pending done/release item in one report, ONE report in flight at
  a time: what finishes while a report is on its way goes in the next one, so under load a
  report carries many runs (a burst of N runs costs about N / concurrency reports, not N).
  A report that fails transiently is retried (capped back-off) rebuilt from the pending items
  at that time; items leave the pending list only when a report answered 200 for them, so none
  is lost and none is sent again after it was answered.
- `run_renewing` keeps a long poll open while the worker holds runs (`holding`, `wait` =
  leaseSeconds / 3): it renews their leases at least that often, and the scheduler answers it
  early when one of them is cancelled or lost, which is how a cancel reaches a running run.

Both pass every answer's `cancelled` and `lost` to `stop_run` (the worker stops those runs and
reports nothing for them; it says whether it still held the run), and keep `lease_seconds`
current.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from nexusd.warm.leasing import retrying

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from nexusd.warm.leasing import Attempt, Finished, ReportAnswer, Retry, WorkerApi

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 30.0  # until the scheduler's first answer says otherwise


class Reporter:
    def __init__(
        self,
        *,
        api: WorkerApi,
        retry: Retry,
        holding: Callable[[], Sequence[Attempt]],
        stop_run: Callable[[str], bool],
        batch: int,
    ) -> None:
        self._api = api
        self._retry = retry
        self._holding = holding
        self._stop_run = stop_run
        self._batch = batch
        self._done: list[Finished] = []
        self._release: list[Attempt] = []
        self._in_flight = False
        self._changed = trio.Event()
        self.lease_seconds = DEFAULT_LEASE_SECONDS
        #: reports sent and answered, for statistics and tests
        self.reports = 0

    # --- what the worker tells it -----------------------------------------------------------

    def done(self, item: Finished) -> None:
        self._done.append(item)
        self.changed()

    def release(self, key: Attempt) -> None:
        self._release.append(key)
        self.changed()

    def changed(self) -> None:
        """Something to report, or the held runs changed: wake the loops."""
        self._changed.set()
        self._changed = trio.Event()

    @property
    def pending(self) -> int:
        """Done and released items not yet answered for."""
        return len(self._done) + len(self._release)

    async def wait_changed(self) -> None:
        """Return at the next `changed()`: a run ended, an item was reported..."""
        await self._changed.wait()

    async def flushed(self) -> None:
        """Return once every item handed in so far was answered for."""
        while self.pending or self._in_flight:
            await self._changed.wait()

    # --- the loops ----------------------------------------------------------------------------

    async def run_flushing(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            while not self.pending:
                await self._changed.wait()
            await self._flush_once()

    async def _flush_once(self) -> None:
        sent: tuple[int, int] = (0, 0)

        async def attempt() -> ReportAnswer:
            nonlocal sent
            done = self._done[: self._batch]
            release = self._release[: max(0, self._batch - len(done))]
            sent = (len(done), len(release))
            return await self._api.report(holding=self._holding(), done=done, release=release)

        self._in_flight = True
        try:
            answer = await retrying(attempt, retry=self._retry, what="report")
            # Only this loop removes items, and new ones are appended: the sent ones lead.
            del self._done[: sent[0]]
            del self._release[: sent[1]]
        finally:
            self._in_flight = False
            self.changed()
        self._answered(answer)
        for outcome in answer.done:
            if outcome.outcome != "recorded":
                logger.warning(
                    "the scheduler refused the outcome of %s: %s",
                    outcome.request_id,
                    outcome.message,
                    extra={"request_id": outcome.request_id},
                )

    async def run_renewing(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            while not self._holding():
                await self._changed.wait()
            interval = self.lease_seconds / 3
            next_renewal = trio.current_time() + interval

            async def attempt(wait: float = interval) -> ReportAnswer:
                return await self._api.report(holding=self._holding(), wait=wait)

            answer = await retrying(attempt, retry=self._retry, what="lease renewal")
            self._answered(answer)
            if not (answer.cancelled or answer.lost):
                # A scheduler that answered before the wait ran out with nothing to say
                # (it does not long-poll) still gets renewals only every interval.
                await trio.sleep_until(next_renewal)

    def _answered(self, answer: ReportAnswer) -> None:
        self.reports += 1
        self.lease_seconds = answer.lease_seconds
        # An answer may name runs that ended here meanwhile (a long poll's holding list is
        # as old as the poll): only those still held are news.
        for request_id in answer.cancelled:
            if self._stop_run(request_id):
                logger.info("run %s was cancelled", request_id, extra={"request_id": request_id})
        for request_id in answer.lost:
            if self._stop_run(request_id):
                logger.warning(
                    "lost the lease of run %s", request_id, extra={"request_id": request_id}
                )
