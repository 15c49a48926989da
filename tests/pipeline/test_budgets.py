"""The rate budget shared through the checkpoint store, under the throttle.

Several throttles, each with its own `StoreBudget`, on one store play several processes: they
share one rate, a 429 in one slows all, and their successes bring the rate back no higher than
the smallest ceiling. Real: the memory store (the SQLite and PostgreSQL stores answer the same
calls alike: tests/stores/test_rate_budget_contract.py), the budget and the throttle, all on
trio's autojump clock (the store's wall clock moves with it), so durations are exact. FAKED:
store failures, by a memory store whose budget calls raise or hang when told to.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import logging
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from nexusd.core.errors import StoreError
from nexusd.kube.throttling import ShardThrottle
from nexusd.pipeline.budgets import RETRY_AFTER, STORE_TIMEOUT, StoreBudget
from nexusd.stores.memory import MemoryCheckpointStore
from nexusd.stores.rate_budgets import CEILING_HOLD

if TYPE_CHECKING:
    from nexusd.stores.rate_budgets import TokenGrant

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_HOSTS = (f"scheduler-{n}" for n in itertools.count())


class TrioClock:
    """Wall-clock time that moves with trio's clock (here the autojump clock)."""

    def now(self) -> dt.datetime:
        return EPOCH + dt.timedelta(seconds=trio.current_time())


class Flaky(MemoryCheckpointStore):
    """A memory store whose budget calls fail ("error") or never answer ("hang") on demand."""

    def __init__(self) -> None:
        super().__init__(clock=TrioClock())
        self.failing = ""
        self.budget_calls = 0

    async def grant_tokens(self, **arguments: Any) -> TokenGrant:
        await self._trouble()
        return await super().grant_tokens(**arguments)

    async def cut_rate(self, **arguments: Any) -> TokenGrant:
        await self._trouble()
        return await super().cut_rate(**arguments)

    async def _trouble(self) -> None:
        self.budget_calls += 1
        if self.failing == "error":
            raise StoreError("sqlite: BusyError: database is locked")
        if self.failing == "hang":
            await trio.sleep_forever()


@pytest.fixture
def store() -> Flaky:
    return Flaky()


def process(store: Flaky, **limits: Any) -> ShardThrottle:
    """One process's throttle for shard "dev", its budget in `store`, its own host name."""
    budget = functools.partial(StoreBudget, store=store, shard="dev", caller=next(_HOSTS))
    return ShardThrottle(budget=budget, **limits)


async def calls(throttle: ShardThrottle, n: int, *, succeed: bool = False) -> None:
    for _ in range(n):
        async with throttle.mutating():
            pass
        if succeed:
            throttle.succeeded()


async def test_processes_sharing_a_store_share_one_rate(
    autojump_clock: trio.testing.MockClock, store: Flaky
) -> None:
    """Three processes, each allowed 10 calls/s with a burst of 5, make 90 calls in all: one
    budget takes (90 - 5) / 10 s; three budgets of their own would take 2.5 s."""
    processes = [process(store, rate=10, burst=5) for _ in range(3)]
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for throttle in processes:
            for _ in range(10):
                nursery.start_soon(calls, throttle, 3)
    elapsed = trio.current_time() - start
    assert 8.5 <= elapsed <= 9.5
    asks = sum(throttle.statistics().asks for throttle in processes)
    assert asks == store.budget_calls
    assert asks < 90  # batches: fewer store writes than calls
    assert all(throttle.statistics().shared for throttle in processes)


async def test_nine_saturated_processes_cost_a_fraction_of_a_store_write_per_call(
    autojump_clock: trio.testing.MockClock, store: Flaky
) -> None:
    """The defaults (50 calls/s, bursts of 100, 8 workers) in nine processes at once: the
    rate is one budget's, and waiting longer when others drew first keeps the asks few."""
    processes = [process(store, rate=50, burst=100) for _ in range(9)]
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for throttle in processes:
            for _ in range(8):
                nursery.start_soon(calls, throttle, 20)
    elapsed = trio.current_time() - start
    assert (1440 - 100) / 50 - 1e-6 <= elapsed <= (1440 - 100) / 50 + 1.5
    assert store.budget_calls <= 0.3 * 1440


