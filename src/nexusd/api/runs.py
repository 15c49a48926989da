"""Scheduler routes that act on runs: create, cancel, re-tag, and the buffered Job / payload.

Status codes and bodies are upstream's (contract §2.1, 2.5-2.8, §0.1). `blueprint` holds the
routes of every API version; `latest` the experimental extensions (batch submission), which
only the unversioned `/algorithm` API serves. `nexusd.api.versions` mounts both under each
version's prefix; each `@operation` declares the route for the OpenAPI documents.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from nexusd.api import schemas
from nexusd.api.context import current_context, current_store
from nexusd.api.openapi import Answer, json_answer, link, operation, text_answer
from nexusd.api.responses import body, json_response, text
from nexusd.api.versions import current_version
from nexusd.core.errors import NotFound
from nexusd.core.lifecycle import Stage
from nexusd.kube.manifests import redacted_job
from nexusd.pipeline import idempotency
from nexusd.pipeline.bodies import json_object, string_field
from nexusd.pipeline.cancelling import InvalidCancellation, parse_cancellation
from nexusd.pipeline.intake import IntakeError, batch_items

if TYPE_CHECKING:
    from nexusd.pipeline.intake import Intake

#: Set (to "true") on an answer given again for a retry with the same Idempotency-Key.
REPLAYED_HEADER = "Idempotent-Replayed"

blueprint = Blueprint("runs", __name__)
latest = Blueprint("runs_latest", __name__)

#: Go's `strconv.ParseBool` spellings: what a Go client's `dryRun` can look like.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False", ""})


def _dry_run() -> bool:
    value = request.args.get("dryRun", "")
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise IntakeError(f"Query parameter dryRun must be true or false, not {value!r}")


def _intake() -> Intake:
    context = current_context()
    if not context.readiness.accepting or context.intake is None:
        raise IntakeError(
            "This scheduler is shutting down; please retry.", status=503, retry_after=1
        )
    return context.intake


def _idempotency_key() -> str | None:
    """The `Idempotency-Key` header, honoured on the latest API only: under `/algorithm/v1`
    and `/algorithm/v1.2` the SDK contract has no such header, and it is ignored there."""
    version = current_version()
    if version is None or not version.experimental:
        return None
    return idempotency.parse_key(
        request.headers.get(idempotency.HEADER),
        longest=current_context().max_idempotency_key,
    )


def _replayed(response: Response, replayed: bool) -> Response:
    """Mark an earlier request's answer, given again for a retry with the same key."""
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return response


def _refusal(error: IntakeError) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return text(error.status, str(error), headers)


_REFUSED = text_answer(
    "The run cannot be accepted: invalid JSON or field (named), unknown algorithm or "
    "workgroup, bad override or payloadValidFor, dryRun not a boolean, a pod no node fits"
)
_QUEUE_FULL = text_answer("The virtual queue is full", retry_after=True)
_SHUTTING_DOWN = text_answer("This scheduler is shutting down", retry_after=True)
#: Where the requestId of an accepted run leads (OpenAPI links of the 202).
_RUN_LINKS = {
    name: link(
        operation_id,
        description,
        algorithm="$request.path.algorithm",
        request_id="$response.body#/requestId",
    )
    for name, operation_id, description in [
        ("result", "run_result", "Poll the run's stage and result"),
        ("metadata", "run_metadata", "Read the run's checkpoint"),
        ("buffer", "buffered_run", "Read the run's Job manifest"),
        ("payload", "payload", "Follow to the run's payload"),
        ("cancel", "cancel_run", "Cancel the run"),
        ("retag", "update_tag", "Give the run a new tag"),
    ]
}
_REPLAYED = Answer(
    description="",
    headers={
        REPLAYED_HEADER: {
            "description": "true when this is the answer to an earlier request with the same "
            "Idempotency-Key, given again (nothing new was submitted)",
            "schema": {"type": "string", "const": "true"},
        }
    },
)
_IDEMPOTENCY_CONFLICT = text_answer(
    "The Idempotency-Key was used before with a different body (the message names the key)"
)


