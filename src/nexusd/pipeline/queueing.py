"""The virtual queue: accepted runs waiting for Job submission, bounded, with a priority lane.

Input: references to runs already durable in the checkpoint store (BUFFERED).
Output: the same references, to the submitter workers, priority lane first.

Two lanes: runs recovered after a restart or delayed by throttling go to the priority lane and are
taken before new runs ("delayed requests scheduled ahead of the queue"). A single trio memory
channel cannot express a strict two-lane order, so the lanes are deques and a `trio.Semaphore`
counts the items, which keeps trio's fairness and cancellation semantics for consumers.

Capacity is reserved *before* intake persists a run (`reserve_nowait`), so a full queue answers
429 without having written anything, and an accepted run always has its place: nothing accepted
is dropped for lack of room.
"""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

import attrs
import trio

T = TypeVar("T")


class QueueFull(Exception):
    """No room: the caller should answer 429 with Retry-After."""


@attrs.frozen
class QueueStatistics:
    capacity: int
    queued: int
    priority_queued: int
    reserved: int
    oldest_age: float


class VirtualQueue(Generic[T]):
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._normal: collections.deque[tuple[float, T]] = collections.deque()
        self._priority: collections.deque[tuple[float, T]] = collections.deque()
        self._items = trio.Semaphore(0)
        self._reserved = 0

    def __len__(self) -> int:
        return len(self._normal) + len(self._priority)

    def reserve_nowait(self) -> Reservation[T]:
        """Claim room for one item or raise QueueFull."""
        if len(self) + self._reserved >= self.capacity:
            raise QueueFull
        self._reserved += 1
        return Reservation(self)

    def put_priority(self, item: T) -> None:
        """Put a recovered or delayed run ahead of new ones. Never refused: it is already ours."""
        self._priority.append((trio.current_time(), item))
        self._items.release()

    async def get(self) -> T:
        await self._items.acquire()
        lane = self._priority if self._priority else self._normal
        return lane.popleft()[1]

    def _fill(self, item: T) -> None:
        self._reserved -= 1
        self._normal.append((trio.current_time(), item))
        self._items.release()

    def _release(self) -> None:
        self._reserved -= 1

    def statistics(self) -> QueueStatistics:
        heads = [lane[0][0] for lane in (self._normal, self._priority) if lane]
        oldest = trio.current_time() - min(heads) if heads else 0.0
        return QueueStatistics(
            capacity=self.capacity,
            queued=len(self),
            priority_queued=len(self._priority),
            reserved=self._reserved,
            oldest_age=oldest,
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