async def test_a_429_in_one_process_slows_every_process(
    autojump_clock: trio.testing.MockClock, store: Flaky
) -> None:
    first, second = (process(store, rate=10, burst=10, decrease=0.5) for _ in range(2))
    await calls(second, 1)
    await first.throttled()
    start = trio.current_time()
    await calls(second, 1)  # the shared bucket is empty and refills at 5/s
    assert trio.current_time() - start == pytest.approx(0.2)
    assert second.rate == pytest.approx(5)


async def test_every_process_regains_the_rate_up_to_the_smallest_ceiling(
    autojump_clock: trio.testing.MockClock, store: Flaky
) -> None:
    fast = process(store, rate=10, burst=1, decrease=0.5, increase=10)
    slow = process(store, rate=6, burst=1, decrease=0.5, increase=10)
    await calls(slow, 1)  # the shared ceiling is now 6
    await fast.throttled()
    assert fast.rate == pytest.approx(3)
    with trio.move_on_after(3):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(calls, fast, 1000, succeed=True))
            nursery.start_soon(functools.partial(calls, slow, 1000, succeed=True))
    await calls(fast, 1)
    assert fast.rate == pytest.approx(6)  # regained, and no higher than the smallest ceiling
    assert slow.rate == pytest.approx(6)


async def test_a_process_notices_when_a_lower_ceiling_is_gone(
    autojump_clock: trio.testing.MockClock, store: Flaky
) -> None:
    """A process that stopped (rate 0.01) leaves its ceiling for CEILING_HOLD; the process
    still running (rate 10) does not sleep 100 s on the 0.01 it heard but looks again."""
    await calls(process(store, rate=0.01, burst=1), 1)
    running = process(store, rate=10, burst=1)
    start = trio.current_time()
    await calls(running, 1)
    assert CEILING_HOLD <= trio.current_time() - start <= CEILING_HOLD + 1
    assert running.rate == 10


async def test_a_failing_store_falls_back_to_a_local_bucket_and_recovers(
    autojump_clock: trio.testing.MockClock, store: Flaky, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nexusd.pipeline.budgets")
    throttle = process(store, rate=10, burst=1)
    store.failing = "error"
    start = trio.current_time()
    await calls(throttle, 11)  # this process's own bucket: 10/s after its burst
    assert trio.current_time() - start == pytest.approx(1.0)
    assert not throttle.statistics().shared
    assert store.budget_calls == 1  # tried once, then left alone for RETRY_AFTER
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "keeps to its own submission.rate" in warnings[0].getMessage()

    store.failing = ""
    await trio.sleep(RETRY_AFTER)
    await calls(throttle, 1)
    assert throttle.statistics().shared
    assert store.budget_calls == 2
    assert "answers again" in caplog.records[-1].getMessage()


async def test_a_store_that_does_not_answer_costs_one_timeout(
    autojump_clock: trio.testing.MockClock, store: Flaky
) -> None:
    throttle = process(store, rate=10, burst=10)
    store.failing = "hang"
    start = trio.current_time()
    await calls(throttle, 5)
    assert trio.current_time() - start == pytest.approx(STORE_TIMEOUT)
    await throttle.throttled()  # cut locally, without waiting for the store again
    assert trio.current_time() - start == pytest.approx(STORE_TIMEOUT)
    assert throttle.rate == pytest.approx(7)
    assert store.budget_calls == 1


async def test_warnings_about_one_outage_are_rate_limited(
    autojump_clock: trio.testing.MockClock, store: Flaky, caplog: pytest.LogCaptureFixture
) -> None:
    throttle = process(store, rate=1, burst=1)
    store.failing = "error"
    await calls(throttle, 100)  # 100 s of failures, retried after 5, 10, 20, 40 s
    assert store.budget_calls == 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # at the start, and a minute later
