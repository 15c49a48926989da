"""What warm-pool workers send the scheduler, checked, and what their finished runs become.

The worker protocol (design in `pipeline/leasing.py`) has two requests, both JSON objects:
a lease request `{worker, max, wait}` and a report `{worker, holding, done, release, wait}`.
A malformed one is a `InvalidWorkerRequest` naming the field (the API answers 400 with it);
nothing of a refused request is applied.

A finished attempt (`done`) ends its run through the same compare-and-set as a receiver's
completion, restricted to the reported attempt:
- `completed`: COMPLETED, with the uploaded result's signed URL when the worker uploaded one;
- `failed`: FAILED with the worker's errorCause / errorDetails (a handler's exception);
- `exited`: a command ended. When the algorithm reported to the receiver itself (the Job-mode
  contract) its run is already terminal and nothing changes; otherwise the run FAILS, as the
  maintainer fails a Job that completed without a report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from nexusd.core import metrics
from nexusd.core.errors import NotFound
from nexusd.core.lifecycle import Stage
from nexusd.core.records import LeaseKey
from nexusd.pipeline.bodies import json_object

if TYPE_CHECKING:
    import datetime as dt

    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.payloads import PayloadStore

STATUSES = ("completed", "failed", "exited")
#: The maintainer's words for a Job that ended without a report (maintainer-rules.toml).
NO_REPORT = (
    "Algorithm encountered a fatal error during execution: algorithm exited without "
    "reporting a result."
)
LONGEST_NAME = 253  # a pod name


class InvalidWorkerRequest(ValueError):
    """A worker request the scheduler cannot take; the message names the field."""


@attrs.frozen
class LeaseRequest:
    worker: str
    most: int
    wait: float


@attrs.frozen
class Done:
    request_id: str
    attempt: int
    status: str
    uploaded: bool = False
    error_cause: str = ""
    error_details: str = ""
    exit_code: int = 0


@attrs.frozen
class WorkerReport:
    worker: str
    holding: list[LeaseKey]
    done: list[Done]
    release: list[LeaseKey]
    wait: float


def _invalid(message: str) -> InvalidWorkerRequest:
    return InvalidWorkerRequest(f"Invalid worker request: {message}")


def _worker(document: dict[str, Any]) -> str:
    worker = document.get("worker")
    if not isinstance(worker, str) or not worker or len(worker) > LONGEST_NAME:
        raise _invalid(f"worker must be a name of 1 to {LONGEST_NAME} characters")
    return worker


def _number(document: dict[str, Any], key: str, default: float) -> float:
    value = document.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _invalid(f"{key} must be a number >= 0")
    return float(value)


def parse_lease_request(body: bytes) -> LeaseRequest:
    document = json_object(body, _invalid)
    most = document.get("max", 1)
    if isinstance(most, bool) or not isinstance(most, int) or most < 0:
        raise _invalid("max must be an integer >= 0")
    return LeaseRequest(worker=_worker(document), most=most, wait=_number(document, "wait", 0))


def _attempt_of(item: Any, where: str, algorithm: str) -> LeaseKey:
    if not isinstance(item, dict):
        raise _invalid(f"{where} items must be objects")
    request_id, attempt = item.get("requestId"), item.get("attempt")
    if not isinstance(request_id, str) or not request_id:
        raise _invalid(f"{where}[].requestId must be a non-empty string")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise _invalid(f"{where}[].attempt of {request_id} must be an integer >= 1")
    return LeaseKey(algorithm=algorithm, request_id=request_id, attempt=attempt)


def _list(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise _invalid(f"{key} must be an array")
    return value


def _done(item: Any, algorithm: str) -> Done:
    key = _attempt_of(item, "done", algorithm)
    status = item.get("status")
    if status not in STATUSES:
        raise _invalid(f"done[].status of {key.request_id} must be one of {', '.join(STATUSES)}")
    texts = {name: item.get(name, "") for name in ("errorCause", "errorDetails")}
    if not all(isinstance(value, str) for value in texts.values()):
        raise _invalid(f"done[].errorCause and errorDetails of {key.request_id} must be strings")
    exit_code = item.get("exitCode", 0)
    if isinstance(exit_code, bool) or not isinstance(exit_code, int):
        raise _invalid(f"done[].exitCode of {key.request_id} must be an integer")
    if status == "failed" and not texts["errorCause"]:
        raise _invalid(f"done[].errorCause of failed run {key.request_id} must not be empty")
    return Done(
        request_id=key.request_id,
        attempt=key.attempt,
        status=status,
        uploaded=item.get("uploaded") is True,
        error_cause=texts["errorCause"],
        error_details=texts["errorDetails"],
        exit_code=exit_code,
    )


def parse_report(body: bytes, *, algorithm: str) -> WorkerReport:
    document = json_object(body, _invalid)
    return WorkerReport(
        worker=_worker(document),
        holding=[_attempt_of(item, "holding", algorithm) for item in _list(document, "holding")],
        done=[_done(item, algorithm) for item in _list(document, "done")],
        release=[_attempt_of(item, "release", algorithm) for item in _list(document, "release")],
        wait=_number(document, "wait", 0),
    )


async def record_done(
    store: CheckpointStore,
    payloads: PayloadStore,
    item: Done,
    *,
    algorithm: str,
    result_valid_for: dt.timedelta,
) -> dict[str, str]:
    """End the run of one finished attempt; the worker's answer for it."""
    to, changes = _outcome(payloads, item, algorithm=algorithm, result_valid_for=result_valid_for)
    try:
        outcome = await store.transition(
            algorithm=algorithm,
            request_id=item.request_id,
            to=to,
            changes=changes,
            attempt=item.attempt,
        )
    except NotFound:
        return _answer(item, "refused", f"Run {algorithm}/{item.request_id} not found")
    metrics.completion(outcome, to=to)
    # A run already in the reported stage: this report again (its answer was lost), or the
    # same outcome from a lost attempt; either way the worker has nothing more to do.
    again = outcome.stage is to or (item.status == "exited" and outcome.stage.is_terminal)
    if outcome.applied or again:
        return _answer(item, "recorded", "")
    if outcome.stage.is_terminal:
        return _answer(item, "refused", f"the run had already ended {outcome.stage}")
    return _answer(item, "refused", f"attempt {item.attempt} no longer holds the run (lease lost)")


def _outcome(
    payloads: PayloadStore, item: Done, *, algorithm: str, result_valid_for: dt.timedelta
) -> tuple[Stage, dict[str, Any]]:
    if item.status == "completed":
        uri = (
            payloads.result_url(
                algorithm=algorithm, request_id=item.request_id, valid_for=result_valid_for
            )
            if item.uploaded
            else ""
        )
        return Stage.COMPLETED, {"result_uri": uri}
    if item.status == "failed":
        return Stage.FAILED, {
            "algorithm_failure_cause": item.error_cause,
            "algorithm_failure_details": item.error_details,
        }
    details = (
        f"The algorithm's process exited with code {item.exit_code} without reporting its "
        "outcome to the receiver."
    )
    return Stage.FAILED, {
        "algorithm_failure_cause": NO_REPORT,
        "algorithm_failure_details": details,
    }


def _answer(item: Done, outcome: str, message: str) -> dict[str, str]:
    return {"requestId": item.request_id, "outcome": outcome, "message": message}
