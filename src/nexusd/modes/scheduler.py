"""`nexusd scheduler`: the public API v1, buffering, the virtual queue and Job submission."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from nexusd.modes.building import hold_identity, open_foundation, open_shards
from nexusd.modes.services import Running, start_services

if TYPE_CHECKING:
    from nexusd.settings import Settings


async def run(
    settings: Settings, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
) -> None:
    async with (
        open_foundation(settings) as foundation,
        open_shards(settings) as shards,
        trio.open_nursery() as nursery,
    ):
        await hold_identity(foundation.store, settings, "scheduler")
        running = await start_services(
            nursery, foundation, shards=shards, scheduler=True, receiver=False
        )
        task_status.started(running)
