"""The per-shard throttle and its local budget on trio's autojump clock (virtual time: exact
durations); nothing faked. A recording wrapper around the local budget counts the throttle's
asks. The budget shared through a store is tested in tests/pipeline/test_budgets.py."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from nexusd.kube.throttling import Grant, LocalBudget, RateLimits, ShardThrottle


async def take(throttle: ShardThrottle, n: int) -> None:
    for _ in range(n):
        async with throttle.mutating():
            pass


class Recording(LocalBudget):
    """The local budget, noting every ask: (time, wanted, granted)."""

    def __init__(self, limits: RateLimits) -> None:
        super().__init__(limits)
        self.asks: list[tuple[float, int, int]] = []

    async def grant(self, *, wanted: int, successes: int) -> Grant:
        answer = await super().grant(wanted=wanted, successes=successes)
        self.asks.append((trio.current_time(), wanted, answer.granted))
        return answer


def recording(**limits: Any) -> tuple[ShardThrottle, list[tuple[float, int, int]]]:
    """A throttle on a `Recording` budget, and the list its asks go to."""
    budgets: list[Recording] = []

    def budget(configured: RateLimits) -> Recording:
        budgets.append(Recording(configured))
        return budgets[-1]

    throttle = ShardThrottle(budget=budget, **limits)
    return throttle, budgets[0].asks


async def test_burst_is_free_then_rate_applies(autojump_clock: trio.testing.MockClock) -> None:
    throttle = ShardThrottle(rate=10, burst=5)
    start = trio.current_time()
    await take(throttle, 5)
    assert trio.current_time() == start
    await take(throttle, 20)
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_one_caller_at_a_time_asks_once_per_call_and_never_in_vain(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The last answer says when the next token is due: no ask comes back empty."""
    throttle, asks = recording(rate=10, burst=2)
    await take(throttle, 12)
    assert len(asks) == 12
    assert all(granted == 1 for _, _, granted in asks)
    assert throttle.statistics().asks == 12


async def test_waiting_callers_are_served_by_one_ask_per_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """12 callers at once, a burst of 4: three asks, each for everyone still waiting, each
    made when the bucket should hold a burst again."""
    throttle, asks = recording(rate=10, burst=4)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(take, throttle, 1)
    timeline = [(round(at - start, 6), wanted, granted) for at, wanted, granted in asks]
    assert timeline == [(0.0, 12, 4), (0.4, 8, 4), (0.8, 4, 4)]


async def test_after_a_429_waiting_callers_leave_a_few_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Below its ceiling the shard refused a burst: 12 waiting callers are not saved up into
    one batch of 12 but sent a window's worth (50/s x 0.05 s = 2) at a time, evenly."""
    throttle, asks = recording(rate=100, burst=50, decrease=0.5)
    await throttle.throttled()  # 50/s, the bucket empty
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(take, throttle, 1)
    timeline = [(round(at - start, 6), wanted, granted) for at, wanted, granted in asks]
    assert timeline == [(round(0.04 * n, 6), 2, 2) for n in range(1, 7)]


async def test_concurrent_callers_share_the_rate(autojump_clock: trio.testing.MockClock) -> None:
    throttle = ShardThrottle(rate=50, burst=1)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(101):
            nursery.start_soon(take, throttle, 1)
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_in_flight_calls_are_capped(autojump_clock: trio.testing.MockClock) -> None:
    throttle = ShardThrottle(rate=1000, burst=1000, max_in_flight=3)
    peak = 0

    async def slow_call() -> None:
        nonlocal peak
        async with throttle.mutating():
            peak = max(peak, throttle.statistics().in_flight)
            await trio.sleep(1)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(9):
            nursery.start_soon(slow_call)
    assert peak == 3
    assert trio.current_time() - start == pytest.approx(3.0)


async def test_a_429_cuts_the_rate_and_successes_bring_it_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    throttle = ShardThrottle(rate=100, burst=1, decrease=0.5, increase=10)
    await throttle.throttled()
    await throttle.throttled()
    assert throttle.rate == pytest.approx(25)
    # additive increase: +10 calls/s per second of successes, folded in at each ask
    start = trio.current_time()
    while throttle.rate < 35:
        await take(throttle, 1)
        throttle.succeeded()
    assert trio.current_time() - start == pytest.approx(1.0, rel=0.1)
    for _ in range(10_000):
        throttle.succeeded()
    await take(throttle, 1)
    assert throttle.rate == 100  # never above the configured ceiling
    assert throttle.statistics().throttled == 2


async def test_a_429_empties_the_bucket_and_forgets_earlier_successes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    throttle = ShardThrottle(rate=10, burst=10, decrease=0.5, increase=10)
    await throttle.throttled()  # 5/s, and nothing left of the burst
    for _ in range(100):
        throttle.succeeded()
    await throttle.throttled()  # 2.5/s: the 100 successes before it count for nothing
    start = trio.current_time()
    await take(throttle, 1)
    assert trio.current_time() - start == pytest.approx(1 / 2.5)
    assert throttle.rate == pytest.approx(2.5)


async def test_the_rate_never_drops_below_the_floor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    throttle = ShardThrottle(rate=4, burst=1, floor=1)
    for _ in range(10):
        await throttle.throttled()
    assert throttle.rate == 1
    assert not throttle.statistics().shared


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="rate"):
        ShardThrottle(rate=0, burst=1)
    with pytest.raises(ValueError, match="max_in_flight"):
        ShardThrottle(rate=1, burst=1, max_in_flight=0)
    with pytest.raises(ValueError, match="decrease"):
        RateLimits(rate=1, burst=1, decrease=1)
    with pytest.raises(ValueError, match="floor"):
        RateLimits(rate=1, burst=1, floor=0)
