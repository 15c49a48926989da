"""Intake: turn `POST /algorithm/v1/run/{alg}` into a durable, queued run.

Input: the algorithm name, the raw request body and the dryRun flag.
Output: a request id, only once the payload, the checkpoint (BUFFERED) and the Job manifest with
its target shard are durable, and the run holds a place in the virtual queue.
Failure: every problem with the request is an `IntakeError` (HTTP 4xx with upstream's message
where upstream has one) raised before anything is written; a full queue is a 429 raised before
anything is written; a store failure after the payload write leaves only an unreferenced blob.

Unlike upstream, which answers 202 before persisting anything, nothing accepted here can be lost.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import uuid
import zlib
from typing import TYPE_CHECKING, Any

import attrs

from nexusd.core.durations import format_go_duration, parse_go_duration
from nexusd.core.errors import KubeNotFound, KubeUnavailable
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, ParentRef, SubmissionEntry
from nexusd.kube.client import JOBS
from nexusd.kube.manifests import build_job, dry_run_owner_reference, parent_owner_reference
from nexusd.kube.overrides import merge_overrides, validate_overrides, validate_template_spec
from nexusd.pipeline.bodies import json_object, string_field
from nexusd.pipeline.queueing import QueueFull, Reservation, VirtualQueue

if TYPE_CHECKING:
    from nexusd.core.clock import Clock
    from nexusd.kube.configuration import ConfigurationCache
    from nexusd.kube.shards import Shard
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.payloads import PayloadStore

logger = logging.getLogger(__name__)

DRY_RUN_JOB_UID = "dry-run"


@attrs.frozen
class RunRef:
    """What travels through the queue: the key of a durable run, and how often its
    submission was tried (for the back-off)."""

    algorithm: str
    request_id: str
    attempt: int = 0


class IntakeError(Exception):
    """The request cannot be accepted; `status` is the HTTP code, the message its body."""

    def __init__(self, message: str, *, status: int = 400, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@attrs.frozen
class ParsedRequest:
    parameters: dict[str, Any]
    overrides: dict[str, Any] | None
    api_version: str
    tag: str
    parent: ParentRef | None
    valid_for: dt.timedelta


def _invalid(message: str) -> IntakeError:
    return IntakeError(f"Algorithm payload is invalid: {message}")


def parse_request(body: bytes, *, default_valid_for: float, max_valid_for: float) -> ParsedRequest:
    """Validate an `AlgorithmRequest` body; every message names the offending field."""
    document = json_object(body, _invalid)
    parameters = document.get("algorithmParameters")
    if parameters is None:
        raise _invalid("algorithmParameters is required")
    if not isinstance(parameters, dict):
        raise _invalid("algorithmParameters must be a JSON object")
    overrides = document.get("customConfiguration")
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise _invalid("customConfiguration must be a JSON object")
        problems = validate_overrides(overrides)
        if problems:
            raise _invalid("; ".join(problems))
    parent = None
    parent_doc = document.get("parentRequest")
    if parent_doc is not None:
        if not isinstance(parent_doc, dict):
            raise _invalid("parentRequest must be a JSON object")
        request_id = parent_doc.get("requestId")
        algorithm_name = parent_doc.get("algorithmName")
        if not isinstance(request_id, str) or not request_id:
            raise _invalid("parentRequest.requestId is required")
        if not isinstance(algorithm_name, str) or not algorithm_name:
            raise _invalid("parentRequest.algorithmName is required")
        parent = ParentRef(request_id=request_id, algorithm_name=algorithm_name)
    valid_for = dt.timedelta(seconds=default_valid_for)
    raw_valid_for = string_field(document, "payloadValidFor", _invalid)
    if raw_valid_for:
        try:
            valid_for = parse_go_duration(raw_valid_for)
        except ValueError:
            raise _invalid(
                f"payloadValidFor {raw_valid_for!r} is not a duration like 6h or 90m"
            ) from None
        if valid_for <= dt.timedelta(0):
            raise _invalid(f"payloadValidFor {raw_valid_for!r} must be positive")
        if valid_for.total_seconds() > max_valid_for:
            limit = format_go_duration(dt.timedelta(seconds=max_valid_for))
            raise _invalid(f"payloadValidFor {raw_valid_for!r} exceeds the maximum {limit}")
    return ParsedRequest(
        parameters=parameters,
        overrides=overrides,
        api_version=string_field(document, "requestApiVersion", _invalid),
        tag=string_field(document, "tag", _invalid),
        parent=parent,
        valid_for=valid_for,
    )


def content_hash(payload: bytes) -> str:
    """Upstream core's content hash: base64 of the 8-hex-digit CRC32 of the payload."""
    return base64.b64encode(f"{zlib.crc32(payload):08x}".encode()).decode()


