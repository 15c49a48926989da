"""Scheduler routes that read runs: result, results by tag, metadata (contract §2.2-2.4).

An unknown run is 400 text/plain, as released upstream answers: the Go SDK keeps polling on
400 (possible submission lag) but gives up on 404, and its metadata decoder crashes on a
text/plain 404 (contract §0.1).
"""

from __future__ import annotations

from quart import Blueprint, Response

from nexusd.api import schemas
from nexusd.api.context import current_store
from nexusd.api.openapi import json_answer, operation, text_answer
from nexusd.api.responses import json_response, text
from nexusd.pipeline.results import metadata, request_result, tagged_result

#: Mounted under every API version by `nexusd.api.versions`.
blueprint = Blueprint("results", __name__)
_UNKNOWN = text_answer("No such run (400, not 404: the SDKs keep polling on 400)")


@blueprint.get("/results/<algorithm>/requests/<request_id>")
@operation(
    summary="The run's stage, and its result URI or error message once it ended.",
    tag="results",
    responses={200: json_answer("The run", schemas.REQUEST_RESULT), 400: _UNKNOWN},
)
async def run_result(algorithm: str, request_id: str) -> Response:
    checkpoint = await current_store().get(algorithm=algorithm, request_id=request_id)
    if checkpoint is None:
        return text(400, f"Failed to read results for {request_id}")
    return json_response(200, request_result(checkpoint))


@blueprint.get("/results/tags/<path:tag>")  # a tag may hold "/"
@operation(
    summary="Every run submitted with the tag ([] for none).",
    tag="results",
    responses={200: json_answer("The runs of the tag", schemas.TAGGED_RESULTS)},
)
async def tagged_results(tag: str) -> Response:
    runs = await current_store().by_tag(tag=tag)
    return json_response(200, [tagged_result(checkpoint) for checkpoint in runs])


@blueprint.get("/metadata/<algorithm>/requests/<request_id>")
@operation(
    summary="The run's checkpoint, with upstream's snake_case field names.",
    tag="results",
    responses={200: json_answer("The checkpoint", schemas.METADATA), 400: _UNKNOWN},
)
async def run_metadata(algorithm: str, request_id: str) -> Response:
    checkpoint = await current_store().get(algorithm=algorithm, request_id=request_id)
    if checkpoint is None:
        return text(400, f"Failed to read metadata for {request_id}")
    return json_response(200, metadata(checkpoint))
