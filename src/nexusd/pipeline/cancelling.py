"""Cancelling: `POST /algorithm/v1/cancel/{alg}/requests/{id}` (contract §2.7).

Input: the run key and `{initiator, reason, cancellationPolicy}`.
Output: the run is CANCELLED with upstream's cause/details and its Job is deleted with the given
propagation policy (grace period 0), so children owned by the Job go with it.
Transition: any non-terminal stage -> CANCELLED. Unlike upstream, a BUFFERED run that has no Job
yet is cancelled too (the submitter skips it), and a run that already finished is left as it is.
Failure: an unknown run is `NotFound`; a Job that is already gone is fine; other API failures
propagate after the checkpoint is CANCELLED (the maintainer collects the Job).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs

from nexusd.core import metrics
from nexusd.core.errors import KubeNotFound
from nexusd.core.lifecycle import Stage
from nexusd.kube.client import JOBS
from nexusd.pipeline.bodies import json_object, string_field

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nexusd.core.records import Transition
    from nexusd.kube.shards import Shard
    from nexusd.kube.throttling import ShardThrottle
    from nexusd.pipeline.intake import RunRef
    from nexusd.pipeline.leasing import WarmPools
    from nexusd.pipeline.queueing import VirtualQueue
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)

POLICIES = ("Orphan", "Foreground", "Background")


class InvalidCancellation(ValueError):
    """The cancellation body is invalid; the message is upstream's."""


@attrs.frozen
class CancellationRequest:
    initiator: str
    reason: str
    policy: str


def parse_cancellation(body: bytes) -> CancellationRequest:
    def invalid(message: str) -> InvalidCancellation:
        return InvalidCancellation(f"Cancellation payload is invalid: {message}")

    document = json_object(body, invalid)
    policy = string_field(document, "cancellationPolicy", invalid) or "Background"
    if policy not in POLICIES:
        raise InvalidCancellation(
            f"Invalid cancellation request: invalid CancellationPolicy: '{policy}', "
            "accepted values: Orphan, Foreground or Background"
        )
    return CancellationRequest(
        initiator=string_field(document, "initiator", invalid),
        reason=string_field(document, "reason", invalid),
        policy=policy,
    )


@attrs.define
class Canceller:
    store: CheckpointStore
    shards: Mapping[str, Shard]
    throttles: Mapping[str, ShardThrottle]
    #: this process's shard queues: a cancelled run still waiting in one is taken out, so it
    #: never reaches the API server
    queues: Mapping[str, VirtualQueue[RunRef]] = attrs.field(factory=dict)
    #: this process's warm pools: a cancelled warm run leaves its pool queue, or its worker is
    #: told to stop it (it has no Job)
    pools: WarmPools | None = None

    async def cancel(
        self, *, algorithm: str, request_id: str, request: CancellationRequest
    ) -> Transition:
        """Cancel the run; raises `NotFound` for an unknown run."""
        pending = await self.store.pending_submission(algorithm=algorithm, request_id=request_id)
        outcome = await self.store.transition(
            algorithm=algorithm,
            request_id=request_id,
            to=Stage.CANCELLED,
            changes={
                "algorithm_failure_cause": f"Cancelled by '{request.initiator}'",
                "algorithm_failure_details": f"Run cancelled, reason: '{request.reason}'",
            },
        )
        metrics.transitioned(outcome, source="unknown", to=Stage.CANCELLED)
        if not outcome.applied or pending is None:
            return outcome  # finished already, or a dry run (never had a Job)
        if await self._warm(algorithm, request_id):
            return outcome
        queue = self.queues.get(pending.cluster)
        if queue is not None and queue.discard(
            lambda ref: (ref.algorithm, ref.request_id) == (algorithm, request_id)
        ):
            return outcome  # it was still queued here: no Job was ever created
        shard = self.shards.get(pending.cluster)
        if shard is not None:
            try:
                async with self.throttles[shard.name].mutating():
                    await shard.client.delete(
                        JOBS,
                        namespace=shard.namespace,
                        name=request_id,
                        propagation_policy=request.policy,
                        grace_period_seconds=0,
                    )
            except KubeNotFound:
                logger.debug("cancelled run had no Job", extra={"request_id": request_id})
        return outcome

    async def _warm(self, algorithm: str, request_id: str) -> bool:
        """Whether the cancelled run was a warm pool's (then its pool, here or at the next
        renewal of its worker's lease elsewhere, stops it). Read only for warm templates."""
        if self.pools is None or algorithm not in self.pools.pools:
            return False
        checkpoint = await self.store.get(algorithm=algorithm, request_id=request_id)
        if checkpoint is None or not checkpoint.warm:
            return False
        self.pools.cancelled_run(algorithm, request_id)
        return True
