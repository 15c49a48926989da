"""Completing: the receiver's side of a run, `POST /algorithm/v1/complete/{alg}/requests/{id}`.

Input: the algorithm's report `{resultUri, errorCause, errorDetails}`.
Output: the run is COMPLETED (empty `errorCause`, upstream's success convention) with its result
URI, or FAILED with the cause and details.
Transition: any non-terminal stage -> COMPLETED / FAILED, conditional, so a report for a run
that already finished (a retry of the SDK, a maintainer verdict) changes nothing, and a report
that overtakes the submitter's RUNNING write still lands (BUFFERED -> COMPLETED is legal).
When the algorithm uploaded its result through `NEXUS__RESULT_UPLOAD_URL` and reports no
`resultUri`, the run's result URI is a signed download URL of that upload.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import attrs

from nexusd.core.errors import NotFound
from nexusd.core.lifecycle import Stage
from nexusd.pipeline.bodies import json_object, string_field

if TYPE_CHECKING:
    from nexusd.core.records import Transition
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.payloads import PayloadStore


class InvalidReport(ValueError):
    """The completion body is not an AlgorithmResult; the message says why."""


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

    async def complete(self, *, algorithm: str, request_id: str, report: Report) -> Transition:
        """Record the report; raises `NotFound` for an unknown run."""
        if report.error_cause:
            return await self.store.transition(
                algorithm=algorithm,
                request_id=request_id,
                to=Stage.FAILED,
                changes={
                    "algorithm_failure_cause": report.error_cause,
                    "algorithm_failure_details": report.error_details,
                },
            )
        result_uri = report.result_uri
        if not result_uri and await self.payloads.has_result(
            algorithm=algorithm, request_id=request_id
        ):
            result_uri = self.payloads.result_url(
                algorithm=algorithm,
                request_id=request_id,
                valid_for=dt.timedelta(seconds=self.result_valid_for),
            )
        return await self.store.transition(
            algorithm=algorithm,
            request_id=request_id,
            to=Stage.COMPLETED,
            changes={"result_uri": result_uri},
        )

    async def is_processed(self, *, algorithm: str, request_id: str) -> bool:
        checkpoint = await self.store.get(algorithm=algorithm, request_id=request_id)
        if checkpoint is None:
            raise NotFound(f"{algorithm}/{request_id}")
        return checkpoint.lifecycle_stage.is_terminal
