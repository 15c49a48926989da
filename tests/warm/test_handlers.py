"""In-process mode: handlers called per run, results uploaded and reported, against the fake
scheduler (tests/warm/fake_scheduler.py fakes the scheduler's worker API and serves the payload
and result URLs; the worker, its HTTP and its threads are real)."""

from __future__ import annotations

import functools
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import trio

from nexusd.core.errors import ConfigError
from nexusd.modes import worker as worker_mode
from nexusd.warm.handlers import load_handler
from nexusd.warm.running import run_worker
from tests.warm.conftest import eventually, worker_settings
from tests.warm.fake_scheduler import ALGORITHM

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


async def test_a_named_handler_gets_the_run_and_its_result_is_uploaded(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    scheduler.add("inline", payload=b'{"x": 1}')
    scheduler.add("fetched", payload=b'{"x": 2}', inline=False)
    settings = worker_settings(scheduler, handler="tests.warm.sample_handlers:echo")
    await nursery.start(worker_mode.run, settings)

    await scheduler.until(lambda: len(scheduler.done_items) == 2)

    assert all(item["status"] == "completed" and item["uploaded"] for item in scheduler.done_items)
    assert scheduler.payload_gets == ["fetched"]  # the inline one needed no GET
    body, content_type = scheduler.results["fetched"]
    assert content_type == "application/json"
    assert json.loads(body) == {
        "requestId": "fetched",
        "algorithm": ALGORITHM,
        "attempt": 1,
        "payload": {"x": 2},
        "receiver": "http://receiver.test/t/1.token",
    }
    assert json.loads(scheduler.results["inline"][0])["payload"] == {"x": 1}


@pytest.mark.parametrize(
    ("value", "body", "content_type"),
    [
        (b"\x00raw", b"\x00raw", "application/octet-stream"),
        ("text é", "text é".encode(), "text/plain; charset=utf-8"),
        ([1, 2], b"[1, 2]", "application/json"),
    ],
)
async def test_what_a_handler_returns_is_the_result(
    nursery: trio.Nursery, scheduler: FakeScheduler, value: Any, body: bytes, content_type: str
) -> None:
    scheduler.add("r1")
    await start(nursery, scheduler, lambda run: value)

    await scheduler.until(lambda: scheduler.done_items)

    assert scheduler.results["r1"] == (body, content_type)
    assert scheduler.done_items[0]["uploaded"] is True


async def test_none_completes_without_a_result_and_exceptions_fail(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    def handler(run: WarmRun) -> Any:
        if run.request_id == "nothing":
            return None
        if run.request_id == "odd":
            return {1, 2}  # not a result type
        raise ValueError(f"bad payload {run.payload!r}")

    scheduler.add("nothing")
    scheduler.add("boom", payload=b"zz")
    scheduler.add("odd")
    await start(nursery, scheduler, handler, concurrency="3")

    await scheduler.until(lambda: len(scheduler.done_items) == 3)

    by_id = {item["requestId"]: item for item in scheduler.done_items}
    assert by_id["nothing"] == {
        "requestId": "nothing",
        "attempt": 1,
        "status": "completed",
        "uploaded": False,
    }
    assert by_id["boom"] == {
        "requestId": "boom",
        "attempt": 1,
        "status": "failed",
        "errorCause": "ValueError",
        "errorDetails": "bad payload b'zz'",
    }
    assert by_id["odd"]["errorCause"] == "UnsupportedResult"
    assert scheduler.results == {}


async def test_sync_handlers_run_in_threads_at_most_concurrency_at_once(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    lock, running, most, threads = threading.Lock(), [0], [0], set()

    def handler(run: WarmRun) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            threads.add(threading.get_ident())
        time.sleep(0.05)  # the work: long enough for runs to overlap
        with lock:
            running[0] -= 1

    for index in range(12):
        scheduler.add(f"r{index}")
    await start(nursery, scheduler, handler, concurrency="3")

    await scheduler.until(lambda: len(scheduler.done_items) == 12)

    assert most[0] == 3
    assert threading.get_ident() not in threads


async def test_a_cancelled_async_handler_is_cancelled_and_nothing_reported(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    entered, cancelled = trio.Event(), trio.Event()

    async def handler(run: WarmRun) -> str:
        if run.request_id == "quick":
            return "ok"
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    scheduler.add("slow")
    scheduler.add("quick")
    worker = await start(nursery, scheduler, handler, concurrency="2")
    await entered.wait()
    await scheduler.until(lambda: scheduler.done_ids() == ["quick"])

    scheduler.cancel("slow")
    with trio.fail_after(5):
        await cancelled.wait()
    await eventually(lambda: worker.statistics().held == 0)

    assert worker.statistics().pending_reports == 0
    assert scheduler.done_ids() == ["quick"]


async def test_a_cancelled_sync_handlers_result_is_dropped(
    nursery: trio.Nursery, scheduler: FakeScheduler
) -> None:
    entered, finish, finished = threading.Event(), threading.Event(), threading.Event()

    def handler(run: WarmRun) -> str:
        entered.set()
        finish.wait(10)
        finished.set()
        return "too late"

    scheduler.add("r1")
    worker = await start(nursery, scheduler, handler)
    await trio.to_thread.run_sync(entered.wait, 10)

    scheduler.cancel("r1")
    await eventually(lambda: worker.statistics().held == 0)  # let go before the thread ends
    finish.set()
    await trio.to_thread.run_sync(finished.wait, 10)
    scheduler.add("r2")  # the thread's slot is free again: the next run is served
    await scheduler.until(lambda: scheduler.done_items)

    assert scheduler.done_ids() == ["r2"]
    assert "r1" not in scheduler.results


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("echo", "expected module:function"),
        ("tests.warm.no_such_module:echo", "cannot import 'tests.warm.no_such_module'"),
        ("tests.warm.sample_handlers:missing", "has no 'missing'"),
        ("tests.warm.sample_handlers:NOT_CALLABLE", "is not callable"),
    ],
)
def test_a_bad_handler_path_is_a_config_error_naming_it(path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"worker\.handler") as error:
        load_handler(path)
    assert message in str(error.value)
