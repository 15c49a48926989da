"""In-process mode: a Python function serves each run, with no process start per run.

    def handler(run: WarmRun) -> bytes | str | dict | list | None      (or `async def`)

The worker gives the handler the run's payload (inline from the lease when the scheduler had it,
else fetched from its signed payload URL) and turns what it returns into the run's outcome
(a download or upload that fails transiently, connection errors, 429 and 5xx, is retried with
the worker's back-off until it works or the run is cancelled or lost; other refusals fail it):
- bytes, str, or a JSON value (dict, list): PUT to the run's result-upload URL, then the run is
  reported `completed` with `uploaded: true` (its result URL then downloads it);
- None: `completed` without a result;
- an exception: `failed`, errorCause = the exception's type name, errorDetails = its message.

A sync handler runs in a thread (`trio.to_thread.run_sync`), at most `concurrency` at once; an
async one is awaited in the worker's trio loop. A cancelled run's async handler is cancelled; a
sync one cannot be interrupted, so its thread finishes on its own and its result is dropped
(its thread still counts against `concurrency` until then).
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

from nexusd.core.errors import ConfigError
from nexusd.warm.leasing import Finished, Retry, SchedulerUnavailable, retrying

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from nexusd.warm.leasing import LeasedRun

logger = logging.getLogger(__name__)

PAYLOAD_UNAVAILABLE = "PayloadUnavailable"
RESULT_NOT_UPLOADED = "ResultNotUploaded"
UNSUPPORTED_RESULT = "UnsupportedResult"

Handler = Callable[["WarmRun"], Any]


@attrs.frozen
class WarmRun:
    """One run as a handler sees it."""

    request_id: str
    algorithm: str
    attempt: int
    payload: bytes
    #: the run's own environment (as its Job's container would have had it): its receiver
    #: URL, NEXUS__ALGORITHM_NAME, the template's plain env values...
    env: Mapping[str, str] = attrs.Factory(dict)

    def payload_json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


def load_handler(path: str) -> Handler:
    """The function named by "package.module:function" (a ConfigError naming what is wrong)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"worker.handler: expected module:function, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"worker.handler: cannot import {module_name!r}: {exc}") from None
    target: Any = module
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise ConfigError(f"worker.handler: {module_name!r} has no {attribute!r}") from None
    if not callable(target):
        raise ConfigError(f"worker.handler: {path} is not callable")
    handler: Handler = target
    return handler


@attrs.define
class HandlerExecutor:
    """Serves runs of `algorithm` by calling `handler`; `client` fetches payloads and uploads
    results (the runs' signed URLs: no credentials of the worker's own)."""

    handler: Handler
    algorithm: str
    client: httpx.AsyncClient
    concurrency: int = 1
    request_timeout: float = 10.0
    retry: Retry = attrs.field(factory=Retry)
    limiter: trio.CapacityLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.limiter = trio.CapacityLimiter(self.concurrency)

    async def __call__(self, run: LeasedRun, started: Callable[[], None]) -> Finished:
        payload = run.payload
        if payload is None:
            try:
                payload = await self._fetch(run.payload_uri)
            except _TransferError as exc:
                return _failed(run, PAYLOAD_UNAVAILABLE, str(exc))
        warm = WarmRun(
            request_id=run.request_id,
            algorithm=self.algorithm,
            attempt=run.attempt,
            payload=payload,
            env=run.env,
        )
        started()
        try:
            if inspect.iscoroutinefunction(self.handler):
                value = await self.handler(warm)
            else:
                value = await trio.to_thread.run_sync(
                    self.handler, warm, limiter=self.limiter, abandon_on_cancel=True
                )
        except Exception as exc:  # the handler's failure is the run's outcome
            logger.info(
                "run %s failed: %r", run.request_id, exc, extra={"request_id": run.request_id}
            )
            return _failed(run, type(exc).__name__, str(exc))
        if value is None:
            return Finished(request_id=run.request_id, attempt=run.attempt, status="completed")
        try:
            body, content_type = _encode(value)
        except TypeError as exc:
            return _failed(run, UNSUPPORTED_RESULT, str(exc))
        try:
            await self._upload(run.result_upload_uri, body, content_type)
        except _TransferError as exc:
            return _failed(run, RESULT_NOT_UPLOADED, str(exc))
        return Finished(
            request_id=run.request_id, attempt=run.attempt, status="completed", uploaded=True
        )

    async def _fetch(self, url: str) -> bytes:
        if not url:
            raise _TransferError("the lease gave neither the payload nor its URL")

        async def attempt() -> httpx.Response:
            return _checked(
                "GET payload", await _transfer(self.client.get(url, timeout=self.request_timeout))
            )

        response = await retrying(attempt, retry=self.retry, what="payload download")
        return response.content

    async def _upload(self, url: str, body: bytes, content_type: str) -> None:
        if not url:
            raise _TransferError("the lease gave no result upload URL")

        async def attempt() -> httpx.Response:
            sent = self.client.put(
                url,
                content=body,
                headers={"Content-Type": content_type},
                timeout=self.request_timeout,
            )
            return _checked("PUT result", await _transfer(sent))

        await retrying(attempt, retry=self.retry, what="result upload")


async def _transfer(sent: Awaitable[httpx.Response]) -> httpx.Response:
    try:
        return await sent
    except httpx.TransportError as exc:
        raise SchedulerUnavailable(repr(exc)) from None


def _checked(what: str, response: httpx.Response) -> httpx.Response:
    """Transient answers (429, 5xx) are retried; other refusals fail the run."""
    if response.status_code == 429 or response.status_code >= 500:
        raise SchedulerUnavailable(f"{what}: {response.status_code}")
    if response.status_code not in (200, 201, 204):
        raise _TransferError(f"{what}: {response.status_code} {response.text[:200]}")
    return response


class _TransferError(Exception):
    """A payload download or result upload failed (its message says how)."""


def _encode(value: Any) -> tuple[bytes, str]:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), "application/octet-stream"
    if isinstance(value, str):
        return value.encode(), "text/plain; charset=utf-8"
    if isinstance(value, dict | list):
        return json.dumps(value).encode(), "application/json"
    raise TypeError(
        f"a handler returns bytes, str, a dict or list (JSON) or None, not {type(value).__name__}"
    )


def _failed(run: LeasedRun, cause: str, details: str) -> Finished:
    return Finished(
        request_id=run.request_id,
        attempt=run.attempt,
        status="failed",
        error_cause=cause,
        error_details=details,
    )
