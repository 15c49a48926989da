"""A run's lifecycle stages (upstream's exact strings) and the transitions allowed between them.

Every state change of a run is a compare-and-set on its current stage. This module is the one
place that says which changes are legal; the stores enforce it atomically. A terminal stage is
never left: a late RUNNING write can never overwrite a receiver's COMPLETED, which is the race
upstream's whole-row upserts lose.

One move is deliberately missing from `LEGAL`: RUNNING -> BUFFERED. A warm-pool run is RUNNING
while a worker holds its lease; when the lease is lost (expired, released, its worker gone) the
run goes back to its queue as its next attempt. Only `CheckpointStore.requeue` makes that move,
as the compare-and-set of one lease (stage RUNNING, leased, the lost attempt), so it happens
once per lost lease and never to a Job run; `transition` can never make it.
"""

from __future__ import annotations

import enum

from nexusd.core.errors import InvalidTransition


class Stage(enum.StrEnum):
    NEW = "NEW"
    BUFFERED = "BUFFERED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SCHEDULING_FAILED = "SCHEDULING_FAILED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        Stage.COMPLETED,
        Stage.FAILED,
        Stage.SCHEDULING_FAILED,
        Stage.DEADLINE_EXCEEDED,
        Stage.CANCELLED,
    }
)

_FAILURES = frozenset({Stage.FAILED, Stage.SCHEDULING_FAILED, Stage.DEADLINE_EXCEEDED})

#: Legal moves. BUFFERED -> COMPLETED/FAILED covers dry runs and a completion that arrives
#: before the submitter's RUNNING write (fast algorithms); NEW is upstream's "accepted, not yet
#: buffered" stage, which recovery fails as SCHEDULING_FAILED.
LEGAL: dict[Stage, frozenset[Stage]] = {
    Stage.NEW: frozenset({Stage.BUFFERED, Stage.SCHEDULING_FAILED, Stage.CANCELLED}),
    Stage.BUFFERED: frozenset({Stage.RUNNING, Stage.COMPLETED, Stage.CANCELLED} | _FAILURES),
    Stage.RUNNING: frozenset({Stage.COMPLETED, Stage.CANCELLED} | _FAILURES),
    **{stage: frozenset() for stage in TERMINAL},
}


def is_legal(current: Stage, to: Stage) -> bool:
    return to in LEGAL[current]


def check_transition(current: Stage, to: Stage) -> None:
    """Raise `InvalidTransition` unless `current -> to` is a legal move."""
    if not is_legal(current, to):
        raise InvalidTransition(f"a run cannot move from {current} to {to}")


def sources_of(to: Stage) -> frozenset[Stage]:
    """Every stage from which `to` can be reached: the CAS condition of a transition."""
    return frozenset(stage for stage, targets in LEGAL.items() if to in targets)
