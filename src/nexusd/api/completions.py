"""Receiver routes: the algorithm reports its outcome, and asks whether it was processed.

`complete` answers 202 `{}` once the report is durable (upstream answers before processing and
then drops reports for unknown runs silently; here an unknown run is a 404 the caller can see).
"""

from __future__ import annotations

from quart import Blueprint, Response

from nexusd.api.context import current_context
from nexusd.api.responses import body, json_response, text
from nexusd.core.errors import NotFound
from nexusd.pipeline.completing import InvalidReport, parse_report

blueprint = Blueprint("completions", __name__, url_prefix="/algorithm/v1")


@blueprint.post("/complete/<algorithm>/requests/<request_id>")
async def complete_run(algorithm: str, request_id: str) -> Response:
    completer = current_context().completer
    assert completer is not None
    try:
        report = parse_report(await body())
    except InvalidReport as exc:
        return text(400, str(exc))
    try:
        await completer.complete(algorithm=algorithm, request_id=request_id, report=report)
    except NotFound:
        return text(404, f"Run {algorithm}/{request_id} not found")
    return json_response(202, {})


@blueprint.get("/check/<algorithm>/requests/<request_id>")
async def check_run(algorithm: str, request_id: str) -> Response:
    completer = current_context().completer
    assert completer is not None
    try:
        processed = await completer.is_processed(algorithm=algorithm, request_id=request_id)
    except NotFound:
        return text(404, f"Run {algorithm}/{request_id} not found")
    return json_response(200, {"is_processed": processed})
