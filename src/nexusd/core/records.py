"""The records a run leaves behind: its checkpoint and its submission-buffer entry.

Field names are upstream's `checkpoints` / `submission_buffer` columns (contract §4), so the
metadata JSON and the SQL schemas read the same as upstream's.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from nexusd.core.lifecycle import Stage

JsonObject = dict[str, Any]

#: Fields a transition may change besides the stage; everything else is fixed at creation.
MUTABLE_FIELDS = frozenset(
    {
        "payload_uri",
        "result_uri",
        "algorithm_failure_cause",
        "algorithm_failure_details",
        "sent_at",
        "job_uid",
        "tag",
    }
)


@attrs.frozen
class ParentRef:
    """The run whose Job owns this run's Job (an execution tree)."""

    request_id: str
    algorithm_name: str


@attrs.frozen(eq=True)
class Checkpoint:
    """One run's durable state. Timestamps are timezone-aware UTC."""

    algorithm: str
    id: str
    lifecycle_stage: Stage
    received_at: dt.datetime
    last_modified: dt.datetime
    payload_uri: str = ""
    result_uri: str = ""
    algorithm_failure_cause: str = ""
    algorithm_failure_details: str = ""
    received_by_host: str = ""
    sent_at: dt.datetime | None = None
    applied_configuration: JsonObject = attrs.field(factory=dict, hash=False)
    configuration_overrides: JsonObject | None = attrs.field(default=None, hash=False)
    content_hash: str = ""
    tag: str = ""
    api_version: str = ""
    job_uid: str = ""
    parent: ParentRef | None = None
    payload_valid_for: dt.timedelta = dt.timedelta(hours=24)
    #: the shard the run's Job goes to (not an upstream column: upstream never records it,
    #: see `SubmissionEntry`); on the checkpoint so recovery needs no second read per run
    cluster: str = ""
    #: served by its template's warm pool instead of a Job (fixed at creation)
    warm: bool = False
    #: the run's current attempt: a lost lease gives the run back to its queue as the next
    #: one, so a late completion of an earlier attempt can be told apart and refused (a Job
    #: run keeps `stores.signing.JOB_ATTEMPT`)
    attempt: int = 1
    #: the worker (pod name) holding the run's lease, "" = none; only the lease calls of
    #: `CheckpointStore` change it (and a terminal transition, which ends any lease)
    lease_holder: str = ""
    #: when the lease lapses unless renewed; None while nobody holds one
    lease_expires: dt.datetime | None = None


@attrs.frozen
class SubmissionEntry:
    """What the submitter needs to create the run's Job: the manifest and the target shard.

    Upstream never writes `cluster` (contract §4.2), so late resubmission cannot find the shard;
    nexusd stores it.
    """

    algorithm: str
    id: str
    cluster: str
    template: JsonObject = attrs.field(hash=False)


@attrs.frozen
class IdempotencyKey:
    """A client's `Idempotency-Key` as the first run of its request stores it.

    The key covers the whole request (one run, or a whole batch): only the request's first
    accepted run carries it, so the stores need ONE unique index on `(algorithm, key)`; a
    second request with the same key loses the insert and reads this record back instead.
    """

    key: str
    #: hash of the request's canonical content: same key and same fingerprint is a replay
    fingerprint: str
    #: a batch's first answer, one item per run in request order (`{"requestId"}` or
    #: `{"status", "error"}`), so a replay answers it exactly; None for a single run, whose
    #: answer is the run's own id
    answer: list[JsonObject] | None = attrs.field(default=None, hash=False)


@attrs.frozen
class KeyedRun:
    """What a store finds under an idempotency key: the run that carries it, and the key."""

    request_id: str
    idempotency: IdempotencyKey


@attrs.frozen
class NewRun:
    """One run as intake stores it: checkpoint, Job manifest (None for a dry run, which never
    gets a Job) and, when small enough, the payload itself, kept in the same transaction so a
    run costs one durable write (`payloads.inline_max`); the idempotency key goes in the same
    insert."""

    checkpoint: Checkpoint
    submission: SubmissionEntry | None
    payload: bytes | None = None
    idempotency: IdempotencyKey | None = None


@attrs.frozen
class PendingSubmission:
    """What the submitter needs of a run it did not just accept itself (a recovered run): its
    stage and holder, to skip runs that moved on, and its Job manifest, in one read."""

    stage: Stage
    received_by_host: str
    cluster: str
    template: JsonObject = attrs.field(hash=False)


@attrs.frozen
class LeaseKey:
    """One attempt of one run: what a worker names when it renews, releases or reports a run,
    so that nothing it says about an attempt it lost can touch the run's next attempt."""

    algorithm: str
    request_id: str
    attempt: int


@attrs.frozen
class HeldLease:
    """A lease as stored: which attempt of which run `holder` has until `expires`."""

    algorithm: str
    request_id: str
    attempt: int
    holder: str
    expires: dt.datetime

    @property
    def key(self) -> LeaseKey:
        return LeaseKey(algorithm=self.algorithm, request_id=self.request_id, attempt=self.attempt)


@attrs.frozen
class Transition:
    """The outcome of a conditional transition: whether it applied, and the run's stage now
    (the target when it applied, the stage that refused it otherwise)."""

    applied: bool
    stage: Stage
