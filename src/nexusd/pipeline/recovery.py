"""Recovery at start: runs this host accepted but never submitted go ahead of the queue.

Input: the checkpoint store, this scheduler's host name. Output: every BUFFERED run received by
this host is put in the queue's priority lane. A run whose Job was in fact created before the
restart is harmless: the submitter treats AlreadyExists as submitted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nexusd.core.lifecycle import Stage
from nexusd.pipeline.intake import RunRef

if TYPE_CHECKING:
    from nexusd.pipeline.queueing import VirtualQueue
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)


async def requeue_buffered(
    *, store: CheckpointStore, host: str, queues: dict[str, VirtualQueue[RunRef]]
) -> int:
    """Requeue this host's BUFFERED runs in their shard's priority lane; returns how many.

    A run whose shard is no longer configured stays BUFFERED (and is logged): the
    maintainer decides what becomes of it.
    """
    requeued = 0
    for checkpoint in await store.by_host_and_stage(host=host, stage=Stage.BUFFERED):
        entry = await store.get_submission(algorithm=checkpoint.algorithm, request_id=checkpoint.id)
        queue = queues.get(entry.cluster) if entry is not None else None
        if queue is None:
            logger.warning(
                "buffered run has no configured shard; leaving it",
                extra={"request_id": checkpoint.id, "algorithm": checkpoint.algorithm},
            )
            continue
        queue.put_priority(RunRef(algorithm=checkpoint.algorithm, request_id=checkpoint.id))
        requeued += 1
    if requeued:
        logger.info("requeued %d buffered runs of %s ahead of the queue", requeued, host)
    return requeued
