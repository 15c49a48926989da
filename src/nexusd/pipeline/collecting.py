"""Collecting: garbage the runs leave behind, removed on a schedule.

- Finished Jobs still present well past their `ttlSecondsAfterFinished` (the TTL controller is
  off, or was down) are deleted (Background, so their pods go too).
- Failed Jobs are deleted `failed_job_ttl` after they failed. The maintainer does not delete a
  Job that has already failed when it fails the run (`pipeline/classifying.py`), so its pods
  and their logs stay for `kubectl logs` until then (Kubernetes' TTL controller may remove
  them sooner, at the Job's `ttlSecondsAfterFinished`). A failed Job whose run is not yet
  terminal is left for the maintainer to classify first.
- Runs finished longer ago than `checkpoint_retention` (upstream's Cassandra TTL: 30 days) are
  deleted with their submission entries, and their payload and result blobs with them.
- Payload and result blobs older than `payload_retention` are deleted (for S3 a bucket lifecycle
  rule does the same job at no cost; this keeps a filesystem store bounded).
Every step works in bounded batches and is idempotent, so several maintainers, or a pass cut
short, do no harm. Active Jobs and non-terminal runs are never collected.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import attrs

from nexusd.core.errors import KubeError, KubeNotFound
from nexusd.kube.client import JOBS
from nexusd.kube.manifests import LABEL_TEMPLATE_NAME

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nexusd.core.clock import Clock
    from nexusd.kube.shards import Shard
    from nexusd.kube.throttling import ShardThrottle
    from nexusd.pipeline.observing import ClusterView
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.payloads import PayloadStore

logger = logging.getLogger(__name__)

BATCH = 1000
DEFAULT_JOB_TTL = 300.0  # nexusd's Jobs carry ttlSecondsAfterFinished 300 (contract §6.4)
DEFAULT_FAILED_JOB_TTL = DEFAULT_JOB_TTL  # kept as long as a completed Job is


@attrs.frozen
class CollectionReport:
    jobs: int
    checkpoints: int
    blobs: int
    errors: int


def finished_at(
    job: dict[str, Any], types: tuple[str, ...] = ("Complete", "Failed")
) -> dt.datetime | None:
    """When a Job reached Complete or Failed (or one of `types`), or None while it runs."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in types and condition.get("status") == "True":
            stamp = condition.get("lastTransitionTime")
            if stamp:
                return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return None


@attrs.define
class Collector:
    store: CheckpointStore
    payloads: PayloadStore
    shards: Mapping[str, Shard]
    throttles: Mapping[str, ShardThrottle]
    views: Mapping[str, ClusterView]
    clock: Clock
    checkpoint_retention: float
    payload_retention: float
    job_ttl_slack: float
    failed_job_ttl: float = DEFAULT_FAILED_JOB_TTL
    """Seconds a failed Job (and its pods, with their logs) is kept after it failed."""

    async def collect(self) -> CollectionReport:
        now = self.clock.now()
        jobs, errors = await self._expired_jobs(now)
        checkpoints = blobs = 0
        cutoff = now - dt.timedelta(seconds=self.checkpoint_retention)
        while True:
            keys = await self.store.purge(finished_before=cutoff, limit=BATCH)
            for algorithm, request_id in keys:
                await self.payloads.delete_run(algorithm=algorithm, request_id=request_id)
            checkpoints += len(keys)
            if len(keys) < BATCH:
                break
        before = now - dt.timedelta(seconds=self.payload_retention)
        while True:
            deleted = await self.payloads.purge_older_than(before=before, limit=BATCH)
            blobs += deleted
            if deleted < BATCH:
                break
        if jobs or checkpoints or blobs:
            logger.info(
                "collected %d finished Jobs, %d old runs, %d old blobs", jobs, checkpoints, blobs
            )
        return CollectionReport(jobs=jobs, checkpoints=checkpoints, blobs=blobs, errors=errors)

    def _expired(self, job: dict[str, Any], now: dt.datetime) -> bool:
        failed = finished_at(job, ("Failed",))
        if failed is not None:
            return (now - failed).total_seconds() >= self.failed_job_ttl
        ended = finished_at(job)
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished", DEFAULT_JOB_TTL)
        return ended is not None and (now - ended).total_seconds() >= ttl + self.job_ttl_slack

    async def _run_finished(self, job: dict[str, Any]) -> bool:
        """A failed Job's run is terminal (or unknown): its verdict no longer needs the Job."""
        if finished_at(job, ("Failed",)) is None:
            return True
        metadata = job.get("metadata") or {}
        algorithm = (metadata.get("labels") or {}).get(LABEL_TEMPLATE_NAME)
        if not algorithm:
            return True
        run = await self.store.get(algorithm=algorithm, request_id=metadata.get("name", ""))
        return run is None or run.lifecycle_stage.is_terminal

    async def _expired_jobs(self, now: dt.datetime) -> tuple[int, int]:
        deleted = errors = 0
        for name, view in self.views.items():
            shard = self.shards[name]
            for job in view.jobs():
                if not self._expired(job, now) or not await self._run_finished(job):
                    continue
                try:
                    with contextlib.suppress(KubeNotFound):
                        async with self.throttles[name].mutating():
                            await shard.client.delete(
                                JOBS,
                                namespace=shard.namespace,
                                name=job["metadata"]["name"],
                                propagation_policy="Background",
                            )
                        deleted += 1
                except KubeError as exc:
                    errors += 1
                    logger.warning("could not delete finished Job: %s", exc)
        return deleted, errors
