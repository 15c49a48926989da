"""Results: how a run reads to clients, in upstream's exact JSON shapes (contract §2.2-2.4).

Rules that keep the published SDKs working (contract §0.1): every key of a RequestResult is
always present, no value is ever JSON null (empty strings and omitted keys instead), timestamps
are RFC 3339 UTC with milliseconds in one fixed format (the Go SDK compares them as strings).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from nexusd.core.durations import format_go_duration
from nexusd.core.lifecycle import Stage

if TYPE_CHECKING:
    from nexusd.core.records import Checkpoint

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
_ERROR_STAGES = frozenset(
    {Stage.FAILED, Stage.CANCELLED, Stage.SCHEDULING_FAILED, Stage.DEADLINE_EXCEEDED}
)


def rfc3339(value: dt.datetime | None) -> str:
    if value is None:
        return GO_ZERO_TIME
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def request_result(checkpoint: Checkpoint) -> dict[str, str]:
    """`GET /results/{alg}/requests/{id}`: the result URI only when COMPLETED, the error only
    when the run ended in failure."""
    stage = checkpoint.lifecycle_stage
    return {
        "requestId": checkpoint.id,
        "status": str(stage),
        "resultUri": checkpoint.result_uri if stage is Stage.COMPLETED else "",
        "runErrorMessage": checkpoint.algorithm_failure_cause if stage in _ERROR_STAGES else "",
    }


def tagged_result(checkpoint: Checkpoint) -> dict[str, str]:
    """`GET /results/tags/{tag}`: upstream copies both fields verbatim in every stage."""
    return {
        "requestId": checkpoint.id,
        "algorithmName": checkpoint.algorithm,
        "status": str(checkpoint.lifecycle_stage),
        "resultUri": checkpoint.result_uri,
        "runErrorMessage": checkpoint.algorithm_failure_cause,
    }


def metadata(checkpoint: Checkpoint) -> dict[str, Any]:
    """`GET /metadata/{alg}/requests/{id}`: the checkpoint with upstream's snake_case keys."""
    document: dict[str, Any] = {
        "algorithm": checkpoint.algorithm,
        "id": checkpoint.id,
        "lifecycle_stage": str(checkpoint.lifecycle_stage),
        "payload_uri": checkpoint.payload_uri,
        "result_uri": checkpoint.result_uri,
        "algorithm_failure_cause": checkpoint.algorithm_failure_cause,
        "algorithm_failure_details": checkpoint.algorithm_failure_details,
        "received_by_host": checkpoint.received_by_host,
        "received_at": rfc3339(checkpoint.received_at),
        "sent_at": rfc3339(checkpoint.sent_at),
        "applied_configuration": checkpoint.applied_configuration,
        "content_hash": checkpoint.content_hash,
        "last_modified": rfc3339(checkpoint.last_modified),
        "api_version": checkpoint.api_version,
    }
    if checkpoint.configuration_overrides is not None:
        document["configuration_overrides"] = checkpoint.configuration_overrides
    if checkpoint.tag:
        document["tag"] = checkpoint.tag
    if checkpoint.job_uid:
        document["job_uid"] = checkpoint.job_uid
    if checkpoint.parent is not None:
        document["parent"] = {
            "requestId": checkpoint.parent.request_id,
            "algorithmName": checkpoint.parent.algorithm_name,
        }
    document["payload_valid_for"] = format_go_duration(checkpoint.payload_valid_for)
    return document
