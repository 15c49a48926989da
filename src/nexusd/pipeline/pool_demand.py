"""Pool demand as the checkpoint store says it: the same figures for every scheduler.

Several schedulers (an HPA-scaled Deployment) serve one shard, and each runs a pool scaler
(`pipeline/scaling.py`). Sized from its own queue, each would write its own replica count and
the last write would win, flapping the pool. Sized from the store they share, they all reach
the same count and agree (a scaler writes only when the count differs).

Per refresh (every `warm.scale_interval`):
- one `expired_leases(before=<far future>)` read: every lease held now, which is bounded by
  the pools' `maxWorkers x concurrency` together, counted per algorithm;
- per warm template, one `waiting` page of at most `maxWorkers x concurrency + 1` runs (more
  cannot change the size): how many wait and since when.
Reads through partial indexes that hold only leased and only waiting warm runs, so the cost
grows with what the pools hold, not with the number of runs stored.

A store error keeps the last figures (logged); the scaler carries on with them.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
from typing import TYPE_CHECKING, NoReturn

import attrs
import trio

from nexusd.core.errors import StoreError
from nexusd.pipeline.scaling import PoolDemand

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nexusd.core.clock import Clock
    from nexusd.kube.warmpool import WarmPool
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)

NO_DEMAND = PoolDemand(queued=0, oldest_age=0.0, leased=0)
#: "every lease held now": later than any lease expiry
_FOREVER = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
#: leases read at most per refresh (far above any pool's maxWorkers x concurrency)
MOST_LEASES = 100_000


@attrs.define
class StoreDemand:
    """`demand(algorithm)` for the scaler, refreshed from the store by `refresh`."""

    store: CheckpointStore
    clock: Clock
    #: algorithm -> its warm pool, of every warm template this scheduler scales
    pools: Callable[[], Mapping[str, WarmPool]]
    _demands: dict[str, PoolDemand] = attrs.Factory(dict)

    def __call__(self, algorithm: str) -> PoolDemand:
        return self._demands.get(algorithm, NO_DEMAND)

    async def refresh(self) -> None:
        pools = self.pools()
        now = self.clock.now()
        leased = collections.Counter(
            lease.algorithm
            for lease in await self.store.expired_leases(before=_FOREVER, limit=MOST_LEASES)
        )
        demands = {}
        for algorithm, pool in pools.items():
            waiting = await self.store.waiting(
                algorithm=algorithm,
                modified_before=now,
                limit=pool.max_workers * pool.concurrency + 1,
            )
            oldest = (now - waiting[0].last_modified).total_seconds() if waiting else 0.0
            demands[algorithm] = PoolDemand(
                queued=len(waiting), oldest_age=max(0.0, oldest), leased=leased[algorithm]
            )
        self._demands = demands


async def run_demand_refresh(
    *,
    demand: StoreDemand,
    interval: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Refresh `demand` now and then every `interval` seconds."""
    while True:
        try:
            await demand.refresh()
        except StoreError as exc:
            logger.warning("could not read the warm pools' demand: %s; keeping the last", exc)
        task_status.started()
        task_status = trio.TASK_STATUS_IGNORED
        await trio.sleep(interval)
