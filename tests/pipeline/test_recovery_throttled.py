"""Recovery that does not fight a live scheduler which is merely throttled, paged scans, bounded
lanes and heartbeat collection. The in-memory checkpoint store (held to the same contract as
SQLite and PostgreSQL by tests/stores) with a manual wall clock; queues are real."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.testing

from nexusd.core.clock import ManualClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, NewRun, SubmissionEntry
from nexusd.pipeline.heartbeats import run_heartbeat
from nexusd.pipeline.intake import RunRef
from nexusd.pipeline.queueing import VirtualQueue
from nexusd.pipeline.recovery import LostRunRecovery, requeue_buffered
from nexusd.stores.checkpoints import DEFAULT_PAGE, QueueReport
from nexusd.stores.memory import MemoryCheckpointStore

SCHEDULER_TIMEOUT = 60.0
BUFFERED_TIMEOUT = 300.0
#: a scheduler behind a 429-throttled shard: a long backlog whose oldest run waited past
#: buffered_timeout, but whose workers take a run every fraction of a second
THROTTLED = QueueReport(queued=5000, oldest_queued_age=420.0, last_taken_age=0.4)


def _run(request_id: str, host: str, stage: Stage, at: dt.datetime) -> NewRun:
    checkpoint = Checkpoint(
        algorithm="a",
        id=request_id,
        lifecycle_stage=stage,
        received_at=at,
        last_modified=at,
        received_by_host=host,
        cluster="dev",
    )
    entry = SubmissionEntry(algorithm="a", id=request_id, cluster="dev", template={})
    return NewRun(checkpoint=checkpoint, submission=entry)


class World:
    def __init__(self, *, lane: int = 10_000) -> None:
        self.clock = ManualClock()
        self.store = MemoryCheckpointStore(clock=self.clock)
        self.queue: VirtualQueue[RunRef] = VirtualQueue(10, priority_capacity=lane)
        self.recovery = LostRunRecovery(
            store=self.store,
            clock=self.clock,
            host="maintainer-0",
            queues={"dev": self.queue},
            scheduler_timeout=SCHEDULER_TIMEOUT,
            buffered_timeout=BUFFERED_TIMEOUT,
        )

    async def buffered(self, host: str, count: int = 1, stage: Stage = Stage.BUFFERED) -> None:
        now = self.clock.now()
        await self.store.create_many(
            runs=[_run(f"{host}-{n:05d}", host, stage, now) for n in range(count)]
        )

    async def holder(self, request_id: str) -> str:
        run = await self.store.get(algorithm="a", request_id=request_id)
        assert run is not None
        return run.received_by_host


async def test_a_throttled_live_scheduler_keeps_its_old_buffered_runs() -> None:
    world = World()
    await world.buffered("throttled")
    world.clock.advance(BUFFERED_TIMEOUT + 120)  # the run is well past buffered_timeout
    await world.store.record_heartbeat(host="throttled", at=world.clock.now(), queues=THROTTLED)
    world.clock.advance(5)  # a beat a few seconds old is fresh

    for _ in range(3):  # sweep after sweep: no fight
        report = await world.recovery.sweep()
        assert (report.resubmitted, report.spared, report.dead_hosts) == (0, 1, ())
    assert await world.holder("throttled-00000") == "throttled"
    assert len(world.queue) == 0


async def test_a_young_queue_is_progressing_even_if_its_workers_are_busy() -> None:
    world = World()
    await world.buffered("busy")
    world.clock.advance(BUFFERED_TIMEOUT + 1)
    # The run was taken and requeued (a retry) a minute ago: the queue's head is young.
    young = QueueReport(queued=3, oldest_queued_age=60.0, last_taken_age=None)
    await world.store.record_heartbeat(host="busy", at=world.clock.now(), queues=young)

    assert (await world.recovery.sweep()).spared == 1
    assert await world.holder("busy-00000") == "busy"


async def test_the_same_scheduler_dead_is_claimed_from() -> None:
    world = World()
    await world.buffered("stopped")
    world.clock.advance(BUFFERED_TIMEOUT + 120)
    await world.store.record_heartbeat(host="stopped", at=world.clock.now(), queues=THROTTLED)
    world.clock.advance(SCHEDULER_TIMEOUT + 1)  # its heartbeat stopped: whatever it said

    report = await world.recovery.sweep()

    assert report.dead_hosts == ("stopped",)
    assert (report.resubmitted, report.spared) == (1, 0)
    assert await world.holder("stopped-00000") == "maintainer-0"
    assert (await world.queue.get()).request_id == "stopped-00000"


@pytest.mark.parametrize(
    "queues",
    [
        # nothing queued: the run is not in its queue (a lost entry)
        QueueReport(queued=0, oldest_queued_age=0.0, last_taken_age=1.0),
        # a backlog that stopped moving: nothing taken for longer than scheduler_timeout
        QueueReport(queued=40, oldest_queued_age=900.0, last_taken_age=SCHEDULER_TIMEOUT + 1),
        QueueReport(queued=40, oldest_queued_age=900.0, last_taken_age=None),
        # a process that reports no queues: judged by the run's age, as before
        None,
    ],
    ids=["empty", "stuck", "never-taken", "no-report"],
)
async def test_a_live_scheduler_that_is_not_progressing_is_claimed_from(
    queues: QueueReport | None,
) -> None:
    world = World()
    await world.buffered("alive")
    world.clock.advance(BUFFERED_TIMEOUT + 1)
    await world.store.record_heartbeat(host="alive", at=world.clock.now(), queues=queues)

    report = await world.recovery.sweep()

    assert (report.resubmitted, report.spared, report.dead_hosts) == (1, 0, ())
    assert await world.holder("alive-00000") == "maintainer-0"


async def test_a_reported_age_counts_from_the_beat_not_from_the_sweep() -> None:
    """A beat 50 s old saying "oldest 280 s" means the oldest has waited 330 s by now; and
    "last taken 20 s ago" means 70 s ago, past scheduler_timeout."""
    world = World()
    await world.buffered("slow")
    world.clock.advance(BUFFERED_TIMEOUT + 1)
    report = QueueReport(queued=2, oldest_queued_age=280.0, last_taken_age=20.0)
    await world.store.record_heartbeat(host="slow", at=world.clock.now(), queues=report)
    world.clock.advance(50)

    assert (await world.recovery.sweep()).resubmitted == 1


async def test_heartbeats_older_than_buffered_timeout_are_forgotten() -> None:
    world = World()
    await world.buffered("ancient")
    await world.store.record_heartbeat(host="ancient", at=world.clock.now())
    world.clock.advance(BUFFERED_TIMEOUT + 10)
    await world.store.record_heartbeat(host="recent", at=world.clock.now())
    await world.store.record_heartbeat(host="maintainer-0", at=world.clock.now())

    report = await world.recovery.sweep()

    # The stale scan found the long-dead host's run without its heartbeat row.
    assert report.resubmitted == 1
    assert sorted(await world.store.heartbeats()) == ["maintainer-0", "recent"]


async def test_repeated_sweeps_queue_an_own_run_once() -> None:
    """`nexusd dev` (scheduler and maintainer under one name) during a shard outage: every
    sweep finds the same old BUFFERED runs; the lane holds each once."""
    world = World()
    await world.buffered("maintainer-0", count=3)
    world.clock.advance(BUFFERED_TIMEOUT + 1)

    first = await world.recovery.sweep()
    again = await world.recovery.sweep()

    assert (first.resubmitted, again.resubmitted) == (3, 0)
    assert len(world.queue) == 3


async def test_a_dead_hosts_backlog_is_claimed_page_by_page() -> None:
    world = World()
    count = 2 * DEFAULT_PAGE + 500
    await world.buffered("dead", count=count)
    await world.buffered("dead-new", count=DEFAULT_PAGE + 1, stage=Stage.NEW)
    await world.store.record_heartbeat(host="dead", at=world.clock.now())
    world.clock.advance(SCHEDULER_TIMEOUT + 1)

    report = await world.recovery.sweep()

    assert report.resubmitted == count
    assert len(world.queue) == count
    assert await world.store.by_host_and_stage(host="dead", stage=Stage.BUFFERED) == []


async def test_claims_stop_while_the_maintainers_lane_is_full() -> None:
    world = World(lane=5)
    await world.buffered("dead", count=8)
    await world.store.record_heartbeat(host="dead", at=world.clock.now())
    world.clock.advance(SCHEDULER_TIMEOUT + 1)

    assert (await world.recovery.sweep()).resubmitted == 5
    # the other three stay with the dead host, for the next sweep or another maintainer
    left = await world.store.by_host_and_stage(host="dead", stage=Stage.BUFFERED)
    assert len(left) == 3
    for _ in range(5):
        await world.queue.get()
    assert (await world.recovery.sweep()).resubmitted == 3


async def test_requeue_at_start_fills_the_bounded_lane_and_stops() -> None:
    world = World(lane=DEFAULT_PAGE + 10)
    await world.buffered("scheduler-0", count=3 * DEFAULT_PAGE)

    requeued = await requeue_buffered(
        store=world.store, host="scheduler-0", queues={"dev": world.queue}
    )

    assert requeued == DEFAULT_PAGE + 10
    assert len(world.queue) == DEFAULT_PAGE + 10
    # the rest stay BUFFERED under the scheduler's own name: nothing was lost
    left = await world.store.stale(
        stages={Stage.BUFFERED}, modified_before=world.clock.now() + dt.timedelta(1), limit=5000
    )
    assert len(left) == 3 * DEFAULT_PAGE


async def test_the_heartbeat_carries_the_queue_statistics(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = ManualClock()
    store = MemoryCheckpointStore(clock=clock)
    first: VirtualQueue[RunRef] = VirtualQueue(10)
    second: VirtualQueue[RunRef] = VirtualQueue(10)
    first.put_priority(RunRef(algorithm="a", request_id="r1"))
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_heartbeat(
                store=store,
                host="scheduler-0",
                clock=clock,
                interval=5,
                queues={"one": first, "two": second},
                task_status=task_status,
            )
        )
        await trio.sleep(3)
        second.reserve_nowait().put(RunRef(algorithm="a", request_id="r2"))
        second.reserve_nowait().put(RunRef(algorithm="a", request_id="r3"))
        await second.get()
        await trio.sleep(3)  # past the second beat
        nursery.cancel_scope.cancel()

    beat = (await store.heartbeat_reports())["scheduler-0"]
    assert beat.queues is not None
    assert beat.queues.queued == 2
    assert beat.queues.oldest_queued_age == pytest.approx(5)
    assert beat.queues.last_taken_age == pytest.approx(2)
