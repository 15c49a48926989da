"""The warm-pool calls of `MemoryCheckpointStore`: leases, renewals, requeues and their reads.

A mixin over the store's run dict, kept apart so memory.py stays about the Job-mode contract.
Like every memory-store call, each method checkpoints first and then does its whole
read-check-write without awaiting, so it is atomic under trio, and a cancelled call has changed
nothing. Two small indexes stand in for the SQL stores' partial indexes: the leased runs, and
the BUFFERED warm runs per algorithm.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import TYPE_CHECKING

import attrs
import trio

from nexusd.core.lifecycle import Stage
from nexusd.core.records import HeldLease, LeaseKey
from nexusd.stores.checkpoints import DEFAULT_PAGE
from nexusd.stores.validation import (
    check_attempt,
    check_aware,
    check_holder,
    check_leases,
    check_limit,
    unique_runs,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    from nexusd.core.clock import Clock
    from nexusd.core.records import Checkpoint

_Key = tuple[str, str]


def _held(checkpoint: Checkpoint) -> HeldLease:
    assert checkpoint.lease_expires is not None  # a leased run always has an expiry
    return HeldLease(
        algorithm=checkpoint.algorithm,
        request_id=checkpoint.id,
        attempt=checkpoint.attempt,
        holder=checkpoint.lease_holder,
        expires=checkpoint.lease_expires,
    )


def _lease_order(checkpoint: Checkpoint) -> tuple[dt.datetime, str, str]:
    assert checkpoint.lease_expires is not None
    return (checkpoint.lease_expires, checkpoint.algorithm, checkpoint.id)


class MemoryLeases:
    """Mixin: `lease`, `renew`, `requeue`, `expired_leases`, `leases_of`, `waiting`."""

    _clock: Clock
    _runs: dict[_Key, Checkpoint]

    def __init__(self) -> None:
        #: runs with a lease holder (`checkpoints_leases` / `checkpoints_lease_holder`)
        self._leased: set[_Key] = set()
        #: algorithm -> its BUFFERED warm runs (`checkpoints_warm_waiting`)
        self._waiting: defaultdict[str, set[_Key]] = defaultdict(set)

    def _put(self, checkpoint: Checkpoint, *, replacing: Checkpoint | None = None) -> None:
        raise NotImplementedError

    @staticmethod
    def _read(checkpoint: Checkpoint) -> Checkpoint:
        """A copy safe to hand out."""
        raise NotImplementedError

    def _index_lease(self, checkpoint: Checkpoint, key: _Key) -> None:
        if checkpoint.lease_holder:
            self._leased.add(key)
        if checkpoint.warm and checkpoint.lifecycle_stage is Stage.BUFFERED:
            self._waiting[checkpoint.algorithm].add(key)

    def _unindex_lease(self, checkpoint: Checkpoint, key: _Key) -> None:
        self._leased.discard(key)
        waiting = self._waiting.get(checkpoint.algorithm)
        if waiting is not None:
            waiting.discard(key)
            if not waiting:
                del self._waiting[checkpoint.algorithm]

    async def lease(
        self, *, runs: Sequence[tuple[str, str]], holder: str, expires: dt.datetime
    ) -> list[LeaseKey]:
        await trio.lowlevel.checkpoint()
        check_holder(holder)
        check_aware("expires", expires)
        now = self._clock.now()
        leased = []
        for key in unique_runs(runs):
            current = self._runs.get(key)
            if (
                current is None
                or current.lifecycle_stage is not Stage.BUFFERED
                or not current.warm
                or current.lease_holder
            ):
                continue
            self._put(
                attrs.evolve(
                    current,
                    lifecycle_stage=Stage.RUNNING,
                    lease_holder=holder,
                    lease_expires=expires,
                    sent_at=now,
                    last_modified=now,
                ),
                replacing=current,
            )
            leased.append(LeaseKey(algorithm=key[0], request_id=key[1], attempt=current.attempt))
        return leased

    async def renew(
        self, *, holder: str, leases: Sequence[LeaseKey], expires: dt.datetime
    ) -> dict[tuple[str, str], Stage | None]:
        await trio.lowlevel.checkpoint()
        check_holder(holder)
        check_aware("expires", expires)
        refused: dict[tuple[str, str], Stage | None] = {}
        for lease in check_leases(leases):
            key = (lease.algorithm, lease.request_id)
            current = self._runs.get(key)
            if (
                current is None
                or current.lifecycle_stage is not Stage.RUNNING
                or current.lease_holder != holder
                or current.attempt != lease.attempt
            ):
                refused[key] = None if current is None else current.lifecycle_stage
                continue
            self._put(attrs.evolve(current, lease_expires=expires), replacing=current)
        return refused

    async def requeue(
        self,
        *,
        lease: LeaseKey,
        holder: str | None = None,
        expired_before: dt.datetime | None = None,
    ) -> bool:
        await trio.lowlevel.checkpoint()
        check_attempt(lease.attempt)
        if holder is not None:
            check_holder(holder)
        if expired_before is not None:
            check_aware("expired_before", expired_before)
        current = self._runs.get((lease.algorithm, lease.request_id))
        if (
            current is None
            or current.lifecycle_stage is not Stage.RUNNING
            or not current.lease_holder
            or current.attempt != lease.attempt
            or (holder is not None and current.lease_holder != holder)
            or (
                expired_before is not None
                and (current.lease_expires is None or not current.lease_expires < expired_before)
            )
        ):
            return False
        requeued = attrs.evolve(
            current,
            lifecycle_stage=Stage.BUFFERED,
            attempt=current.attempt + 1,
            lease_holder="",
            lease_expires=None,
            last_modified=self._clock.now(),
        )
        self._put(requeued, replacing=current)
        return True

    async def expired_leases(
        self, *, before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> list[HeldLease]:
        await trio.lowlevel.checkpoint()
        check_aware("before", before)
        check_limit(limit)
        expired = (
            cp
            for cp in map(self._runs.__getitem__, self._leased)
            if cp.lifecycle_stage is Stage.RUNNING
            and cp.lease_expires is not None
            and cp.lease_expires < before
        )
        return [_held(cp) for cp in heapq.nsmallest(limit, expired, key=_lease_order)]

    async def leases_of(self, *, holder: str, limit: int = DEFAULT_PAGE) -> list[HeldLease]:
        await trio.lowlevel.checkpoint()
        check_holder(holder)
        check_limit(limit)
        held = (
            cp
            for cp in map(self._runs.__getitem__, self._leased)
            if cp.lifecycle_stage is Stage.RUNNING and cp.lease_holder == holder
        )
        return [_held(cp) for cp in heapq.nsmallest(limit, held, key=_lease_order)]

    async def waiting(
        self, *, algorithm: str, modified_before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> list[Checkpoint]:
        await trio.lowlevel.checkpoint()
        check_aware("modified_before", modified_before)
        check_limit(limit)
        old = (
            cp
            for cp in map(self._runs.__getitem__, self._waiting.get(algorithm, ()))
            if cp.last_modified < modified_before
        )
        found = heapq.nsmallest(limit, old, key=lambda cp: (cp.last_modified, cp.id))
        return [self._read(cp) for cp in found]
