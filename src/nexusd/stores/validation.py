"""Argument checks every `CheckpointStore` backend shares, so they all refuse the same input.

These run before anything is written: a bad call fails with `ValueError` and touches nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from nexusd.core.lifecycle import Stage, sources_of
from nexusd.core.records import MUTABLE_FIELDS

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from nexusd.core.records import Checkpoint, LeaseKey, SubmissionEntry
    from nexusd.stores.checkpoints import QueueReport

_TIMESTAMP_FIELDS = frozenset({"sent_at"})


def check_changes(changes: dict[str, Any] | None) -> dict[str, Any]:
    """Return `changes` (or `{}`) after checking it names only `MUTABLE_FIELDS`."""
    if not changes:
        return {}
    unknown = sorted(set(changes) - MUTABLE_FIELDS)
    if unknown:
        raise ValueError(
            f"a transition may not change {', '.join(unknown)}; "
            f"mutable fields are {', '.join(sorted(MUTABLE_FIELDS))}"
        )
    for name in _TIMESTAMP_FIELDS & set(changes):
        value = changes[name]
        if value is not None:
            check_aware(name, value)
    for name in set(changes) - _TIMESTAMP_FIELDS:
        if not isinstance(changes[name], str):
            raise ValueError(f"{name} must be a string, not {type(changes[name]).__name__}")
    return dict(changes)


def check_aware(name: str, value: object) -> None:
    """Refuse anything but a timezone-aware datetime (naive times are ambiguous on disk)."""
    if not isinstance(value, dt.datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, not {value!r}")


def allowed_sources(to: Stage, expected: Collection[Stage] | None) -> frozenset[Stage]:
    """The stages a run may be in for a move to `to` to apply: the transition's CAS condition.

    The legal sources of `to` (core.lifecycle), narrowed to `expected` when given. Terminal
    stages are never sources, so a finished run is never moved.
    """
    sources = sources_of(Stage(to))
    if expected is not None:
        sources &= frozenset(Stage(stage) for stage in expected)
    return sources


def check_submission(checkpoint: Checkpoint, submission: SubmissionEntry | None) -> None:
    """A run's submission entry must carry the run's own key; timestamps must be aware, the
    attempt positive."""
    check_aware("received_at", checkpoint.received_at)
    check_aware("last_modified", checkpoint.last_modified)
    if checkpoint.sent_at is not None:
        check_aware("sent_at", checkpoint.sent_at)
    if checkpoint.lease_expires is not None:
        check_aware("lease_expires", checkpoint.lease_expires)
    check_attempt(checkpoint.attempt)
    if submission is not None and (submission.algorithm, submission.id) != (
        checkpoint.algorithm,
        checkpoint.id,
    ):
        raise ValueError(
            f"submission {submission.algorithm}/{submission.id} does not belong to run "
            f"{checkpoint.algorithm}/{checkpoint.id}"
        )


def check_limit(limit: int) -> int:
    """A page bound must be a positive int (0 would make a pager loop forever)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")
    return limit


def check_claim(from_host: str, to_host: str) -> None:
    """A claim must move the run to another host, or "exactly one claim applies" means nothing."""
    if from_host == to_host:
        raise ValueError(f"a claim must change the host; both are {from_host!r}")


def check_queue_report(queues: QueueReport | None) -> None:
    """A heartbeat's queue report: counts and ages are never negative."""
    if queues is None:
        return
    if queues.queued < 0:
        raise ValueError(f"queued must not be negative, not {queues.queued}")
    ages = {"oldest_queued_age": queues.oldest_queued_age, "last_taken_age": queues.last_taken_age}
    for name, age in ages.items():
        if age is not None and not age >= 0.0:  # also refuses NaN
            raise ValueError(f"{name} must be a non-negative number of seconds, not {age}")


def check_holder(holder: str) -> str:
    """A lease holder is a worker's name: "" means "no lease", so it can never hold one."""
    if not isinstance(holder, str) or not holder:
        raise ValueError(f"a lease holder must be a non-empty string, not {holder!r}")
    return holder


def check_attempt(attempt: int) -> int:
    """Attempts count from 1 (`signing.JOB_ATTEMPT`)."""
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"an attempt must be a positive integer, not {attempt!r}")
    return attempt


def check_leases(leases: Iterable[LeaseKey]) -> list[LeaseKey]:
    """The leases of a `renew`, each with a valid attempt."""
    checked = list(leases)
    for lease in checked:
        check_attempt(lease.attempt)
    return checked


def unique_runs(runs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The runs of a `lease`, each once, in first-seen order."""
    return list(dict.fromkeys((str(algorithm), str(run_id)) for algorithm, run_id in runs))
