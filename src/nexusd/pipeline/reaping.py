"""Reaping: warm runs whose worker is gone go back to a queue, once per lost lease.

Two loops of every scheduler with warm pools:

- `run_lease_reaper`: every `warm.reap_interval`, the leases that expired (their worker was
  killed, or lost the scheduler for longer than a lease) are requeued as their next attempt by
  the store's compare-and-set on (attempt, expiry), so of several schedulers reaping at once
  exactly one gives each run back, and a worker that renewed meanwhile keeps it. A run that
  has lost `warm.max_attempts` leases FAILS instead: a run that kills its worker every time
  must not cycle through the pool for ever.
- `run_orphan_scan`: runs BUFFERED in the store but in no live scheduler's memory (requeued by
  another scheduler's reaper or the maintainer, a dead scheduler's backlog) are found with
  `store.waiting` and queued here. Only a pool with an empty queue scans: while this pool has
  runs of its own its workers are busy anyway, and the scan would find its own queued runs.

Store errors are logged and the loop tries again at its next period: nothing here is lost by
waiting, the runs stay in the store as they are.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, NoReturn

import trio

from nexusd.core import metrics
from nexusd.core.errors import StoreError
from nexusd.core.lifecycle import Stage
from nexusd.core.records import LeaseKey
from nexusd.pipeline.intake import RunRef
from nexusd.stores.checkpoints import DEFAULT_PAGE

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nexusd.core.clock import Clock
    from nexusd.core.records import HeldLease
    from nexusd.pipeline.leasing import WarmPools
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)

LOST_CAUSE = "Algorithm run was interrupted: its warm-pool worker was lost too many times."


async def run_lease_reaper(
    *,
    pools: WarmPools,
    store: CheckpointStore,
    clock: Clock,
    interval: float,
    max_attempts: int,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    with metrics.watching_pools(pools.demands):  # the pools' gauges, while they are served
        task_status.started()
        while True:
            await trio.sleep(interval)
            try:
                await reap_expired(
                    pools=pools, store=store, now=clock.now(), max_attempts=max_attempts
                )
            except StoreError as exc:
                logger.warning("could not reap expired leases: %s; trying again", exc)


async def reap_expired(
    *, pools: WarmPools, store: CheckpointStore, now: dt.datetime, max_attempts: int
) -> int:
    """Requeue (or fail) every lease expired before `now`; return how many runs moved."""
    moved = 0
    while True:
        expired = await store.expired_leases(before=now, limit=DEFAULT_PAGE)
        for lease in expired:
            moved += await _reap(pools, store, lease, now=now, max_attempts=max_attempts)
        if len(expired) < DEFAULT_PAGE:
            return moved


async def _reap(
    pools: WarmPools,
    store: CheckpointStore,
    lease: HeldLease,
    *,
    now: dt.datetime,
    max_attempts: int,
) -> int:
    key = LeaseKey(lease.algorithm, lease.request_id, lease.attempt)
    if not await store.requeue(lease=key, expired_before=now):
        return 0  # renewed, ended or reaped by another scheduler meanwhile
    extra = {"request_id": lease.request_id, "algorithm": lease.algorithm}
    if lease.attempt < max_attempts:
        logger.info(
            "lease of %s (attempt %d) expired; queued again",
            lease.holder,
            lease.attempt,
            extra=extra,
        )
        pools.requeued(key)
        return 1
    details = (
        f"Its worker {lease.holder} stopped renewing the lease of attempt {lease.attempt}; "
        f"{max_attempts} leases of this run were lost (warm.max_attempts)."
    )
    outcome = await store.transition(
        algorithm=lease.algorithm,
        request_id=lease.request_id,
        to=Stage.FAILED,
        expected={Stage.BUFFERED},
        changes={"algorithm_failure_cause": LOST_CAUSE, "algorithm_failure_details": details},
        attempt=lease.attempt + 1,
    )
    metrics.transitioned(outcome, source=Stage.BUFFERED, to=Stage.FAILED)
    logger.warning("run lost %d leases; failed", max_attempts, extra=extra)
    return 1


async def run_orphan_scan(
    *,
    pools: WarmPools,
    store: CheckpointStore,
    clock: Clock,
    warm_templates: Callable[[], Mapping[str, str]],
    interval: float,
    orphan_after: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """`warm_templates()`: algorithm -> shard of every warm template this scheduler serves.

    The first scan takes every waiting run (this scheduler just started: its own backlog is
    among them); later ones only runs untouched for `orphan_after` seconds."""
    task_status.started()
    age = 0.0
    while True:
        try:
            await scan_waiting(pools, store, warm_templates(), cutoff=clock.now(), age=age)
        except StoreError as exc:
            logger.warning("could not look for waiting warm runs: %s; trying again", exc)
        age = orphan_after
        await trio.sleep(interval)


async def scan_waiting(
    pools: WarmPools,
    store: CheckpointStore,
    templates: Mapping[str, str],
    *,
    cutoff: dt.datetime,
    age: float,
) -> int:
    queued = 0
    for algorithm, shard in templates.items():
        pool = pools.pool(algorithm, shard)
        if len(pool.queue):
            continue
        room = pool.queue.priority_capacity
        waiting = await store.waiting(
            algorithm=algorithm,
            modified_before=cutoff - dt.timedelta(seconds=age),
            limit=min(room, DEFAULT_PAGE),
        )
        for checkpoint in waiting:
            queued += pool.queue.put_priority(RunRef(algorithm=algorithm, request_id=checkpoint.id))
    if queued:
        logger.info("queued %d waiting warm runs from the store", queued)
    return queued
