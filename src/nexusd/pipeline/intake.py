"""Intake: turn `POST /algorithm/v1/run/{alg}` (or a batch of runs) into durable, queued runs.

Input: the algorithm name, the raw request body and the dryRun flag.
Output: request ids, each only once its payload, its checkpoint (BUFFERED; a dry run COMPLETED)
and its Job manifest with the target shard are durable and the run holds its place in the
virtual queue.
Failure: every problem with a request is an `IntakeError` (HTTP 4xx with upstream's message
where upstream has one) raised before anything is written; a full queue is a 429 raised before
anything is written; a store failure after the payload write leaves only an unreferenced blob,
which garbage collection removes.

Cancellation (a client that disconnects, a timeout, SIGTERM) can strike at any `await`. Until
the checkpoint write starts, it leaves nothing but possibly an unreferenced payload blob: the
run was not accepted. From then on the write and the enqueueing run shielded, bounded by
`commit_timeout`, so a cancelled request leaves its run accepted and moving: stored and queued,
never stored and forgotten (tests/pipeline/test_intake_cancellation.py cancels `accept` at
every checkpoint it passes). A dry run is written once, already COMPLETED, so nothing can ever
submit it.

Unlike upstream, which answers 202 before persisting anything, nothing accepted can be lost.

A request with an `Idempotency-Key` (pipeline/idempotency.py) stores its key in the same
insert as its first run; a taken key fails that insert (`KeyTaken`) having stored nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import logging
import re
import uuid
import zlib
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from nexusd.core import metrics
from nexusd.core.durations import format_go_duration, parse_go_duration
from nexusd.core.errors import KubeNotFound, KubeUnavailable
from nexusd.core.lifecycle import Stage
from nexusd.core.quantities import shown
from nexusd.core.records import Checkpoint, NewRun, ParentRef, SubmissionEntry
from nexusd.kube.client import JOBS
from nexusd.kube.manifests import (
    ReceiverUrl,
    build_job,
    dry_run_owner_reference,
    parent_owner_reference,
    resource_problems,
)
from nexusd.kube.overrides import (
    merge_overrides,
    refused_overrides,
    validate_overrides,
    validate_template_spec,
)
from nexusd.kube.warmpool import WarmPool
from nexusd.logs import label_run
from nexusd.pipeline.bodies import Member, array_members, object_members, text_value
from nexusd.pipeline.queueing import QueueFull, Reservation, VirtualQueue
from nexusd.stores.signing import JOB_ATTEMPT

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from nexusd.core.clock import Clock
    from nexusd.core.records import IdempotencyKey
    from nexusd.kube.configuration import ConfigurationCache
    from nexusd.kube.fitting import NodeCapacity
    from nexusd.kube.shards import Shard
    from nexusd.pipeline.leasing import WarmPools
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.payloads import PayloadStore
    from nexusd.stores.signing import CompletionTokens

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DRY_RUN_JOB_UID = "dry-run"
#: Bodies up to this size are parsed on the event loop (well under a millisecond); larger
#: ones in a worker thread.
THREAD_PARSE_MIN = 256 * 1024
#: Large bodies parsed at once: each can take several times its size in memory while decoded.
LARGE_BODY_PARSERS = 2
#: Longest tag: it travels in URL paths (`/results/tags/{tag}`), which HTTP servers bound.
MAX_TAG = 1024
#: Longest other text field (requestApiVersion).
MAX_TEXT = 4096
#: Largest Job manifest: the API server's storage refuses objects over 1.5 MiB ("etcdserver:
#: request is too large"), and a run that cannot become a Job is refused at intake.
MAX_JOB_BYTES = 1_400_000
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@attrs.frozen
class RunRef:
    """What travels through the queue: the key of a durable run, how often its submission was
    tried (for the back-off) and, for a run this process just accepted, its Job manifest, so
    the submitter needs no store read for it. A ref without a manifest (a recovered run) is
    looked up in the store first."""

    algorithm: str
    request_id: str
    attempt: int = 0
    template: dict[str, Any] | None = attrs.field(default=None, eq=False, repr=False)
    #: `trio.current_time()` when this process accepted the run (None: recovered), for
    #: `nexusd_submission_latency_seconds`
    accepted_at: float | None = attrs.field(default=None, eq=False, repr=False)
    #: a warm run this process accepted: its payload URL, and the payload itself when small,
    #: so that leasing it to a worker costs no store read
    payload_url: str = attrs.field(default="", eq=False, repr=False)
    payload: bytes | None = attrs.field(default=None, eq=False, repr=False)


class IntakeError(Exception):
    """The request cannot be accepted; `status` is the HTTP code, the message its body."""

    def __init__(self, message: str, *, status: int = 400, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@attrs.frozen
class ParsedRequest:
    #: `algorithmParameters` exactly as the client sent them (UTF-8 JSON text)
    payload: bytes
    overrides: dict[str, Any] | None
    api_version: str
    tag: str
    parent: ParentRef | None
    valid_for: dt.timedelta


def _invalid(message: str) -> IntakeError:
    return IntakeError(f"Algorithm payload is invalid: {message}")


def parse_request(body: bytes, *, default_valid_for: float, max_valid_for: float) -> ParsedRequest:
    """Validate an `AlgorithmRequest` body; every message names the offending field."""
    text, members = object_members(body, _invalid)
    return parse_members(
        text, members, default_valid_for=default_valid_for, max_valid_for=max_valid_for
    )


def parse_members(
    text: str, members: dict[str, Member], *, default_valid_for: float, max_valid_for: float
) -> ParsedRequest:
    """`parse_request` for an object already split into members (one item of a batch)."""
    parameters = members.get("algorithmParameters")
    if parameters is None or parameters.value is None:
        raise _invalid("algorithmParameters is required")
    if not isinstance(parameters.value, dict):
        raise _invalid("algorithmParameters must be a JSON object")
    overrides = _value(members, "customConfiguration")
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise _invalid("customConfiguration must be a JSON object")
        problems = validate_overrides(overrides)
        if problems:
            raise _invalid("; ".join(problems))
    return ParsedRequest(
        payload=text[parameters.start : parameters.end].encode(),
        overrides=overrides,
        api_version=_string(members, "requestApiVersion"),
        tag=_string(members, "tag", longest=MAX_TAG),
        parent=_parent(_value(members, "parentRequest")),
        valid_for=_valid_for(_string(members, "payloadValidFor"), default_valid_for, max_valid_for),
    )


def parse_batch(
    body: bytes, *, default_valid_for: float, max_valid_for: float, max_runs: int
) -> list[ParsedRequest | IntakeError]:
    """A JSON array of `AlgorithmRequest` bodies: each item parsed on its own, so a bad item is
    that item's error and the others stand. A malformed array, an empty one or one with more
    than `max_runs` items is an error for the whole batch."""
    text, items = array_members(body, _invalid)
    if not items:
        raise _invalid("a batch needs at least one run")
    if len(items) > max_runs:
        raise IntakeError(
            f"A batch holds at most {max_runs} runs (http.max_batch_runs); this one has "
            f"{len(items)}. Please split it.",
            status=413,
        )
    parsed: list[ParsedRequest | IntakeError] = []
    for members in items:
        if isinstance(members, Exception):  # made by _invalid: the run's own problem
            assert isinstance(members, IntakeError)
            parsed.append(members)
            continue
        try:
            parsed.append(
                parse_members(
                    text, members, default_valid_for=default_valid_for, max_valid_for=max_valid_for
                )
            )
        except IntakeError as exc:
            parsed.append(exc)
    return parsed


def _value(members: dict[str, Member], key: str) -> Any:
    member = members.get(key)
    return None if member is None else member.value


def _string(members: dict[str, Member], key: str, *, longest: int = MAX_TEXT) -> str:
    """An optional text field; missing or null reads as "" (upstream's Go zero value)."""
    value = text_value(_value(members, key), key, _invalid)
    if len(value) > longest:
        raise _invalid(f"{key} is longer than {longest} characters")
    return value


def _parent(document: Any) -> ParentRef | None:
    if document is None:
        return None
    if not isinstance(document, dict):
        raise _invalid("parentRequest must be a JSON object")
    names = []
    for key in ("requestId", "algorithmName"):
        value = document.get(key)
        if not isinstance(value, str) or not value:
            raise _invalid(f"parentRequest.{key} is required")
        # The parent is a run: its id names its Job, its algorithm a template.
        if len(value) > 253 or not _OBJECT_NAME.fullmatch(value):
            raise _invalid(
                f"parentRequest.{key} {shown(value)} is not the name of a run's Job or "
                "template (lowercase letters, digits, '-' and '.')"
            )
        names.append(value)
    return ParentRef(request_id=names[0], algorithm_name=names[1])


def _valid_for(raw: str, default: float, maximum: float) -> dt.timedelta:
    if not raw:
        return dt.timedelta(seconds=default)
    try:
        valid_for = parse_go_duration(raw)
    except ValueError as exc:
        reason = "out of range" if "out of range" in str(exc) else "not a duration like 6h or 90m"
        raise _invalid(f"payloadValidFor {shown(raw)} is {reason}") from None
    if valid_for <= dt.timedelta(0):
        raise _invalid(f"payloadValidFor {shown(raw)} must be positive")
    if valid_for.total_seconds() > maximum:
        limit = format_go_duration(dt.timedelta(seconds=maximum))
        raise _invalid(f"payloadValidFor {shown(raw)} exceeds the maximum {limit}")
    return valid_for


def batch_items(results: Sequence[str | IntakeError]) -> list[dict[str, Any]]:
    """A batch's answer, in order: `{"requestId"}` per accepted run, `{"status", "error"}`
    per refused one."""
    return [
        {"status": result.status, "error": str(result)}
        if isinstance(result, IntakeError)
        else {"requestId": result}
        for result in results
    ]


def batch_results(items: Sequence[dict[str, Any]]) -> list[str | IntakeError]:
    """`batch_items` read back: the results a stored answer was made of (without the
    Retry-After of refusals, which only the first answer needed)."""
    return [
        str(item["requestId"])
        if "requestId" in item
        else IntakeError(str(item["error"]), status=int(item["status"]))
        for item in items
    ]


def content_hash(payload: bytes) -> str:
    """Upstream core's content hash: base64 of the 8-hex-digit CRC32 of the payload."""
    return base64.b64encode(f"{zlib.crc32(payload):08x}".encode()).decode()


@attrs.frozen
class Prepared:
    """A validated run, ready to be written: what the store gets and what the queue gets."""

    run: NewRun
    shard: str
    ref: RunRef
    payload: bytes = attrs.field(repr=False)

    @property
    def request_id(self) -> str:
        return self.ref.request_id

    def holding(self, idempotency: IdempotencyKey) -> Prepared:
        """This run, stored holding the request's idempotency key."""
        return attrs.evolve(self, run=attrs.evolve(self.run, idempotency=idempotency))


@attrs.frozen
class Resolved:
    """An algorithm's template spec, workgroup spec and target shard."""

    spec: dict[str, Any]
    workgroup: dict[str, Any]
    shard: Shard
    #: the template's warm pool (None: its runs are Jobs)
    pool: WarmPool | None = None


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
    #: payloads up to this many bytes are stored with the checkpoint (one durable write per
    #: run) when the payload store is served by nexusd itself; 0 = always a separate blob
    inline_max: int = 0
    #: seconds the shielded checkpoint write may take before intake answers 503
    commit_timeout: float = 30.0
    #: per shard, the nodes a run's pod must fit on (none: not checked)
    capacities: Mapping[str, NodeCapacity] = attrs.field(factory=dict)
    #: the receiver base URL given to pods ("" = each template's own, `ReceiverUrl`) and the
    #: completion tokens put in it (None: off, the template's receiver URL is left as it is
    #: unless `receiver_url` replaces it)
    receiver_url: str = ""
    completion_tokens: CompletionTokens | None = None
    #: the warm pools runs of a `spec.warmPool` template wait in (None: every run is a Job)
    pools: WarmPools | None = None
    _verdicts: dict[str, tuple[dict[str, Any], list[str], WarmPool | None]] = attrs.field(
        factory=dict, init=False
    )
    _large_bodies: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(LARGE_BODY_PARSERS), init=False
    )

    async def parse(self, body: bytes) -> ParsedRequest:
        """`parse_request` with this scheduler's limits; a large body in a worker thread, so
        decoding it does not stall every other request (at most `LARGE_BODY_PARSERS` at once)."""
        parse = functools.partial(
            parse_request,
            body,
            default_valid_for=self.default_valid_for,
            max_valid_for=self.max_valid_for,
        )
        return await self.off_loop(parse, size=len(body))

    async def off_loop(self, fn: Callable[[], _T], *, size: int) -> _T:
        """Run `fn`, pure work on a request body of `size` bytes: here when the body is small,
        else in a worker thread, so it does not stall every other request (at most
        `LARGE_BODY_PARSERS` at once)."""
        if size <= THREAD_PARSE_MIN:
            return fn()
        return await trio.to_thread.run_sync(fn, limiter=self._large_bodies)

    async def accept(
        self,
        *,
        algorithm: str,
        request: ParsedRequest,
        dry_run: bool,
        idempotency: IdempotencyKey | None = None,
    ) -> str:
        """Accept one parsed run; return its request id once it is durable and queued. With
        `idempotency`, the run holds that key (the same insert), or raises `KeyTaken` having
        stored nothing (pipeline/idempotency.py answers the holder)."""
        resolved = self.resolve(algorithm)
        prepared = await self.prepare(algorithm, request, resolved, dry_run=dry_run)
        if idempotency is not None:
            prepared = prepared.holding(idempotency)
        reservation = None if dry_run else self._reserve(prepared)
        await self.commit([(prepared, reservation)])
        label_run(request_id=prepared.request_id, algorithm=algorithm)  # the access log's too
        logger.debug(
            "accepted run", extra={"request_id": prepared.request_id, "algorithm": algorithm}
        )
        return prepared.request_id

    async def parse_batch(self, body: bytes, *, max_runs: int) -> list[ParsedRequest | IntakeError]:
        """`parse_batch` with this scheduler's limits, in a worker thread when large."""
        parse = functools.partial(
            parse_batch,
            body,
            default_valid_for=self.default_valid_for,
            max_valid_for=self.max_valid_for,
            max_runs=max_runs,
        )
        return await self.off_loop(parse, size=len(body))

    async def accept_batch(
        self,
        *,
        algorithm: str,
        requests: Sequence[ParsedRequest | IntakeError],
        dry_run: bool,
        idempotency: IdempotencyKey | None = None,
    ) -> list[str | IntakeError]:
        """Accept the valid runs of a batch together (one transaction); return, in order, each
        run's request id or its own error. Every id returned is durable and queued. With
        `idempotency`, the first accepted run holds the key and the whole answer
        (`batch_items`), or `KeyTaken` is raised having stored nothing."""
        resolved = self.resolve(algorithm)
        results: list[str | IntakeError] = []
        ready: list[tuple[Prepared, Reservation[RunRef] | None]] = []
        try:
            for request in requests:
                if isinstance(request, IntakeError):
                    results.append(request)
                    continue
                try:
                    prepared = await self.prepare(algorithm, request, resolved, dry_run=dry_run)
                    ready.append((prepared, None if dry_run else self._reserve(prepared)))
                except IntakeError as exc:
                    results.append(exc)
                else:
                    results.append(prepared.request_id)
        except BaseException:
            _give_back([reservation for _, reservation in ready if reservation is not None])
            raise
        if ready and idempotency is not None:
            first, reservation = ready[0]
            answer = attrs.evolve(idempotency, answer=batch_items(results))
            ready[0] = (first.holding(answer), reservation)
        if ready:
            await self.commit(ready)
        return results

    def resolve(self, algorithm: str) -> Resolved:
        """Template, workgroup and shard of an algorithm, or the 400 upstream answers."""
        template = self.configuration.template(algorithm)
        if template is None:
            raise IntakeError(
                f"No valid configuration found for: {algorithm}. Please check that algorithm "
                "name is spelled correctly and try again. Contact an algorithm author if this "
                "problem persists."
            )
        spec = template.get("spec") or {}
        problems, pool = self._verdict(algorithm, template, spec)
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
        return Resolved(spec=spec, workgroup=workgroup_spec, shard=shard, pool=pool)

    def warm(self, algorithm: str) -> Resolved | None:
        """`algorithm`'s resolved template when it has a warm pool, else None (no template, an
        invalid one, or runs that are Jobs)."""
        try:
            resolved = self.resolve(algorithm)
        except IntakeError:
            return None
        return resolved if resolved.pool is not None else None

    async def prepare(
        self, algorithm: str, request: ParsedRequest, resolved: Resolved, *, dry_run: bool
    ) -> Prepared:
        """Everything of a run but the write: Job manifest, checkpoint, payload placement."""
        owner = await self._parent_owner(request.parent, resolved.shard, dry_run=dry_run)
        applied = resolved.spec  # validated by `resolve`; never mutated
        if request.overrides:
            refused = refused_overrides(resolved.spec, request.overrides)
            if refused:
                raise _invalid("; ".join(refused))
            applied = merge_overrides(resolved.spec, request.overrides)
            problems = validate_template_spec(applied)
            if problems:
                raise _invalid(
                    "customConfiguration makes the template unusable: " + "; ".join(problems)
                )
        request_id = str(uuid.uuid4())
        payload_url = self.payloads.payload_url(
            algorithm=algorithm, request_id=request_id, valid_for=request.valid_for
        )
        upload_url = self.payloads.result_upload_url(
            algorithm=algorithm,
            request_id=request_id,
            valid_for=dt.timedelta(seconds=self.result_valid_for),
        )
        shard = resolved.shard
        job = build_job(
            request_id=request_id,
            algorithm=algorithm,
            spec=applied,
            workgroup=resolved.workgroup,
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
            checked=True,
            receiver=self._receiver(algorithm, request_id),
        )
        problems = resource_problems(job)
        if problems:
            raise _invalid("; ".join(problems))
        if request.overrides:  # a template's own manifest is small; overrides can grow it
            size = len(json.dumps(job, separators=(",", ":")))
            if size > MAX_JOB_BYTES:
                raise IntakeError(
                    f"The run's Job would be {size} bytes, more than the {MAX_JOB_BYTES} a "
                    "Kubernetes API server stores; shorten customConfiguration "
                    "(environment variables, annotations).",
                    status=413,
                )
        capacity = self.capacities.get(shard.name)
        misfit = (
            capacity.misfit(job["spec"]["template"]["spec"], resolved.workgroup)
            if capacity
            else None
        )
        if misfit:
            raise _invalid(misfit)
        # A run with overrides may need other pods than the pool's: it runs as a Job.
        warm = (
            self.pools is not None
            and not dry_run
            and not request.overrides
            and resolved.pool is not None
        )
        now = self.clock.now()
        checkpoint = Checkpoint(
            algorithm=algorithm,
            id=request_id,
            lifecycle_stage=Stage.COMPLETED if dry_run else Stage.BUFFERED,
            received_at=now,
            last_modified=now,
            payload_uri=payload_url,
            received_by_host=self.host_name,
            sent_at=now if dry_run else None,
            applied_configuration=applied,
            configuration_overrides=request.overrides,
            content_hash=content_hash(request.payload),
            tag=request.tag,
            api_version=request.api_version,
            job_uid=DRY_RUN_JOB_UID if dry_run else "",
            parent=request.parent,
            payload_valid_for=request.valid_for,
            cluster=shard.name,
            warm=warm,
        )
        inline = len(request.payload) <= self.inline_max
        run = NewRun(
            checkpoint=checkpoint,
            submission=SubmissionEntry(
                algorithm=algorithm, id=request_id, cluster=shard.name, template=job
            ),
            payload=request.payload if inline else None,
        )
        ref = RunRef(
            algorithm=algorithm,
            request_id=request_id,
            template=job,
            accepted_at=trio.current_time(),
            payload_url=payload_url if warm else "",
            payload=request.payload if warm and inline else None,
        )
        return Prepared(run=run, shard=shard.name, ref=ref, payload=request.payload)

    async def commit(self, items: Sequence[tuple[Prepared, Reservation[RunRef] | None]]) -> None:
        """Store the runs (one transaction) and fill their reservations (None for dry runs);
        see the module docstring on cancellation. Raises IntakeError (503: the store did not
        answer in time) or StoreError, after which nothing is stored."""
        reservations = [reservation for _, reservation in items if reservation is not None]
        try:
            for item, _ in items:
                if item.run.payload is None:  # too large to go with the checkpoint
                    await self.payloads.put_payload(
                        algorithm=item.ref.algorithm, request_id=item.request_id, data=item.payload
                    )
        except BaseException:
            _give_back(reservations)
            raise
        with trio.move_on_after(self.commit_timeout, shield=True) as bound:
            try:
                await self.store.create_many(runs=[item.run for item, _ in items])
            except trio.Cancelled:
                # The bound ran out: the write may still land (SQLite finishes queued writes),
                # so the runs are queued without their manifests: the submitter reads each
                # from the store first and skips one that was never stored.
                for item, reservation in items:
                    if reservation is not None:
                        reservation.put(attrs.evolve(item.ref, template=None))
                raise
            except BaseException:
                _give_back(reservations)
                raise
            for item, reservation in items:
                if reservation is not None:
                    reservation.put(item.ref)
                metrics.run_accepted(item.ref.algorithm)
        if bound.cancelled_caught:
            ids = ", ".join(item.request_id for item, _ in items)
            raise IntakeError(
                f"The checkpoint store did not confirm run {ids} within {self.commit_timeout:g}s "
                "(store.commit_timeout); it may still start. Please check its result before "
                "submitting it again.",
                status=503,
                retry_after=5,
            )

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

    def _receiver(self, algorithm: str, request_id: str) -> ReceiverUrl | None:
        """What the run's pod gets as its receiver URL (see `ReceiverUrl`)."""
        tokens = self.completion_tokens
        if tokens is None and not self.receiver_url:
            return None
        token = (
            tokens.token(algorithm=algorithm, request_id=request_id, attempt=JOB_ATTEMPT)
            if tokens is not None
            else ""
        )
        return ReceiverUrl(base=self.receiver_url, token=token)

    def _verdict(
        self, algorithm: str, template: dict[str, Any], spec: Any
    ) -> tuple[list[str], WarmPool | None]:
        """`validate_template_spec` and the warm pool, once per version of a template: the
        cache replaces a template's object when it changes, so the object itself is the
        version."""
        known = self._verdicts.get(algorithm)
        if known is not None and known[0] is template:
            return known[1], known[2]
        problems = validate_template_spec(spec)  # warmPool included
        pool = None if problems else WarmPool.from_spec(spec)
        self._verdicts[algorithm] = (template, problems, pool)
        return problems, pool

    def _reserve(self, item: Prepared) -> Reservation[RunRef]:
        """Room in the run's shard queue, or the 429 a full queue answers."""
        try:
            if self.pools is not None and item.run.checkpoint.warm:
                return self.pools.pool(item.ref.algorithm, item.shard).queue.reserve_nowait()
            return self.queues[item.shard].reserve_nowait()
        except QueueFull:
            metrics.queue_full(item.shard)
            raise IntakeError(
                f"The submission queue for cluster {item.shard} is full. Please retry later.",
                status=429,
                retry_after=1,
            ) from None


def _give_back(reservations: Sequence[Reservation[RunRef]]) -> None:
    for reservation in reservations:
        reservation.cancel()
