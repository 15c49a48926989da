"""Leasing: the scheduler's side of warm pools (`/worker/v1/pools/{alg}/lease` and `/report`).

Input: runs of a warm template, durable and BUFFERED (`Checkpoint.warm`), waiting in the pool
queue of their algorithm (one `VirtualQueue` per warm template, instead of the shard's Job queue).
Output: each run leased to one worker at a time, then COMPLETED / FAILED by that worker's report,
or returned to the queue as its next attempt when the lease is lost.

Transitions (all compare-and-set in the store, so several schedulers sharing a store agree):
- lease:   BUFFERED (warm, unleased) -> RUNNING with `lease_holder`, `lease_expires`;
- report:  RUNNING -> COMPLETED / FAILED for the reported attempt only (`transition(attempt=)`),
           so a worker whose lease was taken away cannot complete the run;
- release and expiry (`pipeline/reaping.py`): RUNNING -> BUFFERED with attempt + 1, exactly
           once per lost lease (`store.requeue`).

Why a lease rather than a Job: a Job per run costs the control plane a Job, a pod, their status
updates and their garbage (about 20 runs/s on a real API server here), while a lease costs one
store write, batched with every other run of the same request. Everything else of a run is as
in Job mode: its signed payload and result-upload URLs, its receiver URL with the attempt's
completion token, its checkpoint, so results, tags, cancel and the SDKs work unchanged.

Cancellation: taking runs from the queue and leasing them in the store happen with no await in
between but the (shielded) store write, so a lease request cancelled by a client disconnect
either leased nothing (the runs stay queued) or leased runs that no worker received; those
leases expire and the reaper gives the runs back as their next attempt. Nothing is lost.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from nexusd.core import metrics
from nexusd.core.errors import StoreError
from nexusd.core.lifecycle import Stage
from nexusd.core.records import LeaseKey, Transition
from nexusd.pipeline.intake import RunRef
from nexusd.pipeline.queueing import VirtualQueue
from nexusd.pipeline.scaling import PoolDemand
from nexusd.pipeline.worker_reports import Done, WorkerReport, record_done

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from nexusd.core.clock import Clock
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.payloads import PayloadStore
    from nexusd.stores.signing import CompletionTokens

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

RECEIVER_ENV = "NEXUS__CLIENT__RECEIVER"
UPLOAD_ENV = "NEXUS__RESULT_UPLOAD_URL"
TOKEN_PATH = "/t/"
LEASED = Transition(applied=True, stage=Stage.RUNNING)


class UnknownPool(LookupError):
    """No warm template of that name: the worker API answers 404 with this message."""


@attrs.frozen
class LeaseLimits:
    """The `warm.*` settings leasing works by (see settings.py for what each means)."""

    lease_duration: float = 30.0
    max_wait: float = 20.0
    max_lease_runs: int = 256
    queue_capacity: int = 10_000
    commit_timeout: float = 30.0
    result_valid_for: float = 86_400.0


@attrs.define
class Pool:
    """One warm template's waiting runs and the runs this scheduler leased out."""

    algorithm: str
    shard: str
    queue: VirtualQueue[RunRef]
    #: request id -> (worker, the run's ref) for runs this scheduler leased and not yet saw end
    out: dict[str, tuple[str, RunRef]] = attrs.Factory(dict)
    #: worker -> request ids of its runs cancelled here, to tell at its next report
    cancelled: dict[str, set[str]] = attrs.Factory(dict)
    #: worker -> set when something of it changed (a cancel), to end its report's long poll
    wake: dict[str, trio.Event] = attrs.Factory(dict)

    def demand(self) -> PoolDemand:
        statistics = self.queue.statistics()
        return PoolDemand(
            queued=statistics.queued, oldest_age=statistics.oldest_age, leased=len(self.out)
        )

    def notify(self, worker: str) -> None:
        event = self.wake.pop(worker, None)
        if event is not None:
            event.set()


