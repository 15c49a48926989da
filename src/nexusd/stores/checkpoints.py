"""The `CheckpointStore` protocol every checkpoint backend implements.

Semantics every implementation must keep (tests/stores/test_checkpoint_contract.py checks them):
- `create` stores a new run and its submission entry atomically, or raises `AlreadyExists`.
- `transition` is a compare-and-set on the stage: it applies only if the current stage may legally
  move to `to` (core.lifecycle) and, when `expected` is given, is one of `expected`. A terminal
  stage is never left. It raises `NotFound` for an unknown run and reports `applied=False` with
  the current record otherwise. `last_modified` is set from the store's clock.
- reads never block writers (SQLite WAL, PostgreSQL MVCC).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Collection

    from nexusd.core.lifecycle import Stage
    from nexusd.core.records import Checkpoint, SubmissionEntry, Transition


class CheckpointStore(Protocol):
    async def create(self, *, checkpoint: Checkpoint, submission: SubmissionEntry | None) -> None:
        """Store a new run (and its Job manifest, unless a dry run has none)."""
        ...

    async def get(self, *, algorithm: str, request_id: str) -> Checkpoint | None: ...

    async def get_submission(
        self, *, algorithm: str, request_id: str
    ) -> SubmissionEntry | None: ...

    async def transition(
        self,
        *,
        algorithm: str,
        request_id: str,
        to: Stage,
        expected: Collection[Stage] | None = None,
        changes: dict[str, Any] | None = None,
    ) -> Transition:
        """Move the run to `to` if legal; `changes` may only name `records.MUTABLE_FIELDS`."""
        ...

    async def update_tag(self, *, algorithm: str, request_id: str, tag: str) -> Checkpoint | None:
        """Re-tag a run in any stage; None when the run is unknown."""
        ...

    async def by_tag(self, *, tag: str) -> list[Checkpoint]: ...

    async def by_host_and_stage(self, *, host: str, stage: Stage) -> list[Checkpoint]:
        """Runs received by `host` now in `stage` (recovery of a scheduler's own runs)."""
        ...

    async def aclose(self) -> None: ...
