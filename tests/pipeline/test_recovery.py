"""Lost-run recovery against the in-memory checkpoint store (a full implementation of the
store protocol, checked by the contract tests) with a manual clock; nothing else is involved."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from nexusd.core.clock import ManualClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, SubmissionEntry
from nexusd.pipeline.queueing import VirtualQueue
from nexusd.pipeline.recovery import SUBMISSION_LOST, LostRunRecovery
from nexusd.stores.memory import MemoryCheckpointStore

if TYPE_CHECKING:
    from nexusd.pipeline.intake import RunRef


async def add(
    store: MemoryCheckpointStore, clock: ManualClock, request_id: str, host: str, stage: Stage
) -> None:
    now = clock.now()
    await store.create(
        checkpoint=Checkpoint(
            algorithm="a",
            id=request_id,
            lifecycle_stage=stage,
            received_at=now,
            last_modified=now,
            received_by_host=host,
            cluster="dev",
        ),
        submission=SubmissionEntry(algorithm="a", id=request_id, cluster="dev", template={}),
    )


async def test_dead_schedulers_runs_are_claimed_once_and_lost_ones_failed() -> None:
    clock = ManualClock()
    store = MemoryCheckpointStore(clock=clock)
    queue: VirtualQueue[RunRef] = VirtualQueue(10)

    def recovery(host: str) -> LostRunRecovery:
        return LostRunRecovery(
            store=store,
            clock=clock,
            host=host,
            queues={"dev": queue},
            scheduler_timeout=60,
            buffered_timeout=300,
        )

    # long dead: found by the stale scan, not by its (forgotten) heartbeat
    await store.record_heartbeat(host="ancient", at=clock.now())
    await add(store, clock, "old", "ancient", Stage.BUFFERED)
    await add(store, clock, "never-buffered", "ancient", Stage.NEW)
    clock.advance(1000)
    # recently dead: found through its heartbeat
    await store.record_heartbeat(host="recent", at=clock.now())
    await add(store, clock, "fresh", "recent", Stage.BUFFERED)
    # alive: left alone
    await add(store, clock, "busy", "alive", Stage.BUFFERED)
    clock.advance(90)
    await store.record_heartbeat(host="alive", at=clock.now())

    report = await recovery("maintainer-0").sweep()
    assert report.dead_hosts == ("recent",)  # "ancient" is past buffered_timeout: the scan
    assert (report.resubmitted, report.lost) == (2, 1)
    queued = {(await queue.get()).request_id for _ in range(2)}
    assert queued == {"old", "fresh"}
    for request_id in ("old", "fresh"):
        run = await store.get(algorithm="a", request_id=request_id)
        assert run is not None
        assert run.received_by_host == "maintainer-0"
    lost = await store.get(algorithm="a", request_id="never-buffered")
    assert lost is not None
    assert (lost.lifecycle_stage, lost.algorithm_failure_cause) == (
        Stage.SCHEDULING_FAILED,
        SUBMISSION_LOST,
    )
    busy = await store.get(algorithm="a", request_id="busy")
    assert busy is not None
    assert busy.received_by_host == "alive"
    # a second maintainer sweeping the same state finds nothing left to claim
    second = await recovery("maintainer-1").sweep()
    assert (second.resubmitted, second.lost) == (0, 0)
    with trio.move_on_after(0.01):
        await queue.get()
        raise AssertionError("nothing more should be queued")
