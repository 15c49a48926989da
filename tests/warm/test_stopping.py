"""How a worker ends: stopped while idle, runs outliving the grace, a scheduler that refuses
it; against the fake scheduler (tests/warm/fake_scheduler.py fakes the scheduler's worker API;
the worker, its processes and HTTP over loopback are real)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import pytest
import trio

from nexusd.warm.leasing import SchedulerRefused
from nexusd.warm.running import run_worker
from tests.warm.conftest import worker_settings

if TYPE_CHECKING:
    from pathlib import Path

    from nexusd.settings import Settings
    from nexusd.warm import WarmRun
    from nexusd.warm.serving import Worker
    from tests.warm.fake_scheduler import FakeScheduler


async def start(nursery: trio.Nursery, settings: Settings, **kw: Any) -> tuple[Worker, trio.Event]:
    """The worker, and an event set when its `run` returned."""
    ended = trio.Event()

    async def serve(task_status: trio.TaskStatus[Worker]) -> None:
        await run_worker(settings, task_status=task_status, **kw)
        ended.set()

    worker: Worker = await nursery.start(serve)
    return worker, ended


async def test_an_idle_worker_stops_at_once_though_its_lease_request_waits(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    settings = worker_settings(scheduler, max_wait="20s")
    worker, ended = await start(nursery, settings, handler=lambda run: None)
    await scheduler.until(lambda: scheduler.lease_requests)

    worker.stop()

    with trio.fail_after(2):
        await ended.wait()
    assert scheduler.reports == []


async def test_runs_outliving_the_grace_are_stopped_and_released(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    entered = trio.Event()

    async def endless(run: WarmRun) -> None:
        entered.set()
        await trio.sleep_forever()

    scheduler.add("r1")
    settings = worker_settings(scheduler, **{"shutdown.grace": "200ms"})
    worker, ended = await start(nursery, settings, handler=endless)
    await entered.wait()

    start_time = trio.current_time()
    worker.stop()
    with trio.fail_after(5):
        await ended.wait()

    assert trio.current_time() - start_time >= 0.2
    # Interrupted by its worker, not lost by the run: given back now, not at lease expiry.
    assert scheduler.released == [{"requestId": "r1", "attempt": 1}]
    assert scheduler.done_items == []


async def test_a_process_outliving_the_grace_is_terminated_then_released(
    nursery: trio.Nursery, scheduler: FakeScheduler, tmp_path: Path
) -> None:
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    script += f"open({str(tmp_path / 'up')!r}, 'w').close()\ntime.sleep(600)\n"
    scheduler.add("r1")
    settings = worker_settings(scheduler, kill_grace="300ms", **{"shutdown.grace": "200ms"})
    worker, ended = await start(nursery, settings, command=[sys.executable, "-c", script])
    with trio.fail_after(10):
        while not (tmp_path / "up").exists():
            await trio.sleep(0.02)  # another process's state: polled, bounded

    worker.stop()
    with trio.fail_after(5):
        await ended.wait()

    assert scheduler.released == [{"requestId": "r1", "attempt": 1}]
    assert scheduler.done_items == []  # killed: its exit is not the run's outcome


@pytest.mark.parametrize(("given", "refused"), [("right", False), ("wrong", True)])
async def test_the_pool_token_is_sent_and_a_refusal_stops_the_worker(
    nursery: trio.Nursery, scheduler: FakeScheduler, given: str, refused: bool
) -> None:
    scheduler.token = "right"
    scheduler.add("r1")
    settings = worker_settings(scheduler, token=given)

    if refused:
        with pytest.raises(ExceptionGroup) as error:
            await run_worker(settings, handler=lambda run: None)
        assert error.group_contains(SchedulerRefused, match="403 Forbidden: bad worker token")
    else:
        await start(nursery, settings, handler=lambda run: None)
        await scheduler.until(lambda: scheduler.done_items)
