"""Request-rate normalisation: what each shard's API server accepts, and no more.

Every mutating call to a shard (Job create, Job delete) goes through that shard's
`ShardThrottle`:

- a token bucket spreads calls out to `rate` per second, with bursts of up to `burst`;
- a `trio.CapacityLimiter` caps the calls in flight, so a slow API server is not also flooded
  with parallel requests;
- the rate adapts like TCP's congestion window (AIMD): a 429 cuts it multiplicatively
  (`decrease`), successes raise it additively (`increase` calls/s per second) back towards
  the configured ceiling. Under an API server that accepts 50 writes/s the rate saws between
  35 and 50 instead of bouncing off the limit with a storm of retries.

The 429's Retry-After is honoured by the caller for the call that got it (it retries no sooner);
the shard as a whole only slows down through the rate cut. Time is `trio.current_time()`, so
tests run this on the autojump clock.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

_EPSILON = 1e-6


@attrs.frozen
class ThrottleStatistics:
    rate: float
    ceiling: float
    burst: int
    tokens: float
    waiting: int
    in_flight: int
    throttled: int
    succeeded: int


class ShardThrottle:
    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        max_in_flight: int = 16,
        decrease: float = 0.7,
        increase: float = 5.0,
        floor: float = 0.5,
    ) -> None:
        """`rate` is the ceiling the adaptive rate never exceeds; `increase` is how many calls
        per second the rate regains per second of successes; `floor` is the lowest rate."""
        if rate <= 0 or burst < 1 or max_in_flight < 1:
            raise ValueError("rate must be > 0, burst and max_in_flight >= 1")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        self.ceiling = rate
        self.rate = rate
        self.burst = burst
        self.decrease = decrease
        self.increase = increase
        self.floor = min(floor, rate)
        self._tokens = float(burst)
        self._stamp = trio.current_time()
        self._lock = trio.Lock()  # FIFO: waiters get tokens in arrival order
        self._waiting = 0
        self._in_flight = trio.CapacityLimiter(max_in_flight)
        self._throttled = 0
        self._succeeded = 0

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._stamp = max(now, self._stamp)

    async def _take_token(self) -> None:
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    self._refill(trio.current_time())
                    # Tolerance: float refill can land a hair under 1.0, and a sleep of a
                    # few ulps would not move the clock forward.
                    if self._tokens >= 1.0 - _EPSILON:
                        self._tokens = max(0.0, self._tokens - 1.0)
                        return
                    await trio.sleep((1.0 - self._tokens) / self.rate)
        finally:
            self._waiting -= 1

    @contextlib.asynccontextmanager
    async def mutating(self) -> AsyncIterator[None]:
        """Hold a token and an in-flight slot for one mutating call."""
        await self._take_token()
        async with self._in_flight:
            yield

    def throttled(self) -> None:
        """The server answered 429: slow the whole shard down multiplicatively."""
        self._throttled += 1
        self._refill(trio.current_time())
        self.rate = max(self.floor, self.rate * self.decrease)
        # Start again from an empty bucket: the calls already queued must not burst.
        self._tokens = 0.0

    def succeeded(self) -> None:
        """A call went through: regain rate additively, never above the ceiling."""
        self._succeeded += 1
        if self.rate < self.ceiling:
            self._refill(trio.current_time())
            self.rate = min(self.ceiling, self.rate + self.increase / self.rate)

    def statistics(self) -> ThrottleStatistics:
        return ThrottleStatistics(
            rate=self.rate,
            ceiling=self.ceiling,
            burst=self.burst,
            tokens=self._tokens,
            waiting=self._waiting,
            in_flight=int(self._in_flight.borrowed_tokens),
            throttled=self._throttled,
            succeeded=self._succeeded,
        )
