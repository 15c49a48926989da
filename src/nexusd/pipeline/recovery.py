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
    *, store: CheckpointStore, host: str, queue: VirtualQueue[RunRef]
) -> int:
    runs = await store.by_host_and_stage(host=host, stage=Stage.BUFFERED)
    for checkpoint in runs:
        queue.put_priority(RunRef(algorithm=checkpoint.algorithm, request_id=checkpoint.id))
    if runs:
        logger.info("requeued %d buffered runs of %s ahead of the queue", len(runs), host)
    return len(runs)
