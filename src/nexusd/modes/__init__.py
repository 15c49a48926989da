"""Modes: wiring only. Each `modes/<name>.py` has `run(settings, *, task_status)` opening one
root nursery; `run_mode` also handles SIGINT/SIGTERM for the CLI."""

from __future__ import annotations

import importlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    from nexusd.settings import Settings

logger = logging.getLogger(__name__)


class Stoppable(Protocol):
    async def stop(self, grace: float) -> None: ...


Mode = Callable[..., Awaitable[None]]

#: Each mode's module, imported only when that mode runs: a production mode must not load
#: `nexusd.devcluster` (the embedded Kubernetes of `nexusd dev`) nor the other modes.
MODES = ("scheduler", "receiver", "maintainer", "controller", "dev")


def mode_runner(name: str) -> Mode:
    """`run` of `nexusd.modes.<name>`."""
    if name not in MODES:
        raise ValueError(f"unknown mode {name!r}")
    module = importlib.import_module(f"nexusd.modes.{name}")
    run: Mode = module.run
    return run


async def run_mode(name: str, settings: Settings) -> None:
    """Run a mode until SIGINT/SIGTERM, then stop it gracefully: intake closes at once, queued
    work drains for at most `shutdown.grace` seconds, then everything is cancelled."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            stopper: Stoppable = await nursery.start(mode_runner(name), settings)
            async for signum in signals:
                logger.info("received %s, stopping", signal.Signals(signum).name)
                await stopper.stop(settings.shutdown.grace)
                nursery.cancel_scope.cancel()
                break
