"""Heartbeats: every scheduler and maintainer records, every few seconds, that it is alive.

The maintainer reads them to tell a dead scheduler (whose BUFFERED runs it must resubmit) from a
live one. A process records its first heartbeat before it reports started, so a freshly started
scheduler is never mistaken for a dead one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn

import trio

from nexusd.core.errors import StoreError

if TYPE_CHECKING:
    from nexusd.core.clock import Clock
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)


async def run_heartbeat(
    *,
    store: CheckpointStore,
    host: str,
    clock: Clock,
    interval: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    await store.record_heartbeat(host=host, at=clock.now())
    task_status.started()
    while True:
        await trio.sleep(interval)
        try:
            await store.record_heartbeat(host=host, at=clock.now())
        except StoreError:
            # A missed beat is not fatal; a long outage makes peers treat us as dead, which
            # is right: we could not write runs either.
            logger.exception("could not record the heartbeat of %s", host)
