"""Warm pools sized from the store (`pipeline/pool_demand.py`), against every store.

Real stores (see conftest `store`: memory, SQLite on a file, a throwaway PostgreSQL); only the
wall clock is fixed (`ManualClock`). Two `StoreDemand`s on one store are two schedulers: they
must report the same demand, which is what keeps their scalers from fighting.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from nexusd.kube.warmpool import WarmPool
from nexusd.pipeline.pool_demand import StoreDemand
from nexusd.pipeline.scaling import PoolDemand

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.core.clock import ManualClock
    from nexusd.core.records import Checkpoint
    from nexusd.stores.checkpoints import CheckpointStore

    MakeRun = Callable[..., Checkpoint]

POOLS = {
    "demo-algorithm": WarmPool(max_workers=2, concurrency=3),
    "other": WarmPool(max_workers=1, concurrency=1),
}


async def test_two_schedulers_read_the_same_demand(
    store: CheckpointStore, make_run: MakeRun, clock: ManualClock
) -> None:
    runs = [make_run(warm=True) for _ in range(5)]
    for run in [*runs, make_run(), make_run(algorithm="other", warm=True)]:
        await store.create(checkpoint=run, submission=None)
    await store.lease(
        runs=[(run.algorithm, run.id) for run in runs[:2]],
        holder="pool-pod-1",
        expires=clock.now() + dt.timedelta(seconds=30),
    )
    clock.advance(12)
    first = StoreDemand(store=store, clock=clock, pools=lambda: POOLS)
    second = StoreDemand(store=store, clock=clock, pools=lambda: POOLS)
    await first.refresh()
    await second.refresh()
    for demand in (first, second):
        assert demand("demo-algorithm") == PoolDemand(queued=3, oldest_age=12.0, leased=2)
        assert demand("other") == PoolDemand(queued=1, oldest_age=12.0, leased=0)
        assert demand("unknown") == PoolDemand(queued=0, oldest_age=0.0, leased=0)


async def test_waiting_runs_are_counted_up_to_what_fills_the_pool(
    store: CheckpointStore, make_run: MakeRun, clock: ManualClock
) -> None:
    for _ in range(10):
        await store.create(checkpoint=make_run(algorithm="other", warm=True), submission=None)
    clock.advance(1)
    demand = StoreDemand(store=store, clock=clock, pools=lambda: POOLS)
    await demand.refresh()
    # maxWorkers x concurrency + 1: enough to want the largest pool, however many wait
    assert demand("other").queued == 2
