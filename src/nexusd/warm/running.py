"""A worker from the `worker.*` settings: checked, wired, and run until recycled or signalled.

`run_worker` is what `nexusd worker` runs (through `nexusd.modes.worker`) and what `serve`,
the Python API of in-process algorithms, runs; `run_until_signalled` turns SIGTERM (the pod
being stopped) and SIGINT into the worker's clean stop, and a second one into an immediate one.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

from nexusd.core.errors import ConfigError
from nexusd.settings import ENV_PREFIX, load_settings
from nexusd.warm.commands import CommandExecutor
from nexusd.warm.handlers import HandlerExecutor
from nexusd.warm.leasing import Retry, WorkerApi
from nexusd.warm.serving import Worker, WorkerLimits

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from nexusd.settings import Settings, WorkerSettings
    from nexusd.warm.handlers import Handler
    from nexusd.warm.serving import Execute

logger = logging.getLogger(__name__)

#: Connections beyond one per run: the lease long poll, the renewal long poll, the report.
SPARE_CONNECTIONS = 3

#: The settings sections a worker reads from NEXUS__SECTION__KEY variables. The rest of its
#: pod's NEXUS__ environment belongs to the algorithm: the pool's pods have the env of the runs'
#: Jobs (NEXUS__ALGORITHM_NAME, NEXUS__CLIENT__RECEIVER, ...), which is passed on untouched.
WORKER_SECTIONS = ("WORKER", "LOGGING", "SHUTDOWN")


def worker_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without the NEXUS__ variables that are not the worker's own settings."""
    own = tuple(f"{ENV_PREFIX}{section}__" for section in WORKER_SECTIONS)
    return {
        name: value
        for name, value in environ.items()
        if not name.startswith(ENV_PREFIX) or name.startswith(own)
    }


def check_settings(
    settings: WorkerSettings, *, command: Sequence[str] = (), handler: bool = False
) -> None:
    """Raise ConfigError naming the first thing a worker cannot start with."""
    if not settings.scheduler:
        raise ConfigError(
            "worker.scheduler: the scheduler's URL is required (NEXUS__WORKER__SCHEDULER "
            "or --scheduler)"
        )
    if not settings.scheduler.startswith(("http://", "https://")):
        raise ConfigError(
            f"worker.scheduler: expected an http:// or https:// URL, got {settings.scheduler!r}"
        )
    if not settings.algorithm:
        raise ConfigError(
            "worker.algorithm: the warm template this worker serves is required "
            "(NEXUS__WORKER__ALGORITHM or --algorithm)"
        )
    for key, least in (("concurrency", 1), ("runs", 0), ("report_batch", 1)):
        if getattr(settings, key) < least:
            raise ConfigError(f"worker.{key}: must be at least {least}")
    handled = handler or bool(settings.handler)
    if command and handled:
        raise ConfigError("worker.handler: give a handler or a command after --, not both")
    if not command and not handled:
        raise ConfigError(
            "nothing to run: give the algorithm's command after -- (nexusd worker -- "
            "<command> <args...>) or worker.handler (--handler module:function)"
        )


def worker_name(settings: WorkerSettings) -> str:
    return settings.name or socket.gethostname()


async def run_worker(
    settings: Settings,
    *,
    command: Sequence[str] = (),
    handler: Handler | None = None,
    task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve runs of `worker.algorithm`, each by `command` (a process per run) or `handler`
    (called in-process), until recycled after `worker.runs` runs or stopped (`Worker.stop`)."""
    config = settings.worker
    check_settings(config, command=command, handler=handler is not None)
    limits = httpx.Limits(
        max_connections=None, max_keepalive_connections=config.concurrency + SPARE_CONNECTIONS
    )
    async with httpx.AsyncClient(limits=limits, timeout=config.request_timeout) as client:
        retry = Retry(base_delay=config.retry_base_delay, max_delay=config.retry_max_delay)
        execute: Execute
        if handler is not None:
            execute = HandlerExecutor(
                handler,
                algorithm=config.algorithm,
                client=client,
                concurrency=config.concurrency,
                request_timeout=config.request_timeout,
                retry=retry,
            )
        else:
            execute = CommandExecutor(tuple(command), kill_grace=config.kill_grace)
        api = WorkerApi(
            client=client,
            scheduler=config.scheduler,
            algorithm=config.algorithm,
            worker=worker_name(config),
            token=config.token,
            request_timeout=config.request_timeout,
        )
        worker = Worker(
            api=api,
            execute=execute,
            limits=WorkerLimits(
                concurrency=config.concurrency,
                runs=config.runs,
                max_wait=config.max_wait,
                report_batch=config.report_batch,
                grace=settings.shutdown.grace,
                final_report=config.request_timeout,
            ),
            retry=retry,
        )
        logger.info(
            "worker %s serving %s from %s (%s, concurrency %d)",
            api.worker,
            config.algorithm,
            config.scheduler,
            "in-process" if handler is not None else "command",
            config.concurrency,
        )
        await worker.run(task_status=task_status)


async def run_until_signalled(start: Callable[..., Awaitable[None]]) -> None:
    """Run `start(task_status=...)` (which reports its Worker) until it returns, or stop it on
    SIGTERM / SIGINT; a second signal stops it at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def serve(task_status: trio.TaskStatus[Worker]) -> None:
                await start(task_status=task_status)
                nursery.cancel_scope.cancel()

            worker: Worker = await nursery.start(serve)
            stopping = False
            async for signum in signals:
                name = signal.Signals(signum).name
                if stopping:
                    logger.warning("received %s again: stopping now", name)
                    nursery.cancel_scope.cancel()
                    break
                logger.info("received %s, stopping", name)
                stopping = True
                worker.stop()


def serve(handler: Handler, *, settings: Settings | None = None, **worker: Any) -> None:
    """Serve the runs of a warm pool in-process: `handler(run)` for each (see
    `nexusd.warm.handlers`), until recycled after `worker.runs` runs or SIGTERM.

    Settings come from `settings`, else from the `NEXUS__WORKER__*` environment the pool's
    pods get; keyword arguments override `worker.*` keys, e.g. `serve(f, concurrency=8)`.
    Logging is left as the caller configured it.
    """
    if settings is None:
        settings = load_settings(environ=worker_environ(os.environ))
    if worker:
        settings = attrs.evolve(settings, worker=attrs.evolve(settings.worker, **worker))
    trio.run(run_until_signalled, functools.partial(run_worker, settings, handler=handler))
