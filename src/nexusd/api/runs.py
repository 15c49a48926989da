"""Scheduler routes that act on runs: create, cancel, re-tag, and the buffered Job / payload.

Status codes and bodies are upstream's (contract §2.1, 2.5-2.8, §0.1).
"""

from __future__ import annotations

import json

from quart import Blueprint, Response, request

from nexusd.api.context import current_context
from nexusd.api.responses import body, json_response, text
from nexusd.core.errors import NotFound
from nexusd.pipeline.bodies import json_object, string_field
from nexusd.pipeline.cancelling import InvalidCancellation, parse_cancellation
from nexusd.pipeline.intake import IntakeError

blueprint = Blueprint("runs", __name__, url_prefix="/algorithm/v1")


@blueprint.post("/run/<algorithm>")
async def create_run(algorithm: str) -> Response:
    context = current_context()
    if not context.readiness.accepting or context.intake is None:
        return text(503, "This scheduler is shutting down; please retry.", {"Retry-After": "1"})
    try:
        request_id = await context.intake.accept(
            algorithm=algorithm, body=await body(), dry_run=request.args.get("dryRun") == "true"
        )
    except IntakeError as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return text(exc.status, str(exc), headers)
    return json_response(202, {"requestId": request_id})


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
    updated = await current_context().store.update_tag(
        algorithm=algorithm, request_id=request_id, tag=new_tag
    )
    if updated is None:
        return text(404, f"Checkpoint {request_id}/{algorithm} not found")
    return json_response(200, {})


@blueprint.get("/buffer/<algorithm>/requests/<request_id>")
async def buffered_run(algorithm: str, request_id: str) -> Response:
    entry = await current_context().store.get_submission(algorithm=algorithm, request_id=request_id)
    if entry is None:
        return text(400, f"Failed to read buffered metadata for {request_id}")
    return text(200, json.dumps(entry.template, separators=(",", ":")))


@blueprint.get("/payload/<algorithm>/requests/<request_id>")
async def payload(algorithm: str, request_id: str) -> Response:
    checkpoint = await current_context().store.get(algorithm=algorithm, request_id=request_id)
    if checkpoint is None:
        return text(400, f"Failed to find a run for {request_id}")
    if not checkpoint.payload_uri:
        return text(417, f"Specified request {request_id} does not have a serialized payload")
    return text(302, "", {"Location": checkpoint.payload_uri})