@attrs.define
class Intake:
    store: CheckpointStore
    payloads: PayloadStore
    configuration: ConfigurationCache
    shards: dict[str, Shard]
    queues: dict[str, VirtualQueue[RunRef]]
    clock: Clock
    host_name: str
    nexus_version: str
    default_valid_for: float
    max_valid_for: float
    result_valid_for: float

    async def accept(self, *, algorithm: str, body: bytes, dry_run: bool) -> str:
        request = parse_request(
            body, default_valid_for=self.default_valid_for, max_valid_for=self.max_valid_for
        )
        spec, workgroup_spec, shard = self._resolve(algorithm)
        applied = merge_overrides(spec, request.overrides)
        request_id = str(uuid.uuid4())
        owner = await self._parent_owner(request.parent, shard, dry_run=dry_run)
        reservation = None if dry_run else self._reserve(shard)
        try:
            await self._persist(
                algorithm, request_id, request, applied, workgroup_spec, shard, owner
            )
        except BaseException:
            if reservation is not None:
                reservation.cancel()
            raise
        if reservation is not None:
            reservation.put(RunRef(algorithm=algorithm, request_id=request_id))
        else:
            await self.store.transition(
                algorithm=algorithm,
                request_id=request_id,
                to=Stage.COMPLETED,
                expected={Stage.BUFFERED},
                changes={"job_uid": DRY_RUN_JOB_UID, "sent_at": self.clock.now()},
            )
        logger.debug("accepted run", extra={"request_id": request_id, "algorithm": algorithm})
        return request_id

    def _resolve(self, algorithm: str) -> tuple[dict[str, Any], dict[str, Any], Shard]:
        """Template, workgroup and shard of an algorithm, or the 400 upstream answers."""
        template = self.configuration.template(algorithm)
        if template is None:
            raise IntakeError(
                f"No valid configuration found for: {algorithm}. Please check that algorithm "
                "name is spelled correctly and try again. Contact an algorithm author if this "
                "problem persists."
            )
        spec = template.get("spec") or {}
        problems = validate_template_spec(spec)
        if problems:
            raise IntakeError(
                f"Algorithm {algorithm} has an invalid NexusAlgorithmTemplate: "
                + "; ".join(problems)
                + ". Contact an algorithm author."
            )
        workgroup_name = spec["workgroupRef"]["name"]
        workgroup = self.configuration.workgroup(workgroup_name)
        if workgroup is None:
            raise IntakeError(
                f"Cannot assign requested workgroup {workgroup_name} to the algorithm "
                f"{algorithm}. Please check the deployed configuration."
            )
        workgroup_spec = workgroup.get("spec") or {}
        cluster = workgroup_spec.get("cluster", "")
        shard = self.shards.get(cluster)
        if shard is None:
            known = ", ".join(sorted(self.shards)) or "none"
            raise IntakeError(
                f"Workgroup {workgroup_name} of algorithm {algorithm} targets cluster "
                f"{cluster!r}, which is not a shard of this scheduler (known: {known}). "
                "Please check the deployed configuration."
            )
        return spec, workgroup_spec, shard

    async def _parent_owner(
        self, parent: ParentRef | None, shard: Shard, *, dry_run: bool
    ) -> dict[str, Any] | None:
        if parent is None:
            return None
        if dry_run:
            return dry_run_owner_reference(parent.request_id)
        try:
            job = await shard.client.get(JOBS, namespace=shard.namespace, name=parent.request_id)
        except KubeNotFound:
            raise IntakeError(
                f"Parent request {parent.algorithm_name}/{parent.request_id} has no running Job "
                f"in cluster {shard.name}; a child run must be submitted while its parent runs."
            ) from None
        except KubeUnavailable as exc:
            raise IntakeError(
                f"Cannot look up the parent request's Job in cluster {shard.name}: {exc}",
                status=503,
                retry_after=5,
            ) from None
        return parent_owner_reference(job)

    def _reserve(self, shard: Shard) -> Reservation[RunRef]:
        try:
            return self.queues[shard.name].reserve_nowait()
        except QueueFull:
            raise IntakeError(
                f"The submission queue for cluster {shard.name} is full. Please retry later.",
                status=429,
                retry_after=1,
            ) from None

    async def _persist(
        self,
        algorithm: str,
        request_id: str,
        request: ParsedRequest,
        applied: dict[str, Any],
        workgroup_spec: dict[str, Any],
        shard: Shard,
        owner: dict[str, Any] | None,
    ) -> None:
        payload = json.dumps(request.parameters, separators=(",", ":")).encode()
        await self.payloads.put_payload(algorithm=algorithm, request_id=request_id, data=payload)
        payload_url = self.payloads.payload_url(
            algorithm=algorithm, request_id=request_id, valid_for=request.valid_for
        )
        upload_url = self.payloads.result_upload_url(
            algorithm=algorithm,
            request_id=request_id,
            valid_for=dt.timedelta(seconds=self.result_valid_for),
        )
        job = build_job(
            request_id=request_id,
            algorithm=algorithm,
            spec=applied,
            workgroup=workgroup_spec,
            namespace=shard.namespace,
            payload_url=payload_url,
            result_upload_url=upload_url,
            parent_owner=owner,
            parent=(
                (request.parent.request_id, request.parent.algorithm_name)
                if request.parent
                else None
            ),
            nexus_version=self.nexus_version,
        )
        now = self.clock.now()
        checkpoint = Checkpoint(
            algorithm=algorithm,
            id=request_id,
            lifecycle_stage=Stage.BUFFERED,
            received_at=now,
            last_modified=now,
            payload_uri=payload_url,
            received_by_host=self.host_name,
            applied_configuration=applied,
            configuration_overrides=request.overrides,
            content_hash=content_hash(payload),
            tag=request.tag,
            api_version=request.api_version,
            parent=request.parent,
            payload_valid_for=request.valid_for,
        )
        submission = SubmissionEntry(
            algorithm=algorithm, id=request_id, cluster=shard.name, template=job
        )
        await self.store.create(checkpoint=checkpoint, submission=submission)
