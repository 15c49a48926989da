"""Fixtures of the worker's tests: the fake scheduler (see fake_scheduler.py for what it fakes)
on loopback, and settings of a worker pointed at it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

from nexusd.settings import Settings, load_settings
from tests.warm.fake_scheduler import ALGORITHM, FakeScheduler

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def scheduler(nursery: trio.Nursery) -> AsyncIterator[FakeScheduler]:
    fake = FakeScheduler()
    await fake.serve(nursery)
    yield fake
    fake.close()


def worker_settings(scheduler: FakeScheduler, **overrides: Any) -> Settings:
    """Settings of a worker of the fake's pool; keyword arguments override worker.* keys (or,
    spelled "section.key", any key)."""
    values = {
        "worker.scheduler": scheduler.url,
        "worker.algorithm": ALGORITHM,
        "worker.name": "worker-1",
        "worker.retry_base_delay": "10ms",
        "worker.retry_max_delay": "100ms",
        "worker.kill_grace": "1s",
        "shutdown.grace": "5s",
    }
    values.update(
        {key if "." in key else f"worker.{key}": value for key, value in overrides.items()}
    )
    return load_settings(environ={}, overrides=values)


async def eventually(predicate: Any, within: float = 10.0) -> None:
    """Poll `predicate()` (state of another process: files, pids) until it holds, bounded."""
    with trio.fail_after(within):
        while not predicate():
            await trio.sleep(0.02)
