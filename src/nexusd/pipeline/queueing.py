"""The virtual queues: accepted runs waiting for Job submission, one bounded queue per shard.

Input: references to runs already durable in the checkpoint store (BUFFERED).
Output: the same references, to that shard's submitter workers, priority lane first.

Two lanes per queue. The priority lane holds runs that are late through no fault of the client:
runs recovered after a restart and runs whose submission was delayed by throttling or a
transient API error. They are taken before new runs ("delayed requests scheduled ahead of the
queue"), each no sooner than its `not_before` (its back-off). One queue per shard keeps a slow
or throttled cluster from holding up the runs of the others.

A trio memory channel cannot express a strict two-lane order with due times, so the lanes are a
deque and a heap, and consumers park on a `trio.lowlevel.ParkingLot`, which keeps trio's
fairness and cancellation semantics.

Capacity is reserved *before* intake persists a run (`reserve_nowait`), so a full queue answers
429 without having written anything, and an accepted run always has its place: nothing accepted
is dropped for lack of room.

The priority lane is bounded too (`priority_capacity`, the queue's capacity by default) and
holds each run once: recovery sweeps that find the same BUFFERED runs again (during a shard
outage, every sweep) add nothing the second time. A run refused for lack of room loses nothing
either: it is BUFFERED in the store, and recovery (a restart's `requeue_buffered`, the
maintainer's sweep) offers it again later.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math
from collections.abc import Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


def run_key(item: object) -> Hashable:
    """What makes two items one run: a run reference's `(algorithm, request_id)`, whatever its
    attempt count (a retry and a recovery of one run are one run); any other item itself."""
    algorithm = getattr(item, "algorithm", None)
    request_id = getattr(item, "request_id", None)
    if isinstance(algorithm, str) and isinstance(request_id, str):
        return (algorithm, request_id)
    if not isinstance(item, Hashable):
        raise TypeError(f"queue items must be hashable, not {type(item).__name__}")
    return item


class QueueFull(Exception):
    """No room: the caller should answer 429 with Retry-After."""


@attrs.frozen
class QueueStatistics:
    capacity: int
    queued: int
    priority_queued: int
    reserved: int
    oldest_age: float
    priority_capacity: int = 0
    #: seconds since `get` last handed out an item; None if it never did
    last_taken_age: float | None = None


class VirtualQueue(Generic[T]):
    def __init__(
        self,
        capacity: int,
        *,
        priority_capacity: int | None = None,
        key: Callable[[T], Hashable] = run_key,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if priority_capacity is None:
            priority_capacity = capacity
        if priority_capacity < 1:
            raise ValueError("priority_capacity must be at least 1")
        self.capacity = capacity
        self.priority_capacity = priority_capacity
        self._key = key
        self._normal: collections.deque[tuple[float, T]] = collections.deque()
        # (not_before, sequence, enqueued_at, item): the sequence keeps equal times FIFO
        self._priority: list[tuple[float, int, float, T]] = []
        #: the keys of the items in the priority lane, so that each run is there once
        self._in_priority: set[Hashable] = set()
        self._last_taken: float | None = None
        self._sequence = itertools.count()
        self._lot = trio.lowlevel.ParkingLot()
        self._reserved = 0

    def __len__(self) -> int:
        return len(self._normal) + len(self._priority)

    def reserve_nowait(self) -> Reservation[T]:
        """Claim room for one new item or raise QueueFull."""
        if len(self._normal) + self._reserved >= self.capacity:
            raise QueueFull
        self._reserved += 1
        return Reservation(self)

    def put_priority(self, item: T, *, not_before: float = 0.0) -> bool:
        """Put a recovered or delayed run ahead of new ones, due at `not_before`
        (`trio.current_time()` scale). Return whether it was added: False when its run
        (`key`) is in the lane already (that entry keeps its place and due time) or the lane
        is full."""
        key = self._key(item)
        if key in self._in_priority or len(self._priority) >= self.priority_capacity:
            return False
        now = trio.current_time()
        heapq.heappush(self._priority, (max(not_before, now), next(self._sequence), now, item))
        self._in_priority.add(key)
        self._lot.unpark()
        return True

    def priority_full(self) -> bool:
        return len(self._priority) >= self.priority_capacity

    async def get(self) -> T:
        """The next due item: the priority lane first, then new runs in arrival order."""
        while True:
            try:
                return self.get_nowait()
            except trio.WouldBlock:
                pass
            wait = self._priority[0][0] - trio.current_time() if self._priority else math.inf
            with trio.move_on_after(wait):
                await self._lot.park()

    def get_nowait(self) -> T:
        """The next due item, or `trio.WouldBlock` when none is due (a warm pool's lease
        takes every due run it may at once)."""
        now = trio.current_time()
        if self._priority and self._priority[0][0] <= now:
            item = heapq.heappop(self._priority)[3]
            self._in_priority.discard(self._key(item))
            self._last_taken = now
            return item
        if self._normal:
            self._last_taken = now
            return self._normal.popleft()[1]
        raise trio.WouldBlock

    def discard(self, match: Callable[[T], bool]) -> int:
        """Take every queued item for which `match` is true out of both lanes; return how
        many. O(n): for rare events such as a cancelled run, not for the hot path."""
        kept = collections.deque(entry for entry in self._normal if not match(entry[1]))
        gone = len(self._normal) - len(kept)
        self._normal = kept
        priority = [entry for entry in self._priority if not match(entry[3])]
        gone += len(self._priority) - len(priority)
        if len(priority) != len(self._priority):
            heapq.heapify(priority)
            self._priority = priority
            self._in_priority = {self._key(entry[3]) for entry in priority}
        return gone

    def _fill(self, item: T) -> None:
        self._reserved -= 1
        self._normal.append((trio.current_time(), item))
        self._lot.unpark()

    def _release(self) -> None:
        self._reserved -= 1

    def statistics(self) -> QueueStatistics:
        now = trio.current_time()
        heads = [self._normal[0][0]] if self._normal else []
        heads += [entry[2] for entry in self._priority]  # O(lane), and the lane is bounded
        oldest = now - min(heads) if heads else 0.0
        return QueueStatistics(
            capacity=self.capacity,
            queued=len(self),
            priority_queued=len(self._priority),
            reserved=self._reserved,
            oldest_age=oldest,
            priority_capacity=self.priority_capacity,
            last_taken_age=None if self._last_taken is None else now - self._last_taken,
        )


class Reservation(Generic[T]):
    """Room for one item: `put` it once, or `cancel` to give the room back."""

    def __init__(self, queue: VirtualQueue[T]) -> None:
        self._queue: VirtualQueue[T] | None = queue

    def put(self, item: T) -> None:
        queue, self._queue = self._queue, None
        if queue is None:
            raise RuntimeError("reservation already used")
        queue._fill(item)

    def cancel(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None:
            queue._release()
