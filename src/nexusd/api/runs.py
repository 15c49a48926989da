"""Scheduler routes that act on runs: create, cancel, re-tag, and the buffered Job / payload.

Status codes and bodies are upstream's (contract §2.1, 2.5-2.8, §0.1). `blueprint` serves them
under `/algorithm/v1`; `latest` adds the extensions of the unversioned `/algorithm` API (batch
submission), where the app also mounts the v1 routes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from nexusd.api.context import current_context, current_store
from nexusd.api.responses import body, json_response, text
from nexusd.core.errors import NotFound
from nexusd.pipeline.bodies import json_object, string_field
from nexusd.pipeline.cancelling import InvalidCancellation, parse_cancellation
from nexusd.pipeline.intake import IntakeError

if TYPE_CHECKING:
    from nexusd.pipeline.intake import Intake

blueprint = Blueprint("runs", __name__, url_prefix="/algorithm/v1")
latest = Blueprint("runs_latest", __name__, url_prefix="/algorithm")

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


def _refusal(error: IntakeError) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return text(error.status, str(error), headers)


@blueprint.post("/run/<algorithm>")
async def create_run(algorithm: str) -> Response:
    try:
        intake, dry_run = _intake(), _dry_run()
        parsed = await intake.parse(await body())
        request_id = await intake.accept(algorithm=algorithm, request=parsed, dry_run=dry_run)
    except IntakeError as exc:
        return _refusal(exc)
    return json_response(202, {"requestId": request_id})


@latest.post("/batch/<algorithm>")
async def create_runs(algorithm: str) -> Response:
    """Many runs of one algorithm in one request: a JSON array of run bodies. Answers, in
    order, `{"requestId"}` or `{"status", "error"}` per run; 202 when any run was accepted."""
    context = current_context()
    try:
        intake, dry_run = _intake(), _dry_run()
        requests = await intake.parse_batch(await body(), max_runs=context.max_batch_runs)
        results = await intake.accept_batch(algorithm=algorithm, requests=requests, dry_run=dry_run)
    except IntakeError as exc:
        return _refusal(exc)
    items: list[dict[str, Any]] = [
        {"status": result.status, "error": str(result)}
        if isinstance(result, IntakeError)
        else {"requestId": result}
        for result in results
    ]
    refused = [result for result in results if isinstance(result, IntakeError)]
    accepted = len(results) - len(refused)
    status = 202 if accepted else (429 if all(e.status == 429 for e in refused) else 400)
    retry = [e.retry_after for e in refused if e.retry_after]
    response = json_response(status, {"accepted": accepted, "refused": len(refused), "runs": items})
    if retry:
        response.headers["Retry-After"] = str(max(retry))
    return response


@blueprint.post("/cancel/<algorithm>/requests/<request_id>")
async def cancel_run(algorithm: str, request_id: str) -> Response:
    context = current_context()
    assert context.canceller is not None
    try:
        cancellation = parse_cancellation(await body())
    except InvalidCancellation as exc:
        return text(400, str(exc))
    try:
        await context.canceller.cancel(
            algorithm=algorithm, request_id=request_id, request=cancellation
        )
    except NotFound:
        return text(404, f"Provided request with identifier '{request_id}' not found")
    return text(200)


@blueprint.post("/metadata/tags/<algorithm>/requests/<request_id>")
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
async def buffered_run(algorithm: str, request_id: str) -> Response:
    entry = await current_store().get_submission(algorithm=algorithm, request_id=request_id)
    if entry is None:
        return text(400, f"Failed to read buffered metadata for {request_id}")
    return text(200, json.dumps(entry.template, separators=(",", ":")))


@blueprint.get("/payload/<algorithm>/requests/<request_id>")
async def payload(algorithm: str, request_id: str) -> Response:
    checkpoint = await current_store().get(algorithm=algorithm, request_id=request_id)
    if checkpoint is None:
        return text(400, f"Failed to find a run for {request_id}")
    if not checkpoint.payload_uri:
        return text(417, f"Specified request {request_id} does not have a serialized payload")
    return text(302, "", {"Location": checkpoint.payload_uri})
