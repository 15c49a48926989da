"""A token bucket in front of Kubernetes writes: request-rate normalisation.

Each Job creation takes one token; tokens refill at `rate` per second up to `burst`. A burst of
runs is therefore spread out to what the API server accepts instead of arriving as a storm.
`penalise(retry_after)` lets the submitter push every waiter back when the server answers 429.
Time is `trio.current_time()`, so tests run this on the autojump clock.
"""

from __future__ import annotations

import attrs
import trio

_EPSILON = 1e-6


@attrs.frozen
class ThrottleStatistics:
    rate: float
    burst: int
    tokens: float
    waiting: int


class TokenBucket:
    def __init__(self, *, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = trio.current_time()
        self._not_before = 0.0
        self._lock = trio.Lock()  # FIFO: waiters get tokens in arrival order
        self._waiting = 0

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._stamp = max(now, self._stamp)

    async def acquire(self) -> None:
        """Wait until a token is free and take it."""
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    now = trio.current_time()
                    self._refill(now)
                    if now < self._not_before:
                        await trio.sleep_until(self._not_before)
                        continue
                    # Tolerance: float refill can land a hair under 1.0, and a sleep of a
                    # few ulps would not move the clock forward.
                    if self._tokens >= 1.0 - _EPSILON:
                        self._tokens = max(0.0, self._tokens - 1.0)
                        return
                    await trio.sleep((1.0 - self._tokens) / self.rate)
        finally:
            self._waiting -= 1

    def penalise(self, retry_after: float) -> None:
        """Hold every acquirer back for `retry_after` seconds (the server said so)."""
        self._not_before = max(self._not_before, trio.current_time() + retry_after)
        # Start again from an empty bucket, so the end of the pause is not a burst.
        self._tokens = 0.0
        self._stamp = self._not_before

    def statistics(self) -> ThrottleStatistics:
        return ThrottleStatistics(
            rate=self.rate, burst=self.burst, tokens=self._tokens, waiting=self._waiting
        )
