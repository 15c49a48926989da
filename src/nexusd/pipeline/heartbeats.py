"""Heartbeats: every scheduler and maintainer records, every few seconds, that it is alive.

The maintainer reads them to tell a dead scheduler (whose BUFFERED runs it must resubmit) from a
live one. A process records its first heartbeat before it reports started, so a freshly started
scheduler is never mistaken for a dead one.

A process with submission queues also reports them in each beat (`QueueReport`: how many runs
wait, how long the oldest has waited, how long since a worker last took one), so the
maintainer can tell a scheduler that is merely throttled (its queue moves) from one that lost
a run, and leaves the first alone (recovery.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn, Protocol

import trio

from nexusd.core.errors import StoreError
from nexusd.stores.checkpoints import QueueReport

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nexusd.core.clock import Clock
    from nexusd.pipeline.queueing import QueueStatistics
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)


class Measured(Protocol):
    """A queue as the heartbeat sees it (`VirtualQueue` of any item)."""

    def statistics(self) -> QueueStatistics: ...


def queue_report(queues: Mapping[str, Measured] | None) -> QueueReport | None:
    """Every shard's queue taken together: runs queued, the oldest wait, the latest take."""
    if queues is None:
        return None
    stats = [queue.statistics() for queue in queues.values()]
    taken = [s.last_taken_age for s in stats if s.last_taken_age is not None]
    return QueueReport(
        queued=sum(s.queued for s in stats),
        oldest_queued_age=max((s.oldest_age for s in stats), default=0.0),
        last_taken_age=min(taken, default=None),
    )


async def run_heartbeat(
    *,
    store: CheckpointStore,
    host: str,
    clock: Clock,
    interval: float,
    queues: Mapping[str, Measured] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Record `host`'s heartbeat (with the report of `queues`, when given) every `interval`."""
    await store.record_heartbeat(host=host, at=clock.now(), queues=queue_report(queues))
    task_status.started()
    while True:
        await trio.sleep(interval)
        try:
            await store.record_heartbeat(host=host, at=clock.now(), queues=queue_report(queues))
        except StoreError:
            # A missed beat is not fatal; a long outage makes peers treat us as dead, which
            # is right: we could not write runs either.
            logger.exception("could not record the heartbeat of %s", host)
