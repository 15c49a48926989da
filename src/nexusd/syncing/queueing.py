"""A work queue of unique keys with per-key exponential back-off (client-go's rate-limited
workqueue, without the global token bucket).

- `add(key)` makes a key due now; a key already waiting is not added twice, so a burst of
  watch events for one object costs one reconcile.
- `retry(key)` makes it due after `base * 2**failures` seconds, at most `maximum` (upstream's
  30 ms / 5 s defaults); `forget(key)` resets its failures once it succeeded.
- `get()` waits for the earliest due key. A key being processed that is added again meanwhile
  is processed again after, never concurrently (there is one consumer per queue).

Each shard has its own queue, so one shard's failures never delay another's keys.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

import trio

K = TypeVar("K", bound=Hashable)


class KeyQueue(Generic[K]):
    """Unique keys, each due at a time; see the module docstring."""

    def __init__(self, *, base: float, maximum: float) -> None:
        self._base = base
        self._maximum = maximum
        self._due: dict[K, float] = {}
        self._failures: dict[K, int] = {}
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def add(self, key: K) -> None:
        """Make `key` due now (earlier than a pending retry, too)."""
        self._schedule(key, trio.current_time())

    def retry(self, key: K) -> float:
        """Make `key` due after its back-off; returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self._maximum, self._base * 2.0 ** min(failures, 30))
        self._schedule(key, trio.current_time() + delay)
        return delay

    def forget(self, key: K) -> None:
        """Reset the back-off of `key` (it succeeded)."""
        self._failures.pop(key, None)

    def pending(self) -> list[K]:
        """The keys waiting, earliest first."""
        return sorted(self._due, key=self._due.__getitem__)

    async def get(self) -> K:
        """Wait for the earliest due key and take it out of the queue."""
        while True:
            if self._due:
                key = min(self._due, key=self._due.__getitem__)
                when = self._due[key]
                if when <= trio.current_time():
                    del self._due[key]
                    return key
            else:
                when = float("inf")
            self._changed = trio.Event()
            with trio.move_on_at(when):
                await self._changed.wait()

    def _schedule(self, key: K, when: float) -> None:
        if key not in self._due or when < self._due[key]:
            self._due[key] = when
            self._changed.set()
