"""Leasing and reporting under load, outages and recycling, against the fake scheduler
(tests/warm/fake_scheduler.py fakes the scheduler's worker API; HTTP over loopback is real, and
its outage is real: the port stops listening, so connections are refused)."""

from __future__ import annotations

import collections
import functools
from typing import TYPE_CHECKING

import trio

from nexusd.warm.leasing import Retry
from nexusd.warm.running import run_worker
from tests.warm.conftest import eventually, worker_settings

if TYPE_CHECKING:
    from nexusd.warm import WarmRun
    from nexusd.warm.handlers import Handler
    from nexusd.warm.serving import Worker
    from tests.warm.fake_scheduler import FakeScheduler


async def start(
    nursery: trio.Nursery, scheduler: FakeScheduler, handler: Handler, **kw: str
) -> Worker:
    settings = worker_settings(scheduler, **kw)
    worker: Worker = await nursery.start(functools.partial(run_worker, settings, handler=handler))
    return worker


def reports_with_done(scheduler: FakeScheduler) -> int:
    return sum(1 for report in scheduler.reports if report["done"])


async def test_a_burst_is_reported_in_far_fewer_reports_than_runs(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    async def handler(run: WarmRun) -> None:
        await trio.lowlevel.checkpoint()

    for index in range(200):
        scheduler.add(f"r{index}")
    await start(nursery, scheduler, handler, concurrency="16")

    await scheduler.until(lambda: len(scheduler.done_items) == 200)

    assert sorted(scheduler.done_ids()) == sorted(scheduler.runs)  # each once
    assert reports_with_done(scheduler) <= 40, reports_with_done(scheduler)
    assert len(scheduler.lease_requests) <= 60, len(scheduler.lease_requests)
    assert all(request["max"] <= 16 for request in scheduler.lease_requests)


async def test_outcomes_finished_while_the_scheduler_is_down_are_reported_once_it_is_back(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    gate = trio.Event()
    entered: list[str] = []

    async def handler(run: WarmRun) -> None:
        entered.append(run.request_id)
        await gate.wait()

    for index in range(20):
        scheduler.add(f"r{index}")
    worker = await start(nursery, scheduler, handler, concurrency="4", runs="0")
    await scheduler.until(lambda: len(entered) == 4)

    await scheduler.down()
    gate.set()  # the four finish while nothing can be reported
    with trio.fail_after(10):
        while worker.statistics().failed_requests < 5:
            await trio.sleep(0.01)  # the worker's own retries, observed: polled, bounded
    assert worker.statistics().pending_reports == 4
    await scheduler.serve(nursery)

    await scheduler.until(lambda: len(scheduler.done_items) == 20)

    counts = collections.Counter(scheduler.done_ids())
    assert set(counts) == set(scheduler.runs)
    assert set(counts.values()) == {1}  # none lost, none twice
    assert all(item["status"] == "completed" for item in scheduler.done_items)
    await eventually(lambda: worker.statistics().pending_reports == 0)  # the answers arrived


async def test_runs_beyond_what_was_asked_for_are_released_at_once(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    scheduler.overgive = 2
    done = trio.Event()

    async def handler(run: WarmRun) -> None:
        await done.wait()

    for index in range(3):
        scheduler.add(f"r{index}")
    await start(nursery, scheduler, handler)

    await scheduler.until(lambda: len(scheduler.released) == 2)

    assert [item["requestId"] for item in scheduler.released] == ["r1", "r2"]
    assert scheduler.runs["r1"].attempt == 2  # requeued by the release
    assert scheduler.runs["r0"].state == "leased"
    done.set()
    await scheduler.until(lambda: len(scheduler.done_items) == 3)
    assert sorted(scheduler.done_ids()) == ["r0", "r1", "r2"]


async def test_recycling_after_runs_leases_no_more_and_returns_once_reported(
    scheduler: FakeScheduler,
) -> None:
    for index in range(10):
        scheduler.add(f"r{index}")
    settings = worker_settings(scheduler, concurrency="2", runs="5")

    with trio.fail_after(10):
        await run_worker(settings, handler=lambda run: run.request_id)  # returns by itself

    assert len(scheduler.done_items) == 5
    assert sum(request["max"] for request in scheduler.lease_requests) <= 5 + 2
    assert sum(run.state == "queued" for run in scheduler.runs.values()) == 5
    assert len(scheduler.results) == 5


async def test_leases_are_renewed_while_runs_work(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    scheduler.lease_seconds = 0.3  # renewals every 0.1 s
    gate = trio.Event()

    async def handler(run: WarmRun) -> None:
        await gate.wait()

    scheduler.add("r1")
    await start(nursery, scheduler, handler)
    await scheduler.until(lambda: sum(1 for report in scheduler.reports if report["holding"]) >= 3)
    renewals = [report for report in scheduler.reports if report["holding"]]
    assert all(report["holding"] == [{"requestId": "r1", "attempt": 1}] for report in renewals)
    assert all(0 < report["wait"] <= 0.1 for report in renewals)
    gate.set()
    await scheduler.until(lambda: scheduler.done_items)


async def test_a_result_upload_answered_503_is_retried(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    scheduler.put_failures = 2
    scheduler.add("r1")
    await start(nursery, scheduler, lambda run: "the result")

    await scheduler.until(lambda: scheduler.done_items)

    assert scheduler.put_attempts == 3
    assert scheduler.results["r1"][0] == b"the result"
    assert scheduler.done_items[0]["uploaded"] is True


def test_the_back_off_doubles_up_to_its_cap_with_jitter() -> None:
    retry = Retry(base_delay=0.1, max_delay=2.0)
    for failures in range(1, 60):
        cap = min(2.0, 0.1 * 2 ** (failures - 1))
        assert cap / 2 <= retry.delay(failures) <= cap