@attrs.define
class WarmPools:
    """Every warm pool of this scheduler, and the two worker requests they answer."""

    store: CheckpointStore
    payloads: PayloadStore
    clock: Clock
    limits: LeaseLimits
    tokens: CompletionTokens | None = None
    pools: dict[str, Pool] = attrs.Factory(dict)
    #: the long polls waiting now, ended by `close` (a stopping scheduler answers them at once,
    #: so they do not hold its graceful shutdown for their whole wait)
    _polls: set[trio.CancelScope] = attrs.Factory(set)
    _closed: bool = False

    def pool(self, algorithm: str, shard: str) -> Pool:
        """The pool of `algorithm` (made on first use, by intake or a worker's first lease)."""
        pool = self.pools.get(algorithm)
        if pool is None:
            queue: VirtualQueue[RunRef] = VirtualQueue(self.limits.queue_capacity)
            pool = self.pools[algorithm] = Pool(algorithm=algorithm, shard=shard, queue=queue)
        return pool

    def demands(self) -> dict[str, tuple[int, float, int]]:
        """(queued, oldest age, leased) of every pool: its metrics and /readyz details."""
        return {
            name: (demand.queued, demand.oldest_age, demand.leased)
            for name, demand in ((name, pool.demand()) for name, pool in self.pools.items())
        }

    # --- lease ------------------------------------------------------------------------------

    def close(self) -> None:
        """Answer every long poll now, and later ones at once (the scheduler is stopping)."""
        self._closed = True
        for scope in self._polls:
            scope.cancel()

    async def _poll(self, wait: float, wake: Callable[[], Awaitable[_T]]) -> _T | None:
        """`await wake()`, for at most `wait` seconds (capped by `max_wait`) or until `close`."""
        with trio.move_on_after(0 if self._closed else min(wait, self.limits.max_wait)) as scope:
            self._polls.add(scope)
            try:
                return await wake()
            finally:
                self._polls.discard(scope)
        return None

    async def lease(self, pool: Pool, *, worker: str, most: int, wait: float) -> dict[str, Any]:
        """Lease up to `most` runs to `worker`, waiting up to `wait` seconds for the first.
        Only the wait is a long poll: once runs are taken from the queue, their lease and the
        answer are not cut short by `close` or the wait running out."""
        most = max(0, min(most, self.limits.max_lease_runs))
        runs: list[dict[str, Any]] = []
        deadline = trio.current_time() + min(wait, self.limits.max_wait)
        while most and not runs:
            first = await self._poll(deadline - trio.current_time(), pool.queue.get)
            if first is None:
                break
            runs = await self._lease_refs(pool, worker, [first, *_take(pool.queue, most - 1)])
        return {"leaseSeconds": self.limits.lease_duration, "runs": runs}

    async def _lease_refs(
        self, pool: Pool, worker: str, refs: list[RunRef]
    ) -> list[dict[str, Any]]:
        expires = self._expiry()
        leased: list[LeaseKey] = []
        with trio.move_on_after(self.limits.commit_timeout, shield=True) as bound:
            try:
                leased = await self.store.lease(
                    runs=[(ref.algorithm, ref.request_id) for ref in refs],
                    holder=worker,
                    expires=expires,
                )
            except BaseException:
                for ref in refs:  # not leased: back to the front of the queue
                    pool.queue.put_priority(ref)
                raise
        if bound.cancelled_caught:
            # The store did not answer in time: the lease may still apply (then it expires
            # unanswered and the reaper gives the runs back), or not (then these lease them).
            for ref in refs:
                pool.queue.put_priority(ref)
            raise StoreError(f"the lease was not confirmed within {self.limits.commit_timeout:g}s")
        by_id = {ref.request_id: ref for ref in refs}
        answers = []
        for key in leased:
            ref = by_id[key.request_id]
            pool.out[key.request_id] = (worker, ref)
            metrics.transitioned(LEASED, source=Stage.BUFFERED, to=Stage.RUNNING)
            answer = await self._answer(ref, key)
            if answer is not None:
                answers.append(answer)
        return answers

    async def _answer(self, ref: RunRef, key: LeaseKey) -> dict[str, Any] | None:
        """What the worker needs to run the attempt: the Job container's args and plain env,
        with the receiver URL carrying this attempt's token."""
        manifest, payload_url, payload = ref.template, ref.payload_url, ref.payload
        if manifest is None or not payload_url:  # a run this process did not accept
            entry = await self.store.get_submission(
                algorithm=key.algorithm, request_id=key.request_id
            )
            checkpoint = await self.store.get(algorithm=key.algorithm, request_id=key.request_id)
            if entry is None or checkpoint is None:
                logger.warning("leased run has no stored manifest", extra=_extra(key))
                return None
            manifest, payload_url = entry.template, checkpoint.payload_uri
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        env = {
            item["name"]: item["value"] for item in container.get("env") or () if "value" in item
        }
        if self.tokens is not None and key.attempt != 1 and RECEIVER_ENV in env:
            base = env[RECEIVER_ENV].rsplit(TOKEN_PATH, 1)[0]
            token = self.tokens.attempt_token(
                algorithm=key.algorithm, request_id=key.request_id, attempt=key.attempt
            )
            env[RECEIVER_ENV] = f"{base}{TOKEN_PATH}{token}"
        return {
            "requestId": key.request_id,
            "attempt": key.attempt,
            "args": list(container.get("args") or ()),
            "env": env,
            "payloadUri": payload_url,
            "resultUploadUri": env.get(UPLOAD_ENV, ""),
            "payload": base64.b64encode(payload).decode("ascii") if payload is not None else None,
        }

    # --- report -----------------------------------------------------------------------------

    async def report(self, pool: Pool, report: WorkerReport) -> dict[str, Any]:
        """Record finished attempts, give back released ones, renew the rest; with `wait`,
        hold the answer until one of the worker's runs is cancelled or the wait ends."""
        done = await self._record(pool, report.done)
        for key in report.release:
            await self.give_back(pool, key, holder=report.worker)
        cancelled, lost = await self._renew(pool, report)
        if report.wait > 0 and report.holding and not cancelled and not lost:
            event = pool.wake.setdefault(report.worker, trio.Event())
            await self._poll(report.wait, event.wait)
            cancelled = sorted(pool.cancelled.pop(report.worker, set()))
        return {
            "leaseSeconds": self.limits.lease_duration,
            "done": done,
            "cancelled": cancelled,
            "lost": lost,
        }

    async def _record(self, pool: Pool, items: Sequence[Done]) -> list[dict[str, str]]:
        answers: list[dict[str, str]] = [{} for _ in items]

        async def one(index: int, item: Done) -> None:
            answers[index] = await record_done(
                self.store,
                self.payloads,
                item,
                algorithm=pool.algorithm,
                result_valid_for=dt.timedelta(seconds=self.limits.result_valid_for),
            )
            pool.out.pop(item.request_id, None)

        # Concurrent, so the store commits them together (SQLite group commit, one batch).
        # Shielded: a worker that disconnects (killed) after sending its report still has
        # every run of it recorded, counted and forgotten here, as one would expect of a
        # report that reached the scheduler.
        with trio.move_on_after(self.limits.commit_timeout, shield=True) as bound:
            async with trio.open_nursery() as nursery:
                for index, item in enumerate(items):
                    nursery.start_soon(one, index, item)
        if bound.cancelled_caught:  # 503: the worker reports again, which is idempotent
            raise StoreError(f"the report was not confirmed within {self.limits.commit_timeout:g}s")
        return answers

    async def _renew(self, pool: Pool, report: WorkerReport) -> tuple[list[str], list[str]]:
        told = pool.cancelled.pop(report.worker, set())
        if not report.holding:
            return sorted(told), []
        keys = [LeaseKey(pool.algorithm, held.request_id, held.attempt) for held in report.holding]
        refused = await self.store.renew(holder=report.worker, leases=keys, expires=self._expiry())
        cancelled, lost = set(told), []
        for (_, request_id), stage in refused.items():
            pool.out.pop(request_id, None)
            if stage is Stage.CANCELLED:
                cancelled.add(request_id)
            else:
                lost.append(request_id)
        return sorted(cancelled), sorted(lost)

    async def give_back(self, pool: Pool, key: LeaseKey, *, holder: str | None = None) -> bool:
        """Requeue a leased attempt now (released by its worker, or its worker is gone)."""
        if not await self.store.requeue(lease=key, holder=holder):
            return False
        self.requeued(key)
        return True

    def requeued(self, key: LeaseKey) -> None:
        """A run of `key` went back to BUFFERED as its next attempt: queue it here, ahead."""
        pool = self.pools.get(key.algorithm)
        if pool is None:
            return  # no pool here: the scheduler that has one finds it (`store.waiting`)
        _, ref = pool.out.pop(key.request_id, ("", None))
        pool.queue.put_priority(ref or RunRef(algorithm=key.algorithm, request_id=key.request_id))

    # --- cancel -----------------------------------------------------------------------------

    def cancelled_run(self, algorithm: str, request_id: str) -> None:
        """A run was cancelled: out of the queue, and its worker told at once if it holds it."""
        pool = self.pools.get(algorithm)
        if pool is None:
            return
        pool.queue.discard(lambda ref: ref.request_id == request_id)
        worker, _ = pool.out.pop(request_id, ("", None))
        if worker:
            pool.cancelled.setdefault(worker, set()).add(request_id)
            pool.notify(worker)

    def _expiry(self) -> dt.datetime:
        return self.clock.now() + dt.timedelta(seconds=self.limits.lease_duration)


def _take(queue: VirtualQueue[RunRef], most: int) -> list[RunRef]:
    refs = []
    for _ in range(most):
        try:
            refs.append(queue.get_nowait())
        except trio.WouldBlock:
            break
    return refs


def _extra(key: LeaseKey) -> Mapping[str, str]:
    return {"request_id": key.request_id, "algorithm": key.algorithm}
