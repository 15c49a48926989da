"""Modes: wiring only. Each `modes/<name>.py` has `run(settings, *, task_status)` opening one
root nursery; `run_mode` also handles SIGINT/SIGTERM for the CLI."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import trio

from nexusd.modes import controller, dev, maintainer, receiver, scheduler

if TYPE_CHECKING:
    from nexusd.settings import Settings

logger = logging.getLogger(__name__)


class Stoppable(Protocol):
    async def stop(self, grace: float) -> None: ...


Mode = Callable[..., Awaitable[None]]

MODES: dict[str, Mode] = {
    "scheduler": scheduler.run,
    "receiver": receiver.run,
    "maintainer": maintainer.run,
    "controller": controller.run,
    "dev": dev.run,
}


async def run_mode(name: str, settings: Settings) -> None:
    """Run a mode until SIGINT/SIGTERM, then stop it gracefully: intake closes at once, queued
    work drains for at most `shutdown.grace` seconds, then everything is cancelled."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            stopper: Stoppable = await nursery.start(MODES[name], settings)
            async for signum in signals:
                logger.info("received %s, stopping", signal.Signals(signum).name)
                await stopper.stop(settings.shutdown.grace)
                nursery.cancel_scope.cancel()
                break
