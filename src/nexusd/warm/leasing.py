"""The worker's HTTP client of the scheduler's worker API (`/worker/v1/pools/{alg}/...`).

Two requests, both JSON (the scheduler's side is `nexusd.pipeline.leasing`):
- `lease`: long poll for up to `max` runs; the answer carries what each run needs (its Job's
  args and env, its signed payload and result-upload URLs, its payload when small);
- `report`: finished attempts (`done`), attempts given back unstarted (`release`), and the
  attempts still working (`holding`), whose leases it renews; the answer says which done items
  were recorded and which held runs were cancelled or lost.

Each call here is ONE attempt: a connection error, timeout or 5xx/429 answer is
`SchedulerUnavailable`, which `retrying` retries with capped exponential back-off. The caller
rebuilds a retried report from its current state, so a report after an outage carries what
finished during it, and a done item is dropped only once a report answered 200 for it. Any
other answer (400 bad body, 403 bad token, 404 not a warm template) is `SchedulerRefused`: the
worker cannot go on, and stops with the scheduler's message.
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs
import httpx
import trio

from nexusd.core.errors import NexusdError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Failures in a row after which retries are logged at WARNING again (the first always is).
LOG_EVERY = 10


class WorkerError(NexusdError):
    """The worker cannot serve: the scheduler refused it, or it answered nonsense."""


class SchedulerRefused(WorkerError):
    """A permanent refusal (400, 403, 404): retrying the same request cannot help."""


class SchedulerUnavailable(Exception):
    """A transient failure (connection error, timeout, 429, 5xx): try again later."""


@attrs.frozen
class Attempt:
    """One attempt of one run: what a lease is on."""

    request_id: str
    attempt: int

    def to_json(self) -> dict[str, Any]:
        return {"requestId": self.request_id, "attempt": self.attempt}


@attrs.frozen
class LeasedRun:
    """A run as a lease answer gives it."""

    request_id: str
    attempt: int
    args: tuple[str, ...]
    env: Mapping[str, str]
    payload_uri: str
    result_upload_uri: str
    #: the payload, when the scheduler had it at hand (else GET payload_uri)
    payload: bytes | None

    @property
    def key(self) -> Attempt:
        return Attempt(self.request_id, self.attempt)


@attrs.frozen
class Finished:
    """A finished attempt, as a report's `done` item."""

    request_id: str
    attempt: int
    status: Literal["completed", "failed", "exited"]
    uploaded: bool = False
    error_cause: str = ""
    error_details: str = ""
    exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "requestId": self.request_id,
            "attempt": self.attempt,
            "status": self.status,
        }
        if self.status == "completed":
            item["uploaded"] = self.uploaded
        elif self.status == "failed":
            item["errorCause"] = self.error_cause
            item["errorDetails"] = self.error_details
        else:
            item["exitCode"] = self.exit_code
        return item


@attrs.frozen
class Lease:
    lease_seconds: float
    runs: list[LeasedRun]


@attrs.frozen
class Outcome:
    """The scheduler's answer for one done item: "recorded" or "refused" (with why)."""

    request_id: str
    outcome: str
    message: str


@attrs.frozen
class ReportAnswer:
    lease_seconds: float
    done: list[Outcome]
    #: held runs that were cancelled, and held runs this worker no longer has the lease of
    cancelled: list[str]
    lost: list[str]


@attrs.frozen
class Retry:
    """Back-off between attempts: `base_delay`, doubling up to `max_delay`, with jitter so a
    pool of workers does not come back all at the same instant."""

    base_delay: float = 0.1
    max_delay: float = 10.0

    def delay(self, failures: int) -> float:
        capped = min(self.max_delay, self.base_delay * 2 ** min(failures - 1, 32))
        return random.uniform(capped / 2, capped)


