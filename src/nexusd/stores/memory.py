"""`MemoryCheckpointStore`: the `CheckpointStore` protocol over plain dicts, in one process.

Used by tests and by `nexusd dev` when no durability is wanted. It keeps exactly the semantics of
the SQLite and PostgreSQL stores (tests/stores/test_checkpoint_contract.py runs against all of
them): compare-and-set transitions, terminal stages never left, `AlreadyExists` / `NotFound`.

Every method does its whole read-check-write without awaiting in between, so under trio (one
thread, cooperative scheduling) each call is atomic. Each method checkpoints first, so a
cancelled call has changed nothing. JSON fields are deep-copied in and out, so a caller mutating
a record's dict cannot change the stored run (the SQL stores behave the same way by nature).
"""

from __future__ import annotations

import copy
import datetime as dt
import heapq
from collections import defaultdict
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from nexusd.core import metrics
from nexusd.core.errors import AlreadyExists, NotFound
from nexusd.core.lifecycle import TERMINAL, Stage
from nexusd.core.records import KeyedRun, NewRun, PendingSubmission, Transition
from nexusd.stores import rate_budgets
from nexusd.stores.checkpoints import DEFAULT_PAGE, OPERATIONS, Heartbeat, KeyTaken
from nexusd.stores.memory_leases import MemoryLeases
from nexusd.stores.validation import (
    allowed_sources,
    check_attempt,
    check_aware,
    check_changes,
    check_claim,
    check_limit,
    check_queue_report,
    check_submission,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from nexusd.core.clock import Clock
    from nexusd.core.records import Checkpoint, IdempotencyKey, SubmissionEntry
    from nexusd.stores.checkpoints import HostCursor, QueueReport, StaleCursor
    from nexusd.stores.rate_budgets import BudgetState, TokenGrant

_Key = tuple[str, str]
_K = TypeVar("_K")


def _detached(checkpoint: Checkpoint) -> Checkpoint:
    """A copy whose JSON dicts share nothing with `checkpoint`'s."""
    return attrs.evolve(
        checkpoint,
        applied_configuration=copy.deepcopy(checkpoint.applied_configuration),
        configuration_overrides=copy.deepcopy(checkpoint.configuration_overrides),
    )


def _received_order(checkpoint: Checkpoint) -> tuple[dt.datetime, str, str]:
    return (checkpoint.received_at, checkpoint.algorithm, checkpoint.id)


def _ordered(checkpoints: Iterable[Checkpoint]) -> list[Checkpoint]:
    """Oldest first, like the SQL stores' `ORDER BY received_at, algorithm, id`."""
    return sorted((_detached(cp) for cp in checkpoints), key=_received_order)


class MemoryCheckpointStore(MemoryLeases, rate_budgets.StepBudgets):
    """Runs and submission entries in dicts, with a tag index and a (host, stage) index (and
    memory_leases.py's lease indexes)."""

    _read = staticmethod(_detached)

    def __init__(self, *, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self._runs: dict[_Key, Checkpoint] = {}
        self._submissions: dict[_Key, SubmissionEntry] = {}
        self._by_tag: defaultdict[str, set[_Key]] = defaultdict(set)
        self._by_host_stage: defaultdict[tuple[str, Stage], set[_Key]] = defaultdict(set)
        self._heartbeats: dict[str, Heartbeat] = {}
        #: inline payloads: (written_at, data)
        self._payloads: dict[_Key, tuple[dt.datetime, bytes]] = {}
        #: (algorithm, idempotency key) -> the run holding it, and each holder's key
        self._keyed: dict[tuple[str, str], KeyedRun] = {}
        self._key_of: dict[_Key, str] = {}
        #: shard -> its rate budget, shared by every submitter of this process
        self._budgets: dict[str, BudgetState] = {}
        metrics.time_operations(self, OPERATIONS)

    async def create(
        self,
        *,
        checkpoint: Checkpoint,
        submission: SubmissionEntry | None,
        payload: bytes | None = None,
    ) -> None:
        await self.create_many(
            runs=(NewRun(checkpoint=checkpoint, submission=submission, payload=payload),)
        )

    async def create_many(self, *, runs: Sequence[NewRun]) -> None:
        await trio.lowlevel.checkpoint()
        keys = set()
        idempotency_keys = set()
        for run in runs:
            check_submission(run.checkpoint, run.submission)
            key = (run.checkpoint.algorithm, run.checkpoint.id)
            if key in self._runs or key in keys:
                raise AlreadyExists(f"run {key[0]}/{key[1]} already exists")
            keys.add(key)
            if run.idempotency is not None:
                held = (run.checkpoint.algorithm, run.idempotency.key)
                if held in self._keyed or held in idempotency_keys:
                    raise KeyTaken(f"idempotency key {held[1]!r} of {held[0]} is taken")
                idempotency_keys.add(held)
        for run in runs:
            key = (run.checkpoint.algorithm, run.checkpoint.id)
            if run.idempotency is not None:
                self._hold_key(run.checkpoint.algorithm, run.checkpoint.id, run.idempotency)
            self._put(_detached(run.checkpoint))
            if run.submission is not None:
                self._submissions[key] = attrs.evolve(
                    run.submission, template=copy.deepcopy(run.submission.template)
                )
            if run.payload is not None:
                self._payloads[key] = (run.checkpoint.received_at, bytes(run.payload))

    async def get(self, *, algorithm: str, request_id: str) -> Checkpoint | None:
        await trio.lowlevel.checkpoint()
        found = self._runs.get((algorithm, request_id))
        return None if found is None else _detached(found)

    async def by_idempotency_key(self, *, algorithm: str, key: str) -> KeyedRun | None:
        await trio.lowlevel.checkpoint()
        found = self._keyed.get((algorithm, key))
        return None if found is None else copy.deepcopy(found)

    async def get_submission(self, *, algorithm: str, request_id: str) -> SubmissionEntry | None:
        await trio.lowlevel.checkpoint()
        found = self._submissions.get((algorithm, request_id))
        if found is None:
            return None
        return attrs.evolve(found, template=copy.deepcopy(found.template))

    async def pending_submission(
        self, *, algorithm: str, request_id: str
    ) -> PendingSubmission | None:
        await trio.lowlevel.checkpoint()
        run = self._runs.get((algorithm, request_id))
        entry = self._submissions.get((algorithm, request_id))
        if run is None or entry is None:
            return None
        return PendingSubmission(
            stage=run.lifecycle_stage,
            received_by_host=run.received_by_host,
            cluster=entry.cluster,
            template=copy.deepcopy(entry.template),
        )

    async def get_payload(self, *, algorithm: str, request_id: str) -> bytes | None:
        await trio.lowlevel.checkpoint()
        found = self._payloads.get((algorithm, request_id))
        return None if found is None else found[1]

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
        await trio.lowlevel.checkpoint()
        fields = check_changes(changes)
        if attempt is not None:
            check_attempt(attempt)
        sources = allowed_sources(to, expected)
        current = self._runs.get((algorithm, request_id))
        if current is None:
            raise NotFound(f"no run {algorithm}/{request_id}")
        if current.lifecycle_stage not in sources or (
            attempt is not None and current.attempt != attempt
        ):
            return Transition(applied=False, stage=current.lifecycle_stage)
        if Stage(to).is_terminal:  # a finished run holds no lease
            fields |= {"lease_holder": "", "lease_expires": None}
        moved = attrs.evolve(
            current, lifecycle_stage=Stage(to), last_modified=self._clock.now(), **fields
        )
        self._put(moved, replacing=current)
        return Transition(applied=True, stage=moved.lifecycle_stage)

    async def update_tag(self, *, algorithm: str, request_id: str, tag: str) -> Checkpoint | None:
        await trio.lowlevel.checkpoint()
        current = self._runs.get((algorithm, request_id))
        if current is None:
            return None
        tagged = attrs.evolve(current, tag=tag, last_modified=self._clock.now())
        self._put(tagged, replacing=current)
        return _detached(tagged)

    async def by_tag(self, *, tag: str) -> list[Checkpoint]:
        await trio.lowlevel.checkpoint()
        return _ordered(self._runs[key] for key in self._by_tag.get(tag, ()))

    async def by_host_and_stage(
        self,
        *,
        host: str,
        stage: Stage,
        limit: int = DEFAULT_PAGE,
        after: HostCursor | None = None,
    ) -> list[Checkpoint]:
        await trio.lowlevel.checkpoint()
        check_limit(limit)
        if after is not None:
            check_aware("after.received_at", after.received_at)
        start = None if after is None else after.key()
        keys = self._by_host_stage.get((host, Stage(stage)), ())
        # A page of the smallest keys, O(n log limit): no sort of the whole backlog per page.
        found = heapq.nsmallest(
            limit,
            (
                self._runs[key]
                for key in keys
                if start is None or _received_order(self._runs[key]) > start
            ),
            key=_received_order,
        )
        return [_detached(cp) for cp in found]

    # --- what the maintainer uses -----------------------------------------------------------

    async def record_heartbeat(
        self, *, host: str, at: dt.datetime, queues: QueueReport | None = None
    ) -> None:
        await trio.lowlevel.checkpoint()
        check_aware("at", at)
        check_queue_report(queues)
        self._heartbeats[host] = Heartbeat(
            host=host, last_seen=at.astimezone(dt.UTC), queues=queues
        )

    async def heartbeats(self) -> dict[str, dt.datetime]:
        await trio.lowlevel.checkpoint()
        return {host: beat.last_seen for host, beat in self._heartbeats.items()}

    async def heartbeat_reports(self) -> dict[str, Heartbeat]:
        await trio.lowlevel.checkpoint()
        return dict(self._heartbeats)  # frozen records: nothing to copy

    async def forget_heartbeats(self, *, seen_before: dt.datetime) -> int:
        await trio.lowlevel.checkpoint()
        check_aware("seen_before", seen_before)
        gone = [host for host, beat in self._heartbeats.items() if beat.last_seen < seen_before]
        for host in gone:
            del self._heartbeats[host]
        return len(gone)

    async def stale(
        self,
        *,
        stages: Collection[Stage],
        modified_before: dt.datetime,
        limit: int = DEFAULT_PAGE,
        after: StaleCursor | None = None,
    ) -> list[Checkpoint]:
        """A scan of every run (the memory store has no ordered index; it serves tests), keeping
        only a page of the oldest: O(n log limit), not a sort of every run per page."""
        await trio.lowlevel.checkpoint()
        check_aware("modified_before", modified_before)
        check_limit(limit)
        if after is not None:
            check_aware("after.last_modified", after.last_modified)
        wanted = frozenset(Stage(stage) for stage in stages)
        start = None if after is None else after.key()
        found = heapq.nsmallest(
            limit,
            (
                cp
                for cp in self._runs.values()
                if cp.lifecycle_stage in wanted
                and cp.last_modified < modified_before
                and (start is None or _order(cp) > start)
            ),
            key=_order,
        )
        return [_detached(cp) for cp in found]

    async def claim(
        self, *, algorithm: str, request_id: str, from_host: str, to_host: str
    ) -> Checkpoint | None:
        await trio.lowlevel.checkpoint()
        check_claim(from_host, to_host)
        current = self._runs.get((algorithm, request_id))
        if (
            current is None
            or current.lifecycle_stage is not Stage.BUFFERED
            or current.received_by_host != from_host
        ):
            return None
        claimed = attrs.evolve(current, received_by_host=to_host, last_modified=self._clock.now())
        self._put(claimed, replacing=current)
        return _detached(claimed)

    async def purge(
        self, *, finished_before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> list[tuple[str, str]]:
        await trio.lowlevel.checkpoint()
        check_aware("finished_before", finished_before)
        check_limit(limit)
        doomed = sorted(
            (
                cp
                for cp in self._runs.values()
                if cp.lifecycle_stage in TERMINAL and cp.last_modified < finished_before
            ),
            key=_order,
        )[:limit]
        for checkpoint in doomed:
            key = (checkpoint.algorithm, checkpoint.id)
            self._unindex(checkpoint, key)
            del self._runs[key]
            self._submissions.pop(key, None)
            self._payloads.pop(key, None)
            held = self._key_of.pop(key, None)
            if held is not None:
                del self._keyed[(checkpoint.algorithm, held)]
        return sorted((cp.algorithm, cp.id) for cp in doomed)

    async def purge_payloads(
        self, *, written_before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> int:
        await trio.lowlevel.checkpoint()
        check_aware("written_before", written_before)
        check_limit(limit)
        doomed = sorted(
            (written, key)
            for key, (written, _) in self._payloads.items()
            if written < written_before
        )[:limit]
        for _, key in doomed:
            del self._payloads[key]
        return len(doomed)

    async def _update(self, shard: str, step: rate_budgets.Step) -> TokenGrant:
        await trio.lowlevel.checkpoint()
        self._budgets[shard], answer = step(self._budgets.get(shard), self._clock.now().timestamp())
        return answer

    async def hold_identity(self, *, host: str, holder: str) -> None:
        """Nothing to do: a memory store has exactly one process."""
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> MemoryCheckpointStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _hold_key(self, algorithm: str, request_id: str, idempotency: IdempotencyKey) -> None:
        self._keyed[(algorithm, idempotency.key)] = KeyedRun(
            request_id=request_id, idempotency=copy.deepcopy(idempotency)
        )
        self._key_of[(algorithm, request_id)] = idempotency.key

    def _put(self, checkpoint: Checkpoint, *, replacing: Checkpoint | None = None) -> None:
        """Store `checkpoint`, moving its index entries from `replacing`'s."""
        key = (checkpoint.algorithm, checkpoint.id)
        if replacing is not None:
            self._unindex(replacing, key)
        self._runs[key] = checkpoint
        self._by_tag[checkpoint.tag].add(key)
        self._by_host_stage[(checkpoint.received_by_host, checkpoint.lifecycle_stage)].add(key)
        self._index_lease(checkpoint, key)

    def _unindex(self, checkpoint: Checkpoint, key: _Key) -> None:
        _discard(self._by_tag, checkpoint.tag, key)
        _discard(
            self._by_host_stage, (checkpoint.received_by_host, checkpoint.lifecycle_stage), key
        )
        self._unindex_lease(checkpoint, key)


def _order(checkpoint: Checkpoint) -> tuple[dt.datetime, str, str]:
    """The order of `stale` scans and `purge`: `(last_modified, algorithm, id)`."""
    return (checkpoint.last_modified, checkpoint.algorithm, checkpoint.id)


def _discard(index: defaultdict[_K, set[_Key]], index_key: _K, key: _Key) -> None:
    """Remove `key` from `index[index_key]`, dropping the entry when it empties."""
    keys = index.get(index_key)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[index_key]


if TYPE_CHECKING:
    from nexusd.stores.checkpoints import CheckpointStore

    def _conforms(store: MemoryCheckpointStore) -> CheckpointStore:
        return store  # mypy checks the protocol here
