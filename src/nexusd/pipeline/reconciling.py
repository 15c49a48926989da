"""Reconciling: every non-terminal run is compared with its Job and pods until it is terminal.

Input: a run key (woken by observing.py when its Job, pods or events change, or by the
periodic full pass over every non-terminal run); the shard's `ClusterView`.
Output: the verdict of the declarative rule table (pipeline/classifying.py) applied as a
conditional transition: BUFFERED -> RUNNING when a pod started; BUFFERED/RUNNING -> FAILED,
SCHEDULING_FAILED or DEADLINE_EXCEEDED with the rule's cause and details, and the Job deleted
(Background) when the rule says so. The table also covers a RUNNING run whose Job is gone
(deleted by hand, a lost cluster).
Failure: `reconcile_isolated` / `reconcile_key_isolated` (what the maintainer's loops call)
log any error of one run with the run, count it in `errors` and return: a store outage, or a
malformed or surprising Job, Pod or Event that the rule table trips over, skips that run until
the next wake-up or sweep and never ends the maintainer. A terminal run is never touched
(every write is a compare-and-set that refuses to leave a terminal stage), so several
maintainers, a receiver and a scheduler can act on the same run at once and exactly one
outcome sticks. API failures of the Job deletion are logged; the next pass tries again.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import attrs

from nexusd.core import metrics
from nexusd.core.errors import KubeError, KubeNotFound, NotFound
from nexusd.core.lifecycle import Stage
from nexusd.kube.client import JOBS
from nexusd.logs import run_context
from nexusd.pipeline.classifying import Observation, classify

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nexusd.core.clock import Clock
    from nexusd.core.records import Checkpoint
    from nexusd.kube.shards import Shard
    from nexusd.kube.throttling import ShardThrottle
    from nexusd.pipeline.classifying import Verdict
    from nexusd.pipeline.observing import ClusterView, RunKey
    from nexusd.pipeline.rules import RuleTable
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)

NON_TERMINAL = frozenset({Stage.NEW, Stage.BUFFERED, Stage.RUNNING})


@attrs.frozen
class ReconcilerStatistics:
    reconciled: int
    transitions: int
    deleted_jobs: int
    errors: int


@attrs.define
class Reconciler:
    store: CheckpointStore
    shards: Mapping[str, Shard]
    throttles: Mapping[str, ShardThrottle]
    views: Mapping[str, ClusterView]
    rules: RuleTable
    clock: Clock
    #: called with (run key, seconds) when a rule's grace period is still running, so the run
    #: is looked at again when it ends even if nothing changes in the cluster meanwhile
    recheck: Callable[[RunKey, float], None] | None = None
    reconciled: int = 0
    transitions: int = 0
    deleted_jobs: int = 0
    errors: int = 0

    async def reconcile_key(self, algorithm: str, request_id: str) -> None:
        checkpoint = await self.store.get(algorithm=algorithm, request_id=request_id)
        if checkpoint is not None and checkpoint.lifecycle_stage in NON_TERMINAL:
            await self.reconcile(checkpoint)

    async def reconcile_key_isolated(self, algorithm: str, request_id: str) -> None:
        """`reconcile_key`, with any failure logged and skipped (see module doc)."""
        with run_context(request_id=request_id, algorithm=algorithm):
            try:
                await self.reconcile_key(algorithm, request_id)
            except Exception:
                self._failed(algorithm, request_id)

    async def reconcile_isolated(self, checkpoint: Checkpoint) -> None:
        """`reconcile`, with any failure logged and skipped (see module doc)."""
        with run_context(request_id=checkpoint.id, algorithm=checkpoint.algorithm):
            try:
                await self.reconcile(checkpoint)
            except Exception:
                self._failed(checkpoint.algorithm, checkpoint.id)

    def _failed(self, algorithm: str, request_id: str) -> None:
        self.errors += 1
        logger.exception(
            "reconciling %s/%s failed; skipped until its next wake-up or the sweep",
            algorithm,
            request_id,
            extra={"request_id": request_id, "algorithm": algorithm},
        )

    async def reconcile(self, checkpoint: Checkpoint) -> None:
        """Look at one run's whole state and act on it (level-triggered, idempotent)."""
        self.reconciled += 1
        if checkpoint.warm:
            return  # no Job: its lease and its worker pod are watched (pipeline/worker_pods.py)
        view = self.views.get(checkpoint.cluster)
        if view is None or not view.synced:
            return  # a shard this maintainer does not watch, or not listed yet
        workgroup = (checkpoint.applied_configuration.get("workgroupRef") or {}).get("name", "")
        observation = Observation(
            checkpoint=checkpoint,
            job=view.job(checkpoint.id),
            pods=view.pods(checkpoint.id),
            events=view.events(checkpoint.id),
            now=self.clock.now(),
            workgroup=str(workgroup),
        )
        verdict = classify(observation, self.rules)
        if verdict is None:
            return
        if verdict.stage is not None:
            await self._apply(checkpoint, verdict, view.shard)
        if verdict.recheck_after is not None and self.recheck is not None:
            self.recheck((checkpoint.algorithm, checkpoint.id), verdict.recheck_after)

    async def _apply(self, checkpoint: Checkpoint, verdict: Verdict, shard_name: str) -> None:
        assert verdict.stage is not None
        applied = await self._transition(checkpoint, verdict.stage, verdict.cause, verdict.details)
        if applied:
            metrics.verdict(verdict.rule, verdict.stage)
        if applied and verdict.delete_job:
            await self._delete_job(shard_name, checkpoint.id)

    async def _transition(
        self, checkpoint: Checkpoint, to: Stage, cause: str, details: str
    ) -> bool:
        changes = (
            {}
            if to is Stage.RUNNING
            else {
                "algorithm_failure_cause": cause,
                "algorithm_failure_details": details,
            }
        )
        try:
            outcome = await self.store.transition(
                algorithm=checkpoint.algorithm,
                request_id=checkpoint.id,
                to=to,
                expected={checkpoint.lifecycle_stage},
                changes=changes,
            )
        except NotFound:
            return False
        metrics.transitioned(outcome, source=checkpoint.lifecycle_stage, to=to)
        if outcome.applied:
            self.transitions += 1
            logger.info(
                "run %s -> %s: %s",
                checkpoint.lifecycle_stage,
                to,
                details or cause,
                extra={"request_id": checkpoint.id, "algorithm": checkpoint.algorithm},
            )
        return outcome.applied

    async def _delete_job(self, shard_name: str, request_id: str) -> None:
        shard = self.shards[shard_name]
        try:
            with contextlib.suppress(KubeNotFound):
                async with self.throttles[shard_name].mutating():
                    await shard.client.delete(
                        JOBS,
                        namespace=shard.namespace,
                        name=request_id,
                        propagation_policy="Background",
                    )
                self.deleted_jobs += 1
        except KubeError as exc:
            self.errors += 1
            logger.warning("could not delete Job %s: %s", request_id, exc)

    def statistics(self) -> ReconcilerStatistics:
        return ReconcilerStatistics(
            reconciled=self.reconciled,
            transitions=self.transitions,
            deleted_jobs=self.deleted_jobs,
            errors=self.errors,
        )
