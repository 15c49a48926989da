"""The maintainer's run queue (pipeline/waking.py) on its own: real trio, time moved by
`autojump_clock`, keys are plain tuples. Nothing is faked."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from nexusd.pipeline.waking import RunQueue

A = ("algo", "run-a")
B = ("algo", "run-b")
C = ("algo", "run-c")


async def test_a_queued_key_is_queued_once() -> None:
    queue = RunQueue(capacity=10)
    for key in (A, B, A, A, B):
        assert queue.add(key)
    assert len(queue) == 2
    assert await queue.get() == A
    assert await queue.get() == B
    assert queue.statistics().processing == 2


async def test_a_key_changed_while_processed_is_processed_once_more_after() -> None:
    queue = RunQueue(capacity=10)
    queue.add(A)
    key = await queue.get()
    queue.add(A)
    queue.add(A)
    assert len(queue) == 0  # never handed to a second worker meanwhile
    queue.done(key)
    assert len(queue) == 1
    assert await queue.get() == A
    queue.done(A)
    assert len(queue) == 0


async def test_when_full_new_keys_are_dropped_and_counted() -> None:
    queue = RunQueue(capacity=2)
    assert queue.add(A)
    assert queue.add(B)
    assert not queue.add(C)
    assert queue.add(A)  # already queued: not a drop
    assert queue.statistics().dropped == 1


async def test_the_sweep_claims_a_queued_key_and_skips_one_in_work() -> None:
    queue = RunQueue(capacity=10)
    queue.add(A)
    queue.add(B)
    assert queue.claim(A)  # taken out of the queue: no worker repeats it
    queue.done(A)
    key = await queue.get()
    assert key == B
    assert not queue.claim(B)  # a worker has it: the sweep skips, the worker runs it again
    queue.done(B)
    assert await queue.get() == B


async def test_workers_wait_for_keys(nursery: trio.Nursery) -> None:
    queue = RunQueue(capacity=10)
    got: list[tuple[str, str]] = []

    async def worker() -> None:
        while True:
            key = await queue.get()
            got.append(key)
            queue.done(key)

    nursery.start_soon(worker)
    nursery.start_soon(worker)
    await trio.testing.wait_all_tasks_blocked()
    queue.add(A)
    queue.add(B)
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(got) == [A, B]


async def test_later_wakes_at_the_earliest_requested_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    queue = RunQueue(capacity=10)
    await nursery.start(queue.run_timers)
    start = trio.current_time()
    queue.later(A, 30.0)
    queue.later(A, 10.0)  # earlier wins
    queue.later(A, 50.0)  # later ignored
    queue.later(B, 20.0)
    assert await queue.get() == A
    assert trio.current_time() - start == pytest.approx(10.0)
    assert await queue.get() == B
    assert trio.current_time() - start == pytest.approx(20.0)
    assert queue.statistics().waiting == 0


async def test_wake_due_queues_only_runs_whose_grace_is_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = RunQueue(capacity=10)
    queue.later(A, 5.0)
    queue.later(B, 500.0)
    assert queue.wake_due() == 0
    await trio.sleep(6.0)
    assert queue.wake_due() == 1
    assert len(queue) == 1
    assert await queue.get() == A


async def test_a_burst_of_changes_within_the_wake_delay_is_one_reconcile(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """How the maintainer wakes a run (`maintainer.wake_delay`): every change asks for the
    run in `delay`; the first request of a burst stands for the whole burst."""
    queue = RunQueue(capacity=10)
    await nursery.start(queue.run_timers)
    start = trio.current_time()
    for _ in range(10):  # a pod starting: ten watch events in 0.9 s
        queue.later(A, 1.0)
        await trio.sleep(0.09)
    assert await queue.get() == A
    assert trio.current_time() - start == pytest.approx(1.0)
    queue.done(A)
    assert len(queue) == 0
    assert queue.statistics().waiting == 0
    queue.later(A, 1.0)  # a change after the reconcile: another one
    assert await queue.get() == A
