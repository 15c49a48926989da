"""Recovery: runs accepted but not submitted are submitted, ahead of new ones, exactly once.

- At a scheduler's start (`requeue_buffered`): every BUFFERED run this host received goes to
  its shard queue's priority lane.
- In the maintainer (`LostRunRecovery`): the BUFFERED runs of schedulers whose heartbeat
  stopped, and runs BUFFERED for too long, are claimed and resubmitted.
A run whose Job was in fact created already is harmless: the submitter treats AlreadyExists
as submitted.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

import attrs

from nexusd.core.lifecycle import Stage
from nexusd.pipeline.intake import RunRef
from nexusd.stores.checkpoints import DEFAULT_PAGE, HostCursor, StaleCursor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from nexusd.core.clock import Clock
    from nexusd.core.records import Checkpoint
    from nexusd.pipeline.queueing import VirtualQueue
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)


async def held_by(store: CheckpointStore, host: str, stage: Stage) -> AsyncIterator[Checkpoint]:
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
    BUFFERED (and is logged): the maintainer decides what becomes of it.
    """
    requeued = 0
    async for checkpoint in held_by(store, host, Stage.BUFFERED):
        queue = queues.get(checkpoint.cluster)
        if queue is None:
            logger.warning(
                "buffered run has no configured shard %r; leaving it",
                checkpoint.cluster,
                extra={"request_id": checkpoint.id, "algorithm": checkpoint.algorithm},
            )
            continue
        queue.put_priority(RunRef(algorithm=checkpoint.algorithm, request_id=checkpoint.id))
        requeued += 1
    if requeued:
        logger.info("requeued %d buffered runs of %s ahead of the queue", requeued, host)
    return requeued


#: Upstream's words for a run its scheduler accepted but never buffered (contract §4.3).
SUBMISSION_LOST = "Submission lost. Please resend the request."
SUBMISSION_LOST_DETAILS = "Scheduler was interrupted before it could serialize the payload."


@attrs.frozen
class SweepReport:
    dead_hosts: tuple[str, ...]
    resubmitted: int
    lost: int


@attrs.define
class LostRunRecovery:
    """The maintainer's sweep for runs no live scheduler will submit.

    - A scheduler whose heartbeat is older than `scheduler_timeout` is dead: its BUFFERED runs
      are claimed (a compare-and-set of `received_by_host`, so exactly one maintainer wins
      each run) and go to the claimer's submitters, ahead of their queues; its NEW runs (accepted,
      never buffered) end SCHEDULING_FAILED with upstream's "Submission lost" message.
    - A run BUFFERED for longer than `buffered_timeout` is claimed too, whoever holds it: its
      scheduler is alive but did not get it out (a lost queue entry, a restart under another
      name). Keep `buffered_timeout` above the time a full queue takes to drain
      (`queue_capacity / rate`: 200 s by default). A NEW run that old is lost.
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
        beats = await self.store.heartbeats()
        # Hosts dead for longer than buffered_timeout need no look-up of their own: every run
        # they held is older than their last beat, so the stale scan below finds it. This
        # keeps a sweep's cost bounded however many pod names have come and gone.
        dead = tuple(
            sorted(
                host
                for host, seen in beats.items()
                if host != self.host
                and self.scheduler_timeout < (now - seen).total_seconds() <= self.buffered_timeout
            )
        )
        candidates: dict[tuple[str, str], Checkpoint] = {}
        lost: dict[tuple[str, str], Checkpoint] = {}
        for host in dead:
            async for checkpoint in held_by(self.store, host, Stage.BUFFERED):
                candidates[(checkpoint.algorithm, checkpoint.id)] = checkpoint
            async for checkpoint in held_by(self.store, host, Stage.NEW):
                lost[(checkpoint.algorithm, checkpoint.id)] = checkpoint
        cutoff = now - dt.timedelta(seconds=self.buffered_timeout)
        async for checkpoint in self._stale(cutoff):
            found = candidates if checkpoint.lifecycle_stage is Stage.BUFFERED else lost
            found[(checkpoint.algorithm, checkpoint.id)] = checkpoint
        resubmitted = 0
        for checkpoint in candidates.values():
            resubmitted += await self._claim(checkpoint)
        failed = 0
        for checkpoint in lost.values():
            failed += await self._fail_lost(checkpoint)
        if dead or resubmitted or failed:
            logger.info(
                "recovery: dead schedulers %s, %d runs resubmitted, %d lost",
                ", ".join(dead) or "none",
                resubmitted,
                failed,
            )
        return SweepReport(dead_hosts=dead, resubmitted=resubmitted, lost=failed)

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
        queue = self.queues.get(checkpoint.cluster)
        if queue is None:
            return 0  # a shard this maintainer does not know: another one may
        if checkpoint.received_by_host == self.host:
            # Already ours (`nexusd dev`, where scheduler and maintainer share a name, or a
            # claim whose submission was lost): submit it again; a Job that exists is fine.
            queue.put_priority(RunRef(algorithm=checkpoint.algorithm, request_id=checkpoint.id))
            return 1
        claimed = await self.store.claim(
            algorithm=checkpoint.algorithm,
            request_id=checkpoint.id,
            from_host=checkpoint.received_by_host,
            to_host=self.host,
        )
        if claimed is None:
            return 0
        queue.put_priority(RunRef(algorithm=checkpoint.algorithm, request_id=checkpoint.id))
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
        return int(outcome.applied)
