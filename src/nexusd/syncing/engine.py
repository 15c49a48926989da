"""`run_configuration_sync`: the configuration controller's engine, wired as a labelled list.

    controller side   follows the controller namespace; finalizers, statuses, events, adoption
    shard directory   one reconciler per shard (directory + shards passed in), hot reloaded

The controller side loads first (every shard decision reads its cache), then the shards
start; statuses are written only once the shards are known, so a start-up never reports an
object ready in "no shards". `nexusd controller` runs this only while it holds leadership.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NoReturn

import trio

from nexusd.core.clock import SystemClock
from nexusd.syncing.controller_side import ControllerSide
from nexusd.syncing.shard_directory import ShardDirectory

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nexusd.kube.client import KubeClient
    from nexusd.syncing.settings import SyncSettings
    from nexusd.syncing.status import Key, SyncStatus


async def run_configuration_sync(
    *,
    controller: KubeClient,
    settings: SyncSettings,
    status: SyncStatus,
    extra_shards: Mapping[str, KubeClient] = {},
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Sync the controller cluster's templates and workgroups (and what they reference) into
    every shard until cancelled; `started()` once the controller side is loaded and every
    shard's reconciler runs (reachable or not)."""

    def fanout(key: Key) -> None:
        directory.enqueue(key)

    clock = SystemClock()
    side = ControllerSide(
        client=controller, settings=settings, status=status, fanout=fanout, clock=clock
    )
    directory = ShardDirectory(
        settings=settings,
        controller=side.cache,
        status=status,
        notify=side.shard_changed,
        clock=clock,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(side.run)
        await nursery.start(functools.partial(directory.run, extra_shards=extra_shards))
        side.shards_known.set()
        task_status.started()
    raise AssertionError("unreachable")  # pragma: no cover
