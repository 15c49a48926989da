"""Completing: the receiver's side of a run, `POST /algorithm/v1/complete/{alg}/requests/{id}`.

Input: the algorithm's report `{resultUri, errorCause, errorDetails}`.
Output: the run is COMPLETED (empty `errorCause`, upstream's success convention) with its result
URI, or FAILED with the cause and details.
Transition: any non-terminal stage -> COMPLETED / FAILED, conditional, so a report for a run
that already finished (a retry of the SDK, a maintainer verdict) changes nothing, and a report
that overtakes the submitter's RUNNING write still lands (BUFFERED -> COMPLETED is legal).
When the algorithm uploaded its result through `NEXUS__RESULT_UPLOAD_URL` and reports no
`resultUri`, the run's result URI is a signed download URL of that upload.

Who may report: with completion tokens on (`auth.completion_tokens`), only the holder of the
run's token, which only its pod was given (inside its receiver URL, `nexusd.api.auth`); a report
without it, or with another run's or attempt's, is `CompletionRefused` (403) and changes nothing.

A report for a run that already ended: the same outcome again (the SDK retrying, a pod
restarted after reporting) is accepted as it was the first time (202 `{}`, which the SDK
requires); a different one (a result for a run cancelled meanwhile, or failed by the
maintainer, or a second, different result) is `AlreadyFinished` (409 naming the stage), so the
sender can tell that its report was dropped. The published SDK ignores the 409 and then asks
`check`, which answers `is_processed: true`.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import attrs

from nexusd.core import metrics
from nexusd.core.errors import NotFound
from nexusd.core.lifecycle import Stage
from nexusd.pipeline.bodies import json_object, string_field
from nexusd.stores.signing import attempt_of

if TYPE_CHECKING:
    from nexusd.core.records import Checkpoint, Transition
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.payloads import PayloadStore
    from nexusd.stores.signing import CompletionTokens


class InvalidReport(ValueError):
    """The completion body is not an AlgorithmResult; the message says why."""


class CompletionRefused(Exception):
    """The request does not carry the run's completion token (403); the message says why."""


class AlreadyFinished(Exception):
    """The run ended before this (different) report arrived, which was not recorded (409)."""


@attrs.frozen
class Report:
    result_uri: str
    error_cause: str
    error_details: str


def parse_report(body: bytes) -> Report:
    def invalid(message: str) -> InvalidReport:
        return InvalidReport(f"Submitted result is invalid: {message}")

    document = json_object(body, invalid)
    return Report(
        result_uri=string_field(document, "resultUri", invalid),
        error_cause=string_field(document, "errorCause", invalid),
        error_details=string_field(document, "errorDetails", invalid),
    )


@attrs.define
class Completer:
    store: CheckpointStore
    payloads: PayloadStore
    result_valid_for: float
    #: None: completion tokens are off, anyone who reaches the receiver may report
    tokens: CompletionTokens | None = None

    async def complete(
        self, *, algorithm: str, request_id: str, report: Report, token: str | None = None
    ) -> Transition:
        """Record the report sent with `token` (None: the URL carried none); raises
        `CompletionRefused`, `NotFound` for an unknown run, or `AlreadyFinished`."""
        attempt = self.check_token(algorithm=algorithm, request_id=request_id, token=token)
        transition = await self._record(
            algorithm=algorithm, request_id=request_id, report=report, attempt=attempt
        )
        if not transition.applied:
            checkpoint = await self.store.get(algorithm=algorithm, request_id=request_id)
            if checkpoint is not None and attempt not in (None, checkpoint.attempt):
                raise AlreadyFinished(
                    f"Attempt {attempt} of run {algorithm}/{request_id} no longer holds it "
                    f"(its lease was lost; the run is attempt {checkpoint.attempt} now); this "
                    "report was not recorded"
                )
            if checkpoint is not None and not _same_outcome(checkpoint, report):
                raise AlreadyFinished(_ended(checkpoint))
        return transition

    def check_token(self, *, algorithm: str, request_id: str, token: str | None) -> int | None:
        """The attempt `token` completes (None: tokens are off, any attempt may), or raise
        `CompletionRefused` unless it is the token of one of the run's attempts. A Job-mode
        run has one attempt; a warm run one per lease (`CompletionTokens.attempt_token`)."""
        if self.tokens is None:
            return None
        if token is None:
            raise CompletionRefused(
                f"Forbidden: the URL carries no completion token of run {algorithm}/"
                f"{request_id}; report to the NEXUS__CLIENT__RECEIVER URL its pod was given"
            )
        attempt = attempt_of(token)
        mac = token.rpartition(".")[2]
        if not attempt or not self.tokens.matches(
            mac, algorithm=algorithm, request_id=request_id, attempt=attempt
        ):
            raise CompletionRefused(
                f"Forbidden: the completion token is not that of run {algorithm}/{request_id}"
            )
        return attempt

    async def _record(
        self, *, algorithm: str, request_id: str, report: Report, attempt: int | None
    ) -> Transition:
        if report.error_cause:
            failed = await self.store.transition(
                algorithm=algorithm,
                request_id=request_id,
                attempt=attempt,
                to=Stage.FAILED,
                changes={
                    "algorithm_failure_cause": report.error_cause,
                    "algorithm_failure_details": report.error_details,
                },
            )
            return metrics.completion(failed, to=Stage.FAILED)
        result_uri = report.result_uri
        if not result_uri and await self.payloads.has_result(
            algorithm=algorithm, request_id=request_id
        ):
            result_uri = self.payloads.result_url(
                algorithm=algorithm,
                request_id=request_id,
                valid_for=dt.timedelta(seconds=self.result_valid_for),
            )
        completed = await self.store.transition(
            algorithm=algorithm,
            request_id=request_id,
            attempt=attempt,
            to=Stage.COMPLETED,
            changes={"result_uri": result_uri},
        )
        return metrics.completion(completed, to=Stage.COMPLETED)

    async def is_processed(
        self, *, algorithm: str, request_id: str, token: str | None = None
    ) -> bool:
        self.check_token(algorithm=algorithm, request_id=request_id, token=token)
        checkpoint = await self.store.get(algorithm=algorithm, request_id=request_id)
        if checkpoint is None:
            raise NotFound(f"{algorithm}/{request_id}")
        return checkpoint.lifecycle_stage.is_terminal


def _same_outcome(checkpoint: Checkpoint, report: Report) -> bool:
    """Whether the report says again what the run's record says (a repeated report).

    Result locations are compared without their query: a re-signed URL of the same object
    is the same result, and a report without `resultUri` (the result was uploaded) matches
    any result.
    """
    if report.error_cause:
        return checkpoint.lifecycle_stage is Stage.FAILED and (
            checkpoint.algorithm_failure_cause,
            checkpoint.algorithm_failure_details,
        ) == (report.error_cause, report.error_details)
    if checkpoint.lifecycle_stage is not Stage.COMPLETED:
        return False
    return not report.result_uri or _location(report.result_uri) == _location(checkpoint.result_uri)


def _location(uri: str) -> str:
    return uri.partition("?")[0]


def _ended(checkpoint: Checkpoint) -> str:
    stage = checkpoint.lifecycle_stage
    what = f"Run {checkpoint.algorithm}/{checkpoint.id} had already ended {stage}"
    if stage is Stage.COMPLETED:
        return f"{what} with another result; this report was not recorded"
    cause = f" ({checkpoint.algorithm_failure_cause})" if checkpoint.algorithm_failure_cause else ""
    return f"{what}{cause} when this report arrived; it was not recorded"
