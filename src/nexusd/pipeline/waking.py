"""Waking: the maintainer's work queue of run keys, unique and bounded.

Input: run keys (algorithm, request id) from three producers — the informers' wake-ups
(observing.py: a run's Job, pods or events changed), a rule's grace that is running out
(`later`, from the reconciler's verdicts), and the periodic sweep (maintaining.py), which
`claim`s each run it reconciles itself.
Output: keys for the maintainer's workers (`get` ... `done`). No stage transition here.

The rules are client-go's workqueue (kopf's per-object queues have the same intent):

- a key already queued is not queued twice, however many times it is woken;
- a key being processed is never handed to a second worker; woken meanwhile, it is marked
  dirty and queued once more when its worker calls `done` (the change may have come after the
  worker read the state);
- the queue holds at most `capacity` keys, and so does the timer of graces. When full, a new
  key is dropped and counted in `statistics().dropped`: nothing is lost for good, because the
  periodic sweep re-finds every non-terminal run from the store and reconciles it. Memory is
  bounded by the setting, not by how many runs a burst of events touches.

Graces: `later(key, seconds)` remembers the earliest time a run must be looked at again (one
heap entry per key, not one task per run); `run_timers` queues each key when its time comes,
and `wake_due` does the same at once, for the informers' resync (nothing in the cache changed,
so a run whose grace is now due is the only one whose verdict can have changed).
"""

from __future__ import annotations

import collections
import heapq
import logging
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import trio

if TYPE_CHECKING:
    from nexusd.pipeline.observing import RunKey

logger = logging.getLogger(__name__)

#: Default bound of the queue (and of the grace timers): 100k keys is ~20 MB at most.
DEFAULT_CAPACITY: Final = 100_000


@attrs.frozen
class RunQueueStatistics:
    queued: int
    processing: int
    dirty: int
    waiting: int
    """Runs with a grace timer."""
    added: int
    dropped: int
    """Keys refused because the queue or the timers were full (the sweep catches up)."""
    capacity: int


class RunQueue:
    """Unique, bounded run keys (see module doc). Not thread-safe: one trio loop."""

    def __init__(self, *, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("a run queue needs room for at least one key")
        self.capacity = capacity
        self._queued: collections.OrderedDict[RunKey, None] = collections.OrderedDict()
        self._processing: set[RunKey] = set()
        self._dirty: set[RunKey] = set()
        self._nonempty = trio.Event()
        self._due_at: dict[RunKey, float] = {}
        self._timers: list[tuple[float, RunKey]] = []
        self._timers_changed = trio.Event()
        self._added = 0
        self._dropped = 0

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, key: object) -> bool:
        return key in self._queued or key in self._processing

    # -- producers ------------------------------------------------------------------------

    def add(self, key: RunKey) -> bool:
        """Queue `key` unless it is queued already; False if it was dropped (queue full)."""
        if key in self._queued:
            return True
        if key in self._processing:
            self._dirty.add(key)
            return True
        if len(self._queued) >= self.capacity:
            self._dropped += 1
            return False
        self._queued[key] = None
        self._added += 1
        self._nonempty.set()
        return True

    __call__ = add  # so the queue is ClusterView's `on_change`

    def later(self, key: RunKey, delay: float) -> None:
        """Queue `key` in `delay` seconds (the earliest of several requests wins)."""
        due = trio.current_time() + max(0.0, delay)
        current = self._due_at.get(key)
        if current is not None and current <= due:
            return
        if current is None and len(self._due_at) >= self.capacity:
            self._dropped += 1
            return
        self._due_at[key] = due
        heapq.heappush(self._timers, (due, key))
        if len(self._timers) > 2 * self.capacity:  # superseded entries: keep the heap bounded
            self._timers = [(when, k) for k, when in self._due_at.items()]
            heapq.heapify(self._timers)
        if self._timers[0][1] == key:
            self._timers_changed.set()

    def wake_due(self) -> int:
        """Queue every key whose grace time has come; returns how many."""
        now = trio.current_time()
        woken = 0
        while self._timers and self._timers[0][0] <= now:
            due, key = heapq.heappop(self._timers)
            if self._due_at.get(key) != due:
                continue  # superseded by an earlier request
            del self._due_at[key]
            woken += self.add(key)
        return woken

    def claim(self, key: RunKey) -> bool:
        """Take `key` to process it now (the sweep); False if a worker has it already.

        A queued key is taken out of the queue. Refused, the key is marked dirty, so its
        worker runs it once more: the caller may skip it.
        """
        if key in self._processing:
            self._dirty.add(key)
            return False
        self._queued.pop(key, None)
        self._processing.add(key)
        return True

    # -- consumers ------------------------------------------------------------------------

    async def get(self) -> RunKey:
        """The oldest queued key, now being processed: call `done(key)` when finished."""
        await trio.lowlevel.checkpoint()
        while not self._queued:
            if self._nonempty.is_set():
                self._nonempty = trio.Event()
            await self._nonempty.wait()
        key, _ = self._queued.popitem(last=False)
        self._processing.add(key)
        return key

    def done(self, key: RunKey) -> None:
        """`key` is processed; queue it again if it was woken meanwhile."""
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    async def run_timers(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Queue each key when its grace is over (see `later`)."""
        task_status.started()
        while True:
            self.wake_due()
            if self._timers_changed.is_set():
                self._timers_changed = trio.Event()
            deadline = self._timers[0][0] if self._timers else float("inf")
            with trio.move_on_at(deadline):
                await self._timers_changed.wait()

    def statistics(self) -> RunQueueStatistics:
        return RunQueueStatistics(
            queued=len(self._queued),
            processing=len(self._processing),
            dirty=len(self._dirty),
            waiting=len(self._due_at),
            added=self._added,
            dropped=self._dropped,
            capacity=self.capacity,
        )
