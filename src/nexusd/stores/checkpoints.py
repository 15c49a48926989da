"""The `CheckpointStore` protocol every checkpoint backend implements.

Semantics every implementation must keep (tests/stores/test_checkpoint_contract.py checks them):
- `create_many` stores new runs, each with its submission entry and inline payload, all in one
  transaction: every run is stored or none is (`AlreadyExists` if any key exists). `create` is
  the same for one run.
- `transition` is a compare-and-set on the stage: it applies only if the current stage may legally
  move to `to` (core.lifecycle) and, when `expected` is given, is one of `expected`. A terminal
  stage is never left. It raises `NotFound` for an unknown run and reports `applied=False` with
  the current stage otherwise. `last_modified` is set from the store's clock.
- a run stored with an idempotency key (`NewRun.idempotency`, only the first run of a keyed
  request carries one) holds `(algorithm, key)` for as long as the run is stored: ONE unique
  index, so of any number of concurrent creates with the same key, across processes, exactly
  one stores its runs; every other raises `KeyTaken` having stored nothing, and
  `by_idempotency_key` then reads the winner (committed before the loser's insert failed).
  `purge` releases the key with its run.
- `get_payload` returns a payload stored inline by `create`; `purge` deletes it with its run and
  `purge_payloads` after the payload retention, like payload blobs.
- reads never block writers (SQLite WAL, PostgreSQL MVCC).

What the maintainer needs (it keeps every accepted run moving to a terminal state):
- scheduler heartbeats: `record_heartbeat` upserts `(host, last_seen)` and, from a process with
  submission queues, their `QueueReport`; `heartbeats` reads the times back (timezone-aware UTC,
  exact to the microsecond), `heartbeat_reports` the whole rows. `forget_heartbeats` deletes
  the rows not renewed since a cutoff (the maintainer drops hosts silent for longer than
  `buffered_timeout`: the stale scan finds their runs without them).
- `stale` over non-terminal stages only is served by a partial index over those stages in the
  scan's own order (no sort), so a sweep costs a page of index reads per page of runs.
- `stale` pages through runs in some stages not modified since a cutoff, oldest first, in the
  total order `(last_modified, algorithm, id)`. A page is resumed with a `StaleCursor` taken
  from the last run of the previous one, so runs sharing a timestamp are neither skipped nor
  repeated. A run that changes between pages moves to a newer `last_modified` (the store's
  clock), so it drops out of a scan whose cutoff is in the past instead of being seen twice.
- `claim` is the only way `received_by_host` changes: a compare-and-set `from_host -> to_host`
  that applies only while the run is BUFFERED. Of any number of concurrent claims on one run
  (several maintainers, several processes) exactly one applies; that is how a dead scheduler's
  run is resubmitted exactly once.
- `purge` deletes terminal runs (and their submission entries) last modified before a cutoff,
  a bounded batch at a time. A non-terminal run is never deleted.
- `hold_identity` gives one live process at a time a host name, across every process that
  shares the store (a lock file beside a SQLite file, an advisory lock in PostgreSQL held by
  a session of its own), and lets it go when the holder closes the store or dies.

What warm pools need (a run a worker leases instead of a Job; stores/validation.py has the
argument checks every store shares). Each call is ONE writer operation / transaction:
- `lease` is a compare-and-set per run (BUFFERED, warm, unleased -> RUNNING, leased): of
  concurrent leases of one run, from any number of processes, exactly one applies.
- `renew` extends leases still held by that holder for that attempt; for the others it says
  where the run is now, so a worker learns at once that a run was cancelled or lost.
- `requeue` is the one RUNNING -> BUFFERED move (core.lifecycle): the compare-and-set of one
  attempt, so a run goes back to its queue once per lost lease, as attempt + 1.
- `transition(..., attempt=n)` applies only to attempt n: a late completion of a lost attempt
  is refused. A move to a terminal stage ends the run's lease (`lease_holder` '', no expiry),
  so the lease indexes hold only live leases.
- `expired_leases`, `leases_of` and `waiting` are served by partial indexes
  (`checkpoints_leases`, `checkpoints_lease_holder`, `checkpoints_warm_waiting`) holding only
  leased runs / waiting warm runs.

What the submitters of every process share (stores/rate_budgets.py has the arithmetic):
- `grant_tokens` and `cut_rate` are each ONE atomic operation on a shard's rate budget (a
  token bucket with an AIMD rate), also across processes sharing the store: of concurrent
  grants, none sees another's tokens, so the tokens granted over any interval never exceed
  `burst + rate x elapsed` on the store's clock (the memory and SQLite stores' `Clock`,
  PostgreSQL's own `clock_timestamp()`, so machines with skewed clocks share one budget).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs

from nexusd.core.errors import AlreadyExists

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Collection, Sequence

    from nexusd.core.lifecycle import Stage
    from nexusd.core.records import (
        Checkpoint,
        HeldLease,
        KeyedRun,
        LeaseKey,
        NewRun,
        PendingSubmission,
        SubmissionEntry,
        Transition,
    )
    from nexusd.stores.rate_budgets import TokenGrant

#: Rows returned by one `stale` or `purge` call unless the caller asks for another bound.
DEFAULT_PAGE = 1000


class KeyTaken(AlreadyExists):
    """`create_many` refused the runs: a stored run already holds one of their idempotency
    keys. Nothing of the call was stored; `by_idempotency_key` finds the holder."""


@attrs.frozen
class StaleCursor:
    """Where a `stale` scan resumes: strictly after this `(last_modified, algorithm, id)`."""

    last_modified: dt.datetime
    algorithm: str
    id: str

    @classmethod
    def after(cls, checkpoint: Checkpoint) -> StaleCursor:
        """The cursor that resumes a scan after `checkpoint` (the last run of a page)."""
        return cls(
            last_modified=checkpoint.last_modified, algorithm=checkpoint.algorithm, id=checkpoint.id
        )

    def key(self) -> tuple[dt.datetime, str, str]:
        return (self.last_modified, self.algorithm, self.id)


@attrs.frozen
class HostCursor:
    """Where a `by_host_and_stage` scan resumes: strictly after `(received_at, algorithm, id)`."""

    received_at: dt.datetime
    algorithm: str
    id: str

    @classmethod
    def after(cls, checkpoint: Checkpoint) -> HostCursor:
        return cls(
            received_at=checkpoint.received_at, algorithm=checkpoint.algorithm, id=checkpoint.id
        )

    def key(self) -> tuple[dt.datetime, str, str]:
        return (self.received_at, self.algorithm, self.id)


@attrs.frozen
class QueueReport:
    """A process's submission queues (all its shards together) as of one heartbeat.

    The maintainer tells a live scheduler that is merely throttled (its queue moves) from one
    that lost a run (its queue is empty or stuck) by these, rather than by a run's age alone.
    """

    #: runs waiting in the queues (both lanes)
    queued: int
    #: seconds the longest-waiting queued run has waited; 0 when nothing is queued
    oldest_queued_age: float
    #: seconds since a worker last took a run from any of them; None if none ever did
    last_taken_age: float | None = None


@attrs.frozen
class Heartbeat:
    """One `scheduler_heartbeats` row: when `host` was last seen, and its queues then."""

    host: str
    last_seen: dt.datetime
    queues: QueueReport | None = None


class CheckpointStore(Protocol):
    async def create(
        self,
        *,
        checkpoint: Checkpoint,
        submission: SubmissionEntry | None,
        payload: bytes | None = None,
    ) -> None:
        """Store a new run (and its Job manifest, unless a dry run has none)."""
        ...

    async def create_many(self, *, runs: Sequence[NewRun]) -> None:
        """Store new runs in one transaction: all of them, or none (`AlreadyExists`; `KeyTaken`
        when the conflict is an idempotency key)."""
        ...

    async def get(self, *, algorithm: str, request_id: str) -> Checkpoint | None: ...

    async def by_idempotency_key(self, *, algorithm: str, key: str) -> KeyedRun | None:
        """The stored run holding `key` for `algorithm` (its request's first run), or None."""
        ...

    async def get_submission(
        self, *, algorithm: str, request_id: str
    ) -> SubmissionEntry | None: ...

    async def pending_submission(
        self, *, algorithm: str, request_id: str
    ) -> PendingSubmission | None:
        """Stage, holder, shard and Job manifest of a run in one read; None when the run or
        its manifest is unknown."""
        ...

    async def get_payload(self, *, algorithm: str, request_id: str) -> bytes | None:
        """The payload `create` stored inline, or None."""
        ...

    async def transition(
        self,
        *,
        algorithm: str,
        request_id: str,
        to: Stage,
        expected: Collection[Stage] | None = None,
        changes: dict[str, Any] | None = None,
        attempt: int | None = None,
    ) -> Transition:
        """Move the run to `to` if legal (and, when `attempt` is given, only while the run is
        in that attempt); `changes` may only name `records.MUTABLE_FIELDS`."""
        ...

    async def update_tag(self, *, algorithm: str, request_id: str, tag: str) -> Checkpoint | None:
        """Re-tag a run in any stage; None when the run is unknown."""
        ...

    async def by_tag(self, *, tag: str) -> list[Checkpoint]: ...

    async def by_host_and_stage(
        self,
        *,
        host: str,
        stage: Stage,
        limit: int = DEFAULT_PAGE,
        after: HostCursor | None = None,
    ) -> list[Checkpoint]:
        """Up to `limit` runs received by `host` now in `stage`, in the order
        `(received_at, algorithm, id)`, strictly after `after` (recovery of a scheduler's own
        runs, a page at a time)."""
        ...

    # --- what the maintainer uses -----------------------------------------------------------

    async def record_heartbeat(
        self, *, host: str, at: dt.datetime, queues: QueueReport | None = None
    ) -> None:
        """Upsert `host`'s last sign of life (`at`, timezone-aware) and its queue report
        (None: a process without queues); the whole row overwrites the previous one."""
        ...

    async def heartbeats(self) -> dict[str, dt.datetime]:
        """Every host's last heartbeat, timezone-aware UTC."""
        ...

    async def heartbeat_reports(self) -> dict[str, Heartbeat]:
        """Every host's heartbeat row, queue report included (timezone-aware UTC)."""
        ...

    async def forget_heartbeats(self, *, seen_before: dt.datetime) -> int:
        """Delete the heartbeats last seen before `seen_before`; return how many."""
        ...

    async def stale(
        self,
        *,
        stages: Collection[Stage],
        modified_before: dt.datetime,
        limit: int = DEFAULT_PAGE,
        after: StaleCursor | None = None,
    ) -> list[Checkpoint]:
        """Up to `limit` runs in `stages` with `last_modified < modified_before`, strictly after
        `after`, ordered by `(last_modified, algorithm, id)` ascending.

        Page with ``after=StaleCursor.after(page[-1])`` until a page is shorter than `limit`.
        No stages means no runs.
        """
        ...

    async def claim(
        self, *, algorithm: str, request_id: str, from_host: str, to_host: str
    ) -> Checkpoint | None:
        """Set `received_by_host` from `from_host` to `to_host` only while the run is BUFFERED
        and still held by `from_host`; stamp `last_modified`. Return the claimed run, or None
        when the claim did not apply (unknown run, another host claimed it first, or the run
        left BUFFERED). `from_host == to_host` is refused with `ValueError`.
        """
        ...

    async def purge(
        self, *, finished_before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> list[tuple[str, str]]:
        """Delete up to `limit` terminal runs with `last_modified < finished_before`, oldest
        first, together with their submission entries; return their `(algorithm, id)` sorted.

        Never deletes a run in a non-terminal stage. Inline payloads go with their runs. Call
        again until it returns fewer than `limit` keys.
        """
        ...

    async def purge_payloads(
        self, *, written_before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> int:
        """Delete up to `limit` inline payloads stored before `written_before`; return how many.
        Call again until it returns fewer than `limit`."""
        ...

    async def hold_identity(self, *, host: str, holder: str) -> None:
        """Make `host` (a `received_by_host` name) this process's own until the store is
        closed, or raise `OwnershipError` naming the live process that holds it. `holder`
        describes this process to the next one that tries. Whoever owns a name may treat the
        runs held under it as its own, so no two live processes may share one.
        """
        ...

    # --- what warm pools use -----------------------------------------------------------------

    async def lease(
        self, *, runs: Sequence[tuple[str, str]], holder: str, expires: dt.datetime
    ) -> list[LeaseKey]:
        """For each `(algorithm, request_id)` still BUFFERED, warm and unleased: stage RUNNING,
        `lease_holder = holder`, `lease_expires = expires`, `sent_at` and `last_modified` the
        store clock's now; the attempt is unchanged. Return the leases that applied, in input
        order (a run named twice counts once); unknown or unleasable runs are skipped. `holder`
        "" is refused with `ValueError`."""
        ...

    async def renew(
        self, *, holder: str, leases: Sequence[LeaseKey], expires: dt.datetime
    ) -> dict[tuple[str, str], Stage | None]:
        """Set `lease_expires = expires` on every lease still held: RUNNING, `holder`'s, in that
        attempt (`last_modified` unchanged). Return, keyed `(algorithm, request_id)`, the stage
        now of every run NOT renewed (None: unknown run); renewed runs are absent."""
        ...

    async def requeue(
        self,
        *,
        lease: LeaseKey,
        holder: str | None = None,
        expired_before: dt.datetime | None = None,
    ) -> bool:
        """Give a leased run back to its queue: only while it is RUNNING, leased, in
        `lease.attempt` and (when given) held by `holder` with `lease_expires <
        expired_before`: stage BUFFERED, attempt + 1, no lease, `last_modified` now. True if
        it applied; of concurrent requeues of one attempt exactly one does."""
        ...

    async def expired_leases(
        self, *, before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> list[HeldLease]:
        """Up to `limit` RUNNING runs whose lease expired (`lease_expires < before`), in the
        order `(lease_expires, algorithm, id)`: soonest expiry first."""
        ...

    async def leases_of(self, *, holder: str, limit: int = DEFAULT_PAGE) -> list[HeldLease]:
        """Up to `limit` RUNNING runs `holder` holds a lease on, in the order
        `(lease_expires, algorithm, id)`."""
        ...

    async def waiting(
        self, *, algorithm: str, modified_before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> list[Checkpoint]:
        """Up to `limit` BUFFERED warm runs of `algorithm` with `last_modified <
        modified_before`, in the order `(last_modified, id)`: oldest first (runs in no live
        queue: requeued by another scheduler, or a dead scheduler's)."""
        ...

    # --- what the submitters share -----------------------------------------------------------

    async def grant_tokens(
        self,
        *,
        shard: str,
        wanted: int,
        burst: int,
        ceiling: float,
        caller: str,
        increase: float,
        successes: int = 0,
    ) -> TokenGrant:
        """Refill `shard`'s budget, fold `successes` into its rate, take up to `wanted` tokens.

        A budget never seen before starts full (`burst` tokens) at `ceiling`. `burst` caps the
        bucket, `ceiling` the rate (the smallest of the last `CEILING_HOLD` seconds wins, or
        the newest of the `caller` that set it: a process's `node.host_name`).
        """
        ...

    async def cut_rate(
        self,
        *,
        shard: str,
        burst: int,
        ceiling: float,
        caller: str,
        decrease: float,
        floor: float,
    ) -> TokenGrant:
        """A 429: multiply `shard`'s rate by `decrease` (not below `floor`), empty its bucket."""
        ...

    async def aclose(self) -> None: ...


#: The operations every store times in `nexusd_store_operation_duration_seconds`.
OPERATIONS = tuple(name for name in vars(CheckpointStore) if name[0] != "_" and name != "aclose")
