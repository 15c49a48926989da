"""Signed payload and result URLs served by nexusd itself (filesystem payload store).

`GET /data/v1/payloads/{alg}/requests/{id}` serves the payload to the pod; `PUT` and `GET`
`/data/v1/results/{alg}/requests/{id}` take and serve the result. Each URL carries an HMAC
signature over its scope, path and expiry: a missing, tampered or expired signature is 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, current_app, request

from nexusd.api.responses import body, text
from nexusd.stores.signing import SignatureError

if TYPE_CHECKING:
    from nexusd.api.context import AppContext
    from nexusd.stores.filesystem import FilesystemPayloadStore

blueprint = Blueprint("data", __name__, url_prefix="/data/v1")


def _files() -> FilesystemPayloadStore:
    context: AppContext = current_app.config["NEXUSD"]
    assert context.files is not None
    return context.files


def _refused(scope: str) -> Response | None:
    try:
        _files().verify(scope, request.path, dict(request.args))
    except SignatureError as exc:
        return text(403, f"Forbidden: {exc}")
    return None


@blueprint.get("/payloads/<algorithm>/requests/<request_id>")
async def get_payload(algorithm: str, request_id: str) -> Response:
    if refused := _refused("payload:get"):
        return refused
    data = await _files().get_payload(algorithm=algorithm, request_id=request_id)
    if data is None:
        return text(404, f"No payload for {algorithm}/{request_id}")
    return Response(data, status=200, content_type="application/json")


@blueprint.put("/results/<algorithm>/requests/<request_id>")
async def put_result(algorithm: str, request_id: str) -> Response:
    if refused := _refused("result:put"):
        return refused
    files = _files()
    await files.put_result(algorithm=algorithm, request_id=request_id, data=await body())
    context: AppContext = current_app.config["NEXUSD"]
    location = files.result_url(
        algorithm=algorithm, request_id=request_id, valid_for=context.result_valid_for
    )
    return text(201, location, {"Location": location})


@blueprint.get("/results/<algorithm>/requests/<request_id>")
async def get_result(algorithm: str, request_id: str) -> Response:
    if refused := _refused("result:get"):
        return refused
    data = await _files().get_result(algorithm=algorithm, request_id=request_id)
    if data is None:
        return text(404, f"No result for {algorithm}/{request_id}")
    return Response(data, status=200, content_type="application/json")
