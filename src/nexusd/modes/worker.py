"""`nexusd worker`: a warm pool's worker (see `nexusd.warm`), in the pool's pods.

    nexusd worker [options] -- <command> <args...>    a process of the command per run
    nexusd worker [options] --handler module:function  a call of the function per run

It exits 0 once recycled (after `worker.runs` runs) or stopped by SIGTERM, having released
what it had not started and reported what it finished; 2 on bad settings (no scheduler URL,
no algorithm, neither or both of a command and a handler, a handler that does not import).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import trio

from nexusd.warm.handlers import load_handler
from nexusd.warm.running import check_settings, run_until_signalled, run_worker

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nexusd.settings import Settings
    from nexusd.warm.serving import Worker


async def run(
    settings: Settings,
    *,
    command: Sequence[str] = (),
    task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until recycled or `Worker.stop()`; `started(worker)` once it leases."""
    check_settings(settings.worker, command=command)
    handler = load_handler(settings.worker.handler) if settings.worker.handler else None
    # The worker's root nursery is `Worker.run`'s: the lease loop, the reporting loops and
    # one task per run.
    await run_worker(settings, command=command, handler=handler, task_status=task_status)


async def main(settings: Settings, command: Sequence[str]) -> None:
    """The CLI's entry: `run` until recycled, SIGTERM or SIGINT."""
    await run_until_signalled(functools.partial(run, settings, command=command))
