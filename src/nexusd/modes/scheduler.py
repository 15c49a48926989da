"""`nexusd scheduler`: the public API v1, buffering, the virtual queue and Job submission."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from nexusd.core.clock import SystemClock
from nexusd.modes.building import (
    bind_socket,
    external_url,
    open_checkpoint_store,
    open_payload_store,
    open_shard,
)
from nexusd.modes.services import Running, start_services

if TYPE_CHECKING:
    import socket

    from nexusd.settings import Settings


async def run(
    settings: Settings, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
) -> None:
    with bind_socket(settings.http.host, settings.http.port) as sock:
        await _run(settings, sock, task_status)


async def _run(
    settings: Settings, sock: socket.socket, task_status: trio.TaskStatus[Running]
) -> None:
    clock = SystemClock()
    base_url = external_url(settings, sock)
    async with open_checkpoint_store(settings, clock) as store, open_shard(settings) as shard:
        files = await open_payload_store(settings, clock, base_url=base_url)
        async with trio.open_nursery() as nursery:
            running = await start_services(
                nursery,
                settings=settings,
                clock=clock,
                store=store,
                files=files,
                sock=sock,
                shards={shard.name: shard},
                scheduler=True,
                receiver=False,
            )
            task_status.started(running)