@blueprint.post("/run/<algorithm>")
@operation(
    summary="Submit a run of the algorithm.",
    description="The run is durable (payload, checkpoint, Job manifest) and queued when "
    "this answers 202; it is readable under /results from then on.",
    tag="runs",
    parameters=[schemas.DRY_RUN],
    body=schemas.ALGORITHM_REQUEST,
    responses={
        202: json_answer("Accepted", schemas.REQUEST_ID, **_RUN_LINKS),
        400: _REFUSED,
        429: _QUEUE_FULL,
        503: _SHUTTING_DOWN,
    },
    experimental_parameters=[schemas.IDEMPOTENCY_KEY],
    experimental_responses={202: _REPLAYED, 409: _IDEMPOTENCY_CONFLICT},
)
async def create_run(algorithm: str) -> Response:
    replayed = False
    try:
        intake, dry_run, key = _intake(), _dry_run(), _idempotency_key()
        raw = await body()
        parsed = await intake.parse(raw)
        if key is None:
            request_id = await intake.accept(algorithm=algorithm, request=parsed, dry_run=dry_run)
        else:
            request_id, replayed = await idempotency.accept_once(
                intake,
                algorithm=algorithm,
                request=parsed,
                dry_run=dry_run,
                idempotency=await idempotency.key_for(
                    intake, key, raw, route="run", dry_run=dry_run
                ),
            )
    except IntakeError as exc:
        return _refusal(exc)
    return _replayed(json_response(202, {"requestId": request_id}), replayed)


@latest.post("/batch/<algorithm>")
@operation(
    summary="Submit many runs of the algorithm in one request (experimental).",
    description="Answers, in order, {requestId} or {status, error} per run; every run "
    "accepted is stored in one transaction.",
    tag="runs",
    parameters=[schemas.DRY_RUN],
    body=schemas.BATCH_REQUEST,
    responses={
        202: json_answer("At least one run was accepted", schemas.BATCH_RESULT),
        400: json_answer("No run was accepted", schemas.BATCH_RESULT)
        | text_answer("The body is not a JSON array of runs, or empty, or dryRun is bad"),
        413: text_answer("More runs than http.max_batch_runs"),
        429: json_answer("Every run was refused for a full queue", schemas.BATCH_RESULT)
        | _QUEUE_FULL,
        503: _SHUTTING_DOWN,
    },
    experimental_parameters=[schemas.IDEMPOTENCY_KEY],
    experimental_responses={202: _REPLAYED, 409: _IDEMPOTENCY_CONFLICT},
)
async def create_runs(algorithm: str) -> Response:
    """Many runs of one algorithm in one request: a JSON array of run bodies. Answers, in
    order, `{"requestId"}` or `{"status", "error"}` per run; 202 when any run was accepted."""
    context = current_context()
    replayed = False
    try:
        intake, dry_run, key = _intake(), _dry_run(), _idempotency_key()
        raw = await body()
        requests = await intake.parse_batch(raw, max_runs=context.max_batch_runs)
        if key is None:
            results = await intake.accept_batch(
                algorithm=algorithm, requests=requests, dry_run=dry_run
            )
        else:
            results, replayed = await idempotency.accept_batch_once(
                intake,
                algorithm=algorithm,
                requests=requests,
                dry_run=dry_run,
                idempotency=await idempotency.key_for(
                    intake, key, raw, route="batch", dry_run=dry_run
                ),
            )
    except IntakeError as exc:
        return _refusal(exc)
    items = batch_items(results)
    refused = [result for result in results if isinstance(result, IntakeError)]
    accepted = len(results) - len(refused)
    status = 202 if accepted else (429 if all(e.status == 429 for e in refused) else 400)
    retry = [e.retry_after for e in refused if e.retry_after]
    response = json_response(status, {"accepted": accepted, "refused": len(refused), "runs": items})
    if retry:
        response.headers["Retry-After"] = str(max(retry))
    return _replayed(response, replayed)


