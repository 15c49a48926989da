"""Signed payload and result URLs served by nexusd itself (filesystem payload store).

`GET /data/v1/payloads/{alg}/requests/{id}` serves the payload to the pod; `PUT` and `GET`
`/data/v1/results/{alg}/requests/{id}` take and serve the result. Each URL carries an HMAC
signature over its scope, path and expiry: a missing, tampered or expired signature is 403.

A result can be uploaded only while its run has not ended: once it is COMPLETED (or ended any
other way) an upload is 409, so the URL a pod was given cannot replace the result its client
already read. (S3 presigned PUT URLs, `payloads.kind = "s3"`, cannot be revoked: there the
upload URL works until it expires, `payloads.result_valid_for`.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from quart import Blueprint, Response, request

from nexusd.api.context import current_context, current_store
from nexusd.api.responses import body, text
from nexusd.stores.filesystem import PAYLOAD_GET, RESULT_GET, RESULT_PUT, FilesystemPayloadStore
from nexusd.stores.signing import SignatureError

blueprint = Blueprint("data", __name__, url_prefix="/data/v1")

Reader = Callable[..., Awaitable[bytes | None]]


def _files() -> FilesystemPayloadStore:
    context = current_context()
    assert context.files is not None
    return context.files


def _refused(scope: str) -> Response | None:
    try:
        _files().verify(scope, request.path, dict(request.args))
    except SignatureError as exc:
        return text(403, f"Forbidden: {exc}")
    return None


async def _serve(scope: str, read: Reader, what: str, algorithm: str, request_id: str) -> Response:
    if refused := _refused(scope):
        return refused
    data = await read(algorithm=algorithm, request_id=request_id)
    if data is None:
        return text(404, f"No {what} for {algorithm}/{request_id}")
    return Response(data, status=200, content_type="application/json")


async def _read_payload(*, algorithm: str, request_id: str) -> bytes | None:
    """Small payloads live with their checkpoint (intake stores them inline), others as files."""
    inline = await current_store().get_payload(algorithm=algorithm, request_id=request_id)
    if inline is not None:
        return inline
    return await _files().get_payload(algorithm=algorithm, request_id=request_id)


@blueprint.get("/payloads/<algorithm>/requests/<request_id>")
async def get_payload(algorithm: str, request_id: str) -> Response:
    return await _serve(PAYLOAD_GET, _read_payload, "payload", algorithm, request_id)


@blueprint.put("/results/<algorithm>/requests/<request_id>")
async def put_result(algorithm: str, request_id: str) -> Response:
    if refused := _refused(RESULT_PUT):
        return refused
    checkpoint = await current_store().get(algorithm=algorithm, request_id=request_id)
    if checkpoint is None:
        return text(404, f"Run {algorithm}/{request_id} not found")
    if checkpoint.lifecycle_stage.is_terminal:
        return text(
            409,
            f"Run {algorithm}/{request_id} has already ended "
            f"{checkpoint.lifecycle_stage}; its result can no longer be uploaded",
        )
    files = _files()
    await files.put_result(algorithm=algorithm, request_id=request_id, data=await body())
    location = files.result_url(
        algorithm=algorithm, request_id=request_id, valid_for=current_context().result_valid_for
    )
    return text(201, location, {"Location": location})


@blueprint.get("/results/<algorithm>/requests/<request_id>")
async def get_result(algorithm: str, request_id: str) -> Response:
    return await _serve(RESULT_GET, _files().get_result, "result", algorithm, request_id)
