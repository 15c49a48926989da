"""Job outcomes: a run whose Job failed ends in the matching terminal stage.

Input: the runs' Jobs (label `science.sneaksanddata.com/nexus-component=algorithm-run`), listed
and watched in the shard's runtime namespace.
Output: for a Job with condition Failed, the run moves to DEADLINE_EXCEEDED (reasons
DeadlineExceeded, BackoffLimitExceeded) or FAILED (PodFailurePolicy: a fatal exit code, or any
other reason), with upstream's causes (contract §7) and the condition's message as details.
Transition: BUFFERED/RUNNING -> terminal, conditional: a run the receiver already finished is
never touched. A Job that completes without a report is left to the maintainer's grace period.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio

from nexusd.core.errors import NotFound
from nexusd.core.lifecycle import Stage
from nexusd.kube.client import JOBS, Resource, WatchEvent
from nexusd.kube.watching import run_informer

if TYPE_CHECKING:
    from nexusd.kube.shards import Shard
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)

RUN_SELECTOR = "science.sneaksanddata.com/nexus-component=algorithm-run"
ALGORITHM_LABEL = "science.sneaksanddata.com/algorithm-template-name"

DEADLINE_CAUSE = "Algorithm exceeded its max allowed run time limit or retry attempt count."
FATAL_CAUSE = "Algorithm encountered a fatal error during execution: "
_DEADLINE_REASONS = frozenset({"DeadlineExceeded", "BackoffLimitExceeded"})


@attrs.frozen
class Verdict:
    algorithm: str
    request_id: str
    stage: Stage
    cause: str
    details: str


def judge(job: dict[str, Any]) -> Verdict | None:
    """The terminal stage a Job's status implies for its run, or None if it implies nothing."""
    metadata = job.get("metadata") or {}
    algorithm = (metadata.get("labels") or {}).get(ALGORITHM_LABEL)
    if not algorithm:
        return None
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") != "Failed" or condition.get("status") != "True":
            continue
        reason = condition.get("reason", "")
        message = condition.get("message", "")
        if reason in _DEADLINE_REASONS:
            return Verdict(
                algorithm, metadata["name"], Stage.DEADLINE_EXCEEDED, DEADLINE_CAUSE, message
            )
        fatal = (
            "Algorithm encountered a fatal error during execution."
            if reason == "PodFailurePolicy"
            else reason
        )
        return Verdict(algorithm, metadata["name"], Stage.FAILED, FATAL_CAUSE + fatal, message)
    return None


class _JobSink:
    """Receives the informer's Jobs and hands failed ones to the writer task."""

    def __init__(self, send: trio.MemorySendChannel[Verdict]) -> None:
        self._send = send

    def replace_all(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        for job in items:
            self._offer(job)

    def apply(self, resource: Resource, event: WatchEvent) -> None:
        if event.type in ("ADDED", "MODIFIED"):
            self._offer(event.object)

    def _offer(self, job: dict[str, Any]) -> None:
        verdict = judge(job)
        if verdict is not None:
            # Unbounded by design: a verdict is a few strings, and dropping one strands a run.
            self._send.send_nowait(verdict)


async def _record(store: CheckpointStore, verdict: Verdict) -> None:
    try:
        outcome = await store.transition(
            algorithm=verdict.algorithm,
            request_id=verdict.request_id,
            to=verdict.stage,
            changes={
                "algorithm_failure_cause": verdict.cause,
                "algorithm_failure_details": verdict.details,
            },
        )
    except NotFound:
        logger.debug("Job of an unknown run", extra={"request_id": verdict.request_id})
        return
    if outcome.applied:
        logger.info(
            "run ended %s: %s",
            verdict.stage,
            verdict.details,
            extra={"request_id": verdict.request_id},
        )


async def run_job_outcomes(
    *,
    store: CheckpointStore,
    shard: Shard,
    resync_seconds: float = 30.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    send, receive = trio.open_memory_channel[Verdict](math.inf)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_informer(
                client=shard.client,
                resources=[JOBS],
                namespace=shard.namespace,
                label_selector=RUN_SELECTOR,
                sink=_JobSink(send),
                resync_seconds=resync_seconds,
                task_status=task_status,
            )
        )
        task_status.started()
        async for verdict in receive:
            await _record(store, verdict)
    raise AssertionError("unreachable")  # pragma: no cover