@blueprint.post("/cancel/<algorithm>/requests/<request_id>")
@operation(
    summary="Cancel a run: CANCELLED, and its Job deleted with the cancellationPolicy.",
    tag="runs",
    body=schemas.CANCELLATION_REQUEST,
    responses={
        200: text_answer(
            "Cancelled (an empty text/plain body, as the SDK expects), or a text saying it "
            "was cancelled already"
        ),
        400: text_answer("The body is not a valid CancellationRequest"),
        404: text_answer("No such run"),
        409: text_answer("The run had already ended otherwise; it was not cancelled"),
    },
)
async def cancel_run(algorithm: str, request_id: str) -> Response:
    context = current_context()
    assert context.canceller is not None
    try:
        cancellation = parse_cancellation(await body())
    except InvalidCancellation as exc:
        return text(400, str(exc))
    try:
        outcome = await context.canceller.cancel(
            algorithm=algorithm, request_id=request_id, request=cancellation
        )
    except NotFound:
        return text(404, f"Provided request with identifier '{request_id}' not found")
    # A run that had ended: cancelled already is success again, anything else a conflict.
    if not outcome.applied and outcome.stage is Stage.CANCELLED:
        return text(200, f"Run {algorithm}/{request_id} was already cancelled")
    if not outcome.applied:
        return text(
            409, f"Run {algorithm}/{request_id} had already ended {outcome.stage}; not cancelled"
        )
    return text(200)


@blueprint.post("/metadata/tags/<algorithm>/requests/<request_id>")
@operation(
    summary="Give a run a new tag.",
    tag="runs",
    body=schemas.TAG_UPDATE,
    responses={
        200: json_answer("Re-tagged", schemas.EMPTY_OBJECT),
        400: text_answer("The body is not a valid tag update"),
        404: text_answer("No such run"),
    },
)
async def update_tag(algorithm: str, request_id: str) -> Response:
    def invalid(message: str) -> ValueError:
        return ValueError(f"Tag update payload is invalid: {message}")

    try:
        document = json_object(await body(), invalid)
        if "newTag" not in document:
            raise invalid("newTag is required")
        new_tag = string_field(document, "newTag", invalid)
    except ValueError as exc:
        return text(400, str(exc))
    updated = await current_store().update_tag(
        algorithm=algorithm, request_id=request_id, tag=new_tag
    )
    if updated is None:
        return text(404, f"Checkpoint {request_id}/{algorithm} not found")
    return json_response(200, {})


@blueprint.get("/buffer/<algorithm>/requests/<request_id>")
@operation(
    summary="The run's Job manifest as stored for submission.",
    tag="runs",
    responses={
        200: text_answer("The Job manifest: JSON, sent as text/plain (as the Go SDK expects)"),
        400: text_answer("No stored Job manifest for the run"),
    },
)
async def buffered_run(algorithm: str, request_id: str) -> Response:
    entry = await current_store().get_submission(algorithm=algorithm, request_id=request_id)
    if entry is None:
        return text(400, f"Failed to read buffered metadata for {request_id}")
    # Without the URLs and the token that give access to the run's data and outcome.
    return text(200, json.dumps(redacted_job(entry.template), separators=(",", ":")))


@blueprint.get("/payload/<algorithm>/requests/<request_id>")
@operation(
    summary="Redirect to the run's payload URL.",
    tag="runs",
    responses={
        302: text_answer(
            "To the signed payload URL (empty body)",
            Location={"description": "The payload URL", "schema": {"type": "string"}},
        ),
        400: text_answer("No such run"),
        417: text_answer("The run has no stored payload yet"),
    },
)
async def payload(algorithm: str, request_id: str) -> Response:
    checkpoint = await current_store().get(algorithm=algorithm, request_id=request_id)
    if checkpoint is None:
        return text(400, f"Failed to find a run for {request_id}")
    if not checkpoint.payload_uri:
        return text(417, f"Specified request {request_id} does not have a serialized payload")
    return text(302, "", {"Location": checkpoint.payload_uri})
