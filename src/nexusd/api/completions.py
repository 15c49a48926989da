"""Receiver routes: the algorithm reports its outcome, and asks whether it was processed.

`complete` answers 202 `{}` once the report is durable (upstream answers before processing and
then drops reports for unknown runs silently; here an unknown run is a 404 the caller can see).
With completion tokens on, both routes need the run's token, which its pod's receiver URL
carries (`/t/<token>/algorithm/...`, stripped by `nexusd.api.auth.protect`): 403 without it. A
report for a run that already ended differently is a 409 saying so
(`nexusd.pipeline.completing`).
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from nexusd.api import schemas
from nexusd.api.auth import completion_token
from nexusd.api.context import current_context
from nexusd.api.openapi import json_answer, operation, text_answer
from nexusd.api.responses import body, json_response, text
from nexusd.core.errors import NotFound
from nexusd.pipeline.completing import (
    AlreadyFinished,
    CompletionRefused,
    InvalidReport,
    parse_report,
)

#: Mounted under every API version by `nexusd.api.versions` (the old Go receiver client calls
#: /algorithm/v1.2/complete/...).
blueprint = Blueprint("completions", __name__)


@blueprint.post("/complete/<algorithm>/requests/<request_id>")
@operation(
    summary="The algorithm reports its outcome: COMPLETED with resultUri, or FAILED.",
    description="Idempotent: the same report for a run already finished is answered 202 "
    "again; a different one is 409 and changes nothing.",
    tag="completions",
    body=schemas.ALGORITHM_RESULT,
    responses={
        202: json_answer("The report is durable", schemas.EMPTY_OBJECT),
        400: text_answer("The body is not a valid AlgorithmResult"),
        403: text_answer("The URL does not carry the run's completion token"),
        404: text_answer("No such run"),
        409: text_answer("The run had already ended otherwise; the report was not recorded"),
    },
)
async def complete_run(algorithm: str, request_id: str) -> Response:
    completer = current_context().completer
    assert completer is not None
    try:
        report = parse_report(await body())
    except InvalidReport as exc:
        return text(400, str(exc))
    try:
        await completer.complete(
            algorithm=algorithm,
            request_id=request_id,
            report=report,
            token=completion_token(request.scope),
        )
    except CompletionRefused as exc:
        return text(403, str(exc))
    except AlreadyFinished as exc:
        return text(409, str(exc))
    # ValueError: a name no run can have, which the payload files cannot hold (check_name)
    except (NotFound, ValueError):
        return text(404, f"Run {algorithm}/{request_id} not found")
    return json_response(202, {})


@blueprint.get("/check/<algorithm>/requests/<request_id>")
@operation(
    summary="Whether the run is in a terminal stage.",
    tag="completions",
    responses={
        200: json_answer("The verdict", schemas.PROCESSED),
        403: text_answer("The URL does not carry the run's completion token"),
        404: text_answer("No such run"),
    },
)
async def check_run(algorithm: str, request_id: str) -> Response:
    completer = current_context().completer
    assert completer is not None
    try:
        processed = await completer.is_processed(
            algorithm=algorithm, request_id=request_id, token=completion_token(request.scope)
        )
    except CompletionRefused as exc:
        return text(403, str(exc))
    except NotFound:
        return text(404, f"Run {algorithm}/{request_id} not found")
    return json_response(200, {"is_processed": processed})
