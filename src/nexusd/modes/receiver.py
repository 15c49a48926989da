"""`nexusd receiver`: the completion API algorithm containers report to.

It signs download URLs for results uploaded through the scheduler's upload URLs, so it shares
the payload store (and its signing key) with the schedulers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from nexusd.modes.building import open_foundation
from nexusd.modes.services import Running, start_services

if TYPE_CHECKING:
    from nexusd.settings import Settings


async def run(
    settings: Settings, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
) -> None:
    async with open_foundation(settings) as foundation, trio.open_nursery() as nursery:
        running = await start_services(
            nursery, foundation, shards={}, scheduler=False, receiver=True
        )
        task_status.started(running)
