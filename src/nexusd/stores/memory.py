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
from collections import defaultdict
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from nexusd.core.errors import AlreadyExists, NotFound
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, SubmissionEntry, Transition
from nexusd.stores.validation import allowed_sources, check_changes, check_submission

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from nexusd.core.clock import Clock

_Key = tuple[str, str]
_K = TypeVar("_K")


def _detached(checkpoint: Checkpoint) -> Checkpoint:
    """A copy whose JSON dicts share nothing with `checkpoint`'s."""
    return attrs.evolve(
        checkpoint,
        applied_configuration=copy.deepcopy(checkpoint.applied_configuration),
        configuration_overrides=copy.deepcopy(checkpoint.configuration_overrides),
    )


def _ordered(checkpoints: Iterable[Checkpoint]) -> list[Checkpoint]:
    """Oldest first, like the SQL stores' `ORDER BY received_at, algorithm, id`."""
    return sorted(
        (_detached(cp) for cp in checkpoints),
        key=lambda cp: (cp.received_at, cp.algorithm, cp.id),
    )


class MemoryCheckpointStore:
    """Runs and submission entries in dicts, with a tag index and a (host, stage) index."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._runs: dict[_Key, Checkpoint] = {}
        self._submissions: dict[_Key, SubmissionEntry] = {}
        self._by_tag: defaultdict[str, set[_Key]] = defaultdict(set)
        self._by_host_stage: defaultdict[tuple[str, Stage], set[_Key]] = defaultdict(set)

    async def create(self, *, checkpoint: Checkpoint, submission: SubmissionEntry | None) -> None:
        await trio.lowlevel.checkpoint()
        check_submission(checkpoint, submission)
        key = (checkpoint.algorithm, checkpoint.id)
        if key in self._runs:
            raise AlreadyExists(f"run {checkpoint.algorithm}/{checkpoint.id} already exists")
        self._put(_detached(checkpoint))
        if submission is not None:
            self._submissions[key] = attrs.evolve(
                submission, template=copy.deepcopy(submission.template)
            )

    async def get(self, *, algorithm: str, request_id: str) -> Checkpoint | None:
        await trio.lowlevel.checkpoint()
        found = self._runs.get((algorithm, request_id))
        return None if found is None else _detached(found)

    async def get_submission(self, *, algorithm: str, request_id: str) -> SubmissionEntry | None:
        await trio.lowlevel.checkpoint()
        found = self._submissions.get((algorithm, request_id))
        if found is None:
            return None
        return attrs.evolve(found, template=copy.deepcopy(found.template))

    async def transition(
        self,
        *,
        algorithm: str,
        request_id: str,
        to: Stage,
        expected: Collection[Stage] | None = None,
        changes: dict[str, Any] | None = None,
    ) -> Transition:
        await trio.lowlevel.checkpoint()
        fields = check_changes(changes)
        sources = allowed_sources(to, expected)
        current = self._runs.get((algorithm, request_id))
        if current is None:
            raise NotFound(f"no run {algorithm}/{request_id}")
        if current.lifecycle_stage not in sources:
            return Transition(applied=False, checkpoint=_detached(current))
        moved = attrs.evolve(
            current, lifecycle_stage=Stage(to), last_modified=self._clock.now(), **fields
        )
        self._put(moved, replacing=current)
        return Transition(applied=True, checkpoint=_detached(moved))

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

    async def by_host_and_stage(self, *, host: str, stage: Stage) -> list[Checkpoint]:
        await trio.lowlevel.checkpoint()
        keys = self._by_host_stage.get((host, Stage(stage)), ())
        return _ordered(self._runs[key] for key in keys)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> MemoryCheckpointStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _put(self, checkpoint: Checkpoint, *, replacing: Checkpoint | None = None) -> None:
        """Store `checkpoint`, moving its index entries from `replacing`'s."""
        key = (checkpoint.algorithm, checkpoint.id)
        if replacing is not None:
            self._unindex(replacing, key)
        self._runs[key] = checkpoint
        self._by_tag[checkpoint.tag].add(key)
        self._by_host_stage[(checkpoint.received_by_host, checkpoint.lifecycle_stage)].add(key)

    def _unindex(self, checkpoint: Checkpoint, key: _Key) -> None:
        _discard(self._by_tag, checkpoint.tag, key)
        _discard(
            self._by_host_stage, (checkpoint.received_by_host, checkpoint.lifecycle_stage), key
        )


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
