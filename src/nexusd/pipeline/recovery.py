"""Recovery: runs accepted but not submitted are submitted, ahead of new ones, exactly once.

- At a scheduler's start (`requeue_buffered`): every BUFFERED run this host received goes to
  its shard queue's priority lane.
- In the maintainer (`LostRunRecovery`): the BUFFERED runs of schedulers whose heartbeat
  stopped, and runs BUFFERED for too long, are claimed and resubmitted.
A run whose Job was in fact created already is harmless: the submitter treats AlreadyExists
as submitted.

Both scans are keyset-paged (`DEFAULT_PAGE` runs, one indexed read per page) and act on each
page as it comes: memory stays one page however large the backlog, and no run is read twice.
A scheduler that is alive but throttled is left alone: its heartbeat reports its queues, and a
queue that moves is not claimed from (`LostRunRecovery`).
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import aclosing
from typing import TYPE_CHECKING

import attrs

from nexusd.core import metrics
from nexusd.core.lifecycle import Stage
from nexusd.pipeline.intake import RunRef
from nexusd.stores.checkpoints import DEFAULT_PAGE, HostCursor, StaleCursor

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Mapping

    from nexusd.core.clock import Clock
    from nexusd.core.records import Checkpoint
    from nexusd.pipeline.queueing import VirtualQueue
    from nexusd.stores.checkpoints import CheckpointStore, Heartbeat

logger = logging.getLogger(__name__)


async def held_by(
    store: CheckpointStore, host: str, stage: Stage
) -> AsyncGenerator[Checkpoint, None]:
    """Every run `host` holds in `stage`, a page (`DEFAULT_PAGE` runs, one read) at a time."""
    cursor = None
    while True:
        page = await store.by_host_and_stage(host=host, stage=stage, after=cursor)
        for checkpoint in page:
            yield checkpoint
        if len(page) < DEFAULT_PAGE:
            return
        cursor = HostCursor.after(page[-1])


async def requeue_buffered(
    *, store: CheckpointStore, host: str, queues: dict[str, VirtualQueue[RunRef]]
) -> int:
    """Requeue this host's BUFFERED runs in their shard's priority lane; returns how many.

    Paged, with the run's shard on its row, so a large backlog is a few reads and the event
    loop serves requests between pages. A run whose shard is no longer configured stays
    BUFFERED (and is logged): the maintainer decides what becomes of it. The lanes are
    bounded: once every one is full the scan stops, and the runs left BUFFERED are the
    maintainer's to resubmit once this scheduler's queue runs dry (recovery below).
    """
    requeued = 0
    left = 0
    # aclosing: the scan may stop early, and an abandoned async generator is never finalised
    # under trio.
    async with aclosing(held_by(store, host, Stage.BUFFERED)) as runs:
        async for checkpoint in runs:
            if checkpoint.warm:
                continue  # its pool's first scan of the store queues it (pipeline/reaping.py)
            queue = queues.get(checkpoint.cluster)
            if queue is None:
                logger.warning(
                    "buffered run has no configured shard %r; leaving it",
                    checkpoint.cluster,
                    extra={"request_id": checkpoint.id, "algorithm": checkpoint.algorithm},
                )
                continue
            ref = RunRef(algorithm=checkpoint.algorithm, request_id=checkpoint.id)
            if queue.put_priority(ref):
                requeued += 1
            elif queue.priority_full():
                left += 1
                if all(q.priority_full() for q in queues.values()):
                    break
    if requeued:
        logger.info("requeued %d buffered runs of %s ahead of the queue", requeued, host)
    if left:
        logger.warning(
            "priority lanes full: buffered runs of %s past the first %d stay for recovery",
            host,
            requeued,
        )
    return requeued


#: Upstream's words for a run its scheduler accepted but never buffered (contract §4.3).
SUBMISSION_LOST = "Submission lost. Please resend the request."
SUBMISSION_LOST_DETAILS = "Scheduler was interrupted before it could serialize the payload."


@attrs.frozen
class SweepReport:
    dead_hosts: tuple[str, ...]
    resubmitted: int
    lost: int
    #: runs BUFFERED past `buffered_timeout` left with a live scheduler whose queue moves
    spared: int = 0


def progressing(
    beat: Heartbeat, *, now: dt.datetime, buffered_timeout: float, moving_within: float
) -> bool:
    """Whether `beat`'s host is working through its queue (ages as of `now`, not the beat).

    It is when runs are queued and either the oldest has waited no longer than
    `buffered_timeout` or a worker took one within `moving_within` seconds (a throttled queue
    drains slowly, but it drains). An empty queue is not: a run BUFFERED that long is not in
    it (a lost entry, or one refused by a full priority lane). No report (a process without
    queues, an older nexusd) is not either: such a holder is judged by age alone, as before.
    """
    report = beat.queues
    if report is None or report.queued == 0:
        return False
    since = max(0.0, (now - beat.last_seen).total_seconds())
    if report.oldest_queued_age + since <= buffered_timeout:
        return True
    return report.last_taken_age is not None and report.last_taken_age + since <= moving_within


@attrs.define
class LostRunRecovery:
    """The maintainer's sweep for runs no live scheduler will submit.

    - A scheduler whose heartbeat is older than `scheduler_timeout` is dead: its BUFFERED runs
      are claimed (a compare-and-set of `received_by_host`, so exactly one maintainer wins
      each run) and go to the claimer's submitters, ahead of their queues; its NEW runs (accepted,
      never buffered) end SCHEDULING_FAILED with upstream's "Submission lost" message.
    - A run BUFFERED for longer than `buffered_timeout` is claimed too, unless its holder is
      live and its queue is progressing (`progressing`): a throttled scheduler working through
      its backlog keeps its runs (claiming them would only move them to a queue behind the same
      shared rate budget), while one that lost a run (its queue is empty) or whose queue stopped
      moving gives them up, and so does a holder whose heartbeat stopped or that reports no
      queues. A NEW run that old is lost.
    - Heartbeats older than `buffered_timeout` are deleted: every run such a host held is older
      than its last beat, so the stale scan finds it without the row.
    A claimed run whose Job exists already is fine: the submitter counts AlreadyExists as
    submitted, so no run ever gets two Jobs.
    """

    store: CheckpointStore
    clock: Clock
    host: str
    queues: Mapping[str, VirtualQueue[RunRef]]
    scheduler_timeout: float
    buffered_timeout: float

    async def sweep(self) -> SweepReport:
        now = self.clock.now()
        beats = await self.store.heartbeat_reports()
        # Hosts dead for longer than buffered_timeout need no look-up of their own: every run
        # they held is older than their last beat, so the stale scan below finds it. This
        # keeps a sweep's cost bounded however many pod names have come and gone.
        dead = tuple(
            sorted(
                host
                for host, beat in beats.items()
                if host != self.host
                and self.scheduler_timeout
                < (now - beat.last_seen).total_seconds()
                <= self.buffered_timeout
            )
        )
        resubmitted = failed = spared = 0
        # Each run is acted on as its page arrives. A claim or a failure stamps the run's
        # last_modified, so it leaves both the host's BUFFERED/NEW range and the stale scan
        # below (whose cutoff is in the past): no run is handled twice.
        for host in dead:
            async for checkpoint in held_by(self.store, host, Stage.BUFFERED):
                resubmitted += await self._claim(checkpoint)
            async for checkpoint in held_by(self.store, host, Stage.NEW):
                failed += await self._fail_lost(checkpoint)
        cutoff = now - dt.timedelta(seconds=self.buffered_timeout)
        async for checkpoint in self._stale(cutoff):
            if checkpoint.lifecycle_stage is not Stage.BUFFERED:
                failed += await self._fail_lost(checkpoint)
            elif self._spared(checkpoint, beats.get(checkpoint.received_by_host), now):
                spared += 1
            else:
                resubmitted += await self._claim(checkpoint)
        forgotten = await self.store.forget_heartbeats(seen_before=cutoff)
        if dead or resubmitted or failed or forgotten:
            logger.info(
                "recovery: dead schedulers %s, %d runs resubmitted, %d lost, %d left to their "
                "throttled schedulers, %d heartbeats forgotten",
                ", ".join(dead) or "none",
                resubmitted,
                failed,
                spared,
                forgotten,
            )
        return SweepReport(dead_hosts=dead, resubmitted=resubmitted, lost=failed, spared=spared)

    def _spared(self, checkpoint: Checkpoint, beat: Heartbeat | None, now: dt.datetime) -> bool:
        """Whether a run BUFFERED past `buffered_timeout` stays with its live holder."""
        if checkpoint.received_by_host == self.host or beat is None:
            return False
        silent = (now - beat.last_seen).total_seconds()
        if silent > self.scheduler_timeout:
            return False
        return progressing(
            beat,
            now=now,
            buffered_timeout=self.buffered_timeout,
            moving_within=self.scheduler_timeout,
        )

    async def _stale(self, cutoff: dt.datetime) -> AsyncIterator[Checkpoint]:
        """NEW and BUFFERED runs last changed before `cutoff`, page by page."""
        cursor = None
        while True:
            page = await self.store.stale(
                stages={Stage.NEW, Stage.BUFFERED}, modified_before=cutoff, after=cursor
            )
            for checkpoint in page:
                yield checkpoint
            if len(page) < DEFAULT_PAGE:
                return
            cursor = StaleCursor.after(page[-1])

    async def _claim(self, checkpoint: Checkpoint) -> int:
        if checkpoint.warm:
            # A warm run has no Job to submit: any scheduler with its pool takes it from the
            # store when it waits too long (`pipeline/reaping.run_orphan_scan`).
            return 0
        queue = self.queues.get(checkpoint.cluster)
        if queue is None:
            return 0  # a shard this maintainer does not know: another one may
        ref = RunRef(algorithm=checkpoint.algorithm, request_id=checkpoint.id)
        if checkpoint.received_by_host == self.host:
            # Already ours (`nexusd dev`, where scheduler and maintainer share a name, or a
            # claim whose submission was lost): submit it again; a Job that exists is fine.
            # A run still in the lane from an earlier sweep is not added twice.
            return int(queue.put_priority(ref))
        if queue.priority_full():
            # No room to submit it: leave it with its holder for the next sweep (or another
            # maintainer) rather than take a run this process cannot queue.
            return 0
        claimed = await self.store.claim(
            algorithm=checkpoint.algorithm,
            request_id=checkpoint.id,
            from_host=checkpoint.received_by_host,
            to_host=self.host,
        )
        if claimed is None:
            return 0
        # Should the lane have filled during the claim, the run is ours now and a later sweep
        # queues it (the branch above) once it is buffered_timeout old again.
        queue.put_priority(ref)
        return 1

    async def _fail_lost(self, checkpoint: Checkpoint) -> int:
        outcome = await self.store.transition(
            algorithm=checkpoint.algorithm,
            request_id=checkpoint.id,
            to=Stage.SCHEDULING_FAILED,
            expected={Stage.NEW},
            changes={
                "algorithm_failure_cause": SUBMISSION_LOST,
                "algorithm_failure_details": SUBMISSION_LOST_DETAILS,
            },
        )
        metrics.transitioned(outcome, source=Stage.NEW, to=Stage.SCHEDULING_FAILED)
        return int(outcome.applied)