async def retrying(call: Callable[[], Awaitable[T]], *, retry: Retry, what: str) -> T:
    """`call()` until it does not raise SchedulerUnavailable, sleeping `retry`'s back-off."""
    failures = 0
    while True:
        try:
            result = await call()
        except SchedulerUnavailable as exc:
            failures += 1
            level = logging.WARNING if failures % LOG_EVERY == 1 else logging.DEBUG
            logger.log(level, "%s failed (%d in a row), retrying: %s", what, failures, exc)
            await trio.sleep(retry.delay(failures))
            continue
        if failures:
            logger.info("%s succeeded after %d failures", what, failures)
        return result


@attrs.define
class WorkerApi:
    """The worker API of one pool (`algorithm`) as worker `worker`, over `client`."""

    client: httpx.AsyncClient
    scheduler: str
    algorithm: str
    worker: str
    token: str = ""
    #: seconds one request may take beyond the long poll's own wait
    request_timeout: float = 10.0
    #: requests that failed transiently, for tests and logs
    failures: int = 0

    async def lease(self, *, most: int, wait: float) -> Lease:
        """Up to `most` runs, waiting up to `wait` seconds for the first (ONE attempt)."""
        body = {"worker": self.worker, "max": most, "wait": _seconds(wait)}
        document = await self._post("lease", body, wait)
        try:
            runs = [_leased_run(item) for item in document["runs"]]
            return Lease(lease_seconds=float(document["leaseSeconds"]), runs=runs)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise WorkerError(f"the scheduler's lease answer is malformed: {exc!r}") from None

    async def report(
        self,
        *,
        holding: Sequence[Attempt],
        done: Sequence[Finished] = (),
        release: Sequence[Attempt] = (),
        wait: float = 0.0,
    ) -> ReportAnswer:
        """Report finished and released attempts and renew the held ones (ONE attempt)."""
        body = {
            "worker": self.worker,
            "holding": [key.to_json() for key in holding],
            "done": [item.to_json() for item in done],
            "release": [key.to_json() for key in release],
            "wait": _seconds(wait),
        }
        document = await self._post("report", body, wait)
        try:
            return ReportAnswer(
                lease_seconds=float(document["leaseSeconds"]),
                done=[
                    Outcome(item["requestId"], item["outcome"], item.get("message", ""))
                    for item in document.get("done", [])
                ],
                cancelled=[str(request_id) for request_id in document.get("cancelled", [])],
                lost=[str(request_id) for request_id in document.get("lost", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkerError(f"the scheduler's report answer is malformed: {exc!r}") from None

    async def _post(self, action: str, body: dict[str, Any], wait: float) -> Any:
        url = f"{self.scheduler.rstrip('/')}/worker/v1/pools/{self.algorithm}/{action}"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = await self.client.post(
                url, json=body, headers=headers, timeout=self.request_timeout + wait
            )
        except httpx.TransportError as exc:  # refused, reset, timed out...
            self.failures += 1
            raise SchedulerUnavailable(f"POST {url}: {exc!r}") from None
        if response.status_code == 429 or response.status_code >= 500:
            self.failures += 1
            raise SchedulerUnavailable(f"POST {url}: {response.status_code} {response.text}")
        if response.status_code != 200:
            raise SchedulerRefused(
                f"the scheduler refused {action} for pool {self.algorithm!r}: "
                f"{response.status_code} {response.text.strip()}"
            )
        try:
            return response.json()
        except ValueError:
            raise WorkerError(f"the scheduler's {action} answer is not JSON") from None


def _leased_run(item: dict[str, Any]) -> LeasedRun:
    payload = item.get("payload")
    env = item.get("env") or {}
    return LeasedRun(
        request_id=str(item["requestId"]),
        attempt=int(item["attempt"]),
        args=tuple(str(arg) for arg in item.get("args") or ()),
        env={str(name): str(value) for name, value in env.items()},
        payload_uri=str(item.get("payloadUri") or ""),
        result_upload_uri=str(item.get("resultUploadUri") or ""),
        payload=base64.b64decode(payload, validate=True) if payload is not None else None,
    )


def _seconds(value: float) -> float | int:
    """A wait as JSON: whole seconds as an integer."""
    return int(value) if float(value).is_integer() else round(value, 3)
