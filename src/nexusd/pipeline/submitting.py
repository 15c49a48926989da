"""Submitting: create each queued run's Job in its shard, throttled, and mark the run RUNNING.

Input: `RunRef`s from a shard's virtual queue (runs already BUFFERED with their Job manifest).
A ref intake just made carries the manifest, so a new run costs no store read here; a
recovered ref is read first (one read: stage, holder and manifest), and skipped if the run
left BUFFERED or was claimed by another host meanwhile.
Output: the Job exists in the run's shard and the run is RUNNING (with `job_uid`, `sent_at`).
Transition: BUFFERED -> RUNNING, conditional: a run the receiver already finished (fast
algorithms) or that was cancelled while queued keeps its stage; a Job created for a run cancelled
meanwhile (by another scheduler: this one takes a cancelled run out of its queue) is deleted
again.
Failure: transient API errors (429, 5xx, connection errors, timeouts) put the run back in the
queue's priority lane after a capped exponential back-off with jitter (no sooner than the
server's Retry-After), so no worker sits idle on it and it goes ahead of new runs; a 429 also
slows the whole shard down (kube/throttling.py). Permanent refusals (400, 403, 422...) end the
run SCHEDULING_FAILED with the API's message. A Job that already exists (AlreadyExists) counts
as submitted, so a run submitted twice (a restart, a peer's recovery) still gets one Job.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio

from nexusd.core import metrics
from nexusd.core.errors import (
    KubeConflict,
    KubeNotFound,
    KubeRejected,
    KubeUnavailable,
    StoreError,
)
from nexusd.core.lifecycle import Stage
from nexusd.kube.client import JOBS
from nexusd.logs import run_context

if TYPE_CHECKING:
    from nexusd.core.clock import Clock
    from nexusd.kube.shards import Shard
    from nexusd.kube.throttling import ShardThrottle
    from nexusd.pipeline.intake import RunRef
    from nexusd.pipeline.queueing import VirtualQueue
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)

#: Upstream supervisor's cause for a Job Kubernetes would not take (contract §7).
LAUNCH_FAILED = (
    "Algorithm submission was buffered, but failed to launch on the target cluster: "
    "Unable to launch a container for the algorithm - please review configuration and try again."
)


@attrs.frozen
class SubmitterStatistics:
    submitted: int
    already_existed: int
    rejected: int
    retries: int
    in_flight: int


@attrs.define
class Submitter:
    """Submits the runs of one shard."""

    store: CheckpointStore
    shard: Shard
    throttle: ShardThrottle
    queue: VirtualQueue[RunRef]
    clock: Clock
    retry_base_delay: float
    retry_max_delay: float
    #: the host whose runs these are; a run another host claimed meanwhile is theirs to submit
    owner: str = ""
    submitted: int = 0
    already_existed: int = 0
    rejected: int = 0
    retries: int = 0
    in_flight: int = 0

    async def submit(self, ref: RunRef) -> None:
        """Create the run's Job (once) and record it; API failures never raise from here."""
        manifest = ref.template if ref.template is not None else await self._stored(ref)
        if manifest is None:
            return
        self.in_flight += 1
        try:
            job = await self._create(ref, manifest)
        finally:
            self.in_flight -= 1
        if job is None:
            return
        metrics.submitted(self.shard.name, ref.accepted_at, trio.current_time())
        outcome = await self.store.transition(
            algorithm=ref.algorithm,
            request_id=ref.request_id,
            to=Stage.RUNNING,
            expected={Stage.BUFFERED},
            changes={"job_uid": job["metadata"].get("uid", ""), "sent_at": self.clock.now()},
        )
        metrics.transitioned(outcome, source=Stage.BUFFERED, to=Stage.RUNNING)
        if not outcome.applied and outcome.stage is Stage.CANCELLED:
            await self._delete(ref)

    async def _stored(self, ref: RunRef) -> dict[str, Any] | None:
        """The manifest of a run this process did not just accept (recovered, or queued
        without one), or None when the run is not ours to submit any more."""
        key = {"algorithm": ref.algorithm, "request_id": ref.request_id}
        pending = await self.store.pending_submission(**key)
        if pending is None:
            logger.warning("queued run is not in the store; not submitting", extra=key)
            return None
        if pending.stage is not Stage.BUFFERED:
            logger.debug("run left BUFFERED while queued; not submitting", extra=key)
            return None
        if self.owner and pending.received_by_host != self.owner:
            logger.debug("run was claimed by %s; not submitting", pending.received_by_host)
            return None
        return pending.template

    async def _create(self, ref: RunRef, manifest: dict[str, Any]) -> dict[str, Any] | None:
        shard = self.shard
        try:
            async with self.throttle.mutating():
                job = await shard.client.create(JOBS, namespace=shard.namespace, body=manifest)
        except KubeConflict:
            self.already_existed += 1
            self.throttle.succeeded()
            try:
                return await shard.client.get(JOBS, namespace=shard.namespace, name=ref.request_id)
            except (KubeNotFound, KubeUnavailable):
                # Gone again (TTL) or unreadable: it was created; the uid is a nicety.
                return {"metadata": {}}
        except KubeRejected as exc:
            self.rejected += 1
            await self._fail(ref, str(exc))
            return None
        except KubeUnavailable as exc:
            await self._retry_later(ref, exc)
            return None
        self.throttle.succeeded()
        self.submitted += 1
        return job

    async def _retry_later(self, ref: RunRef, exc: KubeUnavailable) -> None:
        self.retries += 1
        ceiling = min(self.retry_max_delay, self.retry_base_delay * 2.0**ref.attempt)
        pause = max(exc.retry_after or 0.0, random.uniform(ceiling / 2, ceiling))
        logger.info(
            "transient error creating Job (%s); retrying in %.2fs ahead of new runs",
            exc,
            pause,
            extra={"request_id": ref.request_id},
        )
        self.queue.put_priority(
            attrs.evolve(ref, attempt=ref.attempt + 1), not_before=trio.current_time() + pause
        )
        if exc.status == 429:  # requeued first: the run is not lost if the cut is cancelled
            await self.throttle.throttled()

    async def _fail(self, ref: RunRef, details: str) -> None:
        outcome = await self.store.transition(
            algorithm=ref.algorithm,
            request_id=ref.request_id,
            to=Stage.SCHEDULING_FAILED,
            expected={Stage.BUFFERED},
            changes={
                "algorithm_failure_cause": LAUNCH_FAILED,
                "algorithm_failure_details": details,
            },
        )
        metrics.transitioned(outcome, source=Stage.BUFFERED, to=Stage.SCHEDULING_FAILED)
        logger.warning("run failed to launch: %s", details, extra={"request_id": ref.request_id})

    async def _delete(self, ref: RunRef) -> None:
        with contextlib.suppress(KubeNotFound):
            async with self.throttle.mutating():
                await self.shard.client.delete(
                    JOBS,
                    namespace=self.shard.namespace,
                    name=ref.request_id,
                    propagation_policy="Background",
                    grace_period_seconds=0,
                )

    def statistics(self) -> SubmitterStatistics:
        return SubmitterStatistics(
            submitted=self.submitted,
            already_existed=self.already_existed,
            rejected=self.rejected,
            retries=self.retries,
            in_flight=self.in_flight,
        )


#: Seconds before a run whose store access failed is tried again.
STORE_RETRY_DELAY = 1.0


async def run_submitter(
    *,
    submitter: Submitter,
    workers: int,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run `workers` submission workers on the submitter's queue until cancelled."""
    queue = submitter.queue

    async def work() -> NoReturn:
        while True:
            ref = await queue.get()
            with run_context(request_id=ref.request_id, algorithm=ref.algorithm):
                try:
                    await submitter.submit(ref)
                except StoreError:
                    # The run is still BUFFERED in the store; keep it ahead of new work.
                    logger.exception("store failed while submitting; requeueing")
                    queue.put_priority(ref, not_before=trio.current_time() + STORE_RETRY_DELAY)

    logger.info("submitter for shard %s started with %d workers", submitter.shard.name, workers)
    with metrics.watching_submitter(submitter):
        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(work)
            task_status.started()
    raise AssertionError("unreachable: workers never return")  # pragma: no cover
