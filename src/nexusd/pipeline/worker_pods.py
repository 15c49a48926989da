"""Worker pods: what the maintainer does about the runs of a warm pool's pods (issue 13, §7).

A warm run has no Job (the reconciler skips it): it is leased to a worker pod of its
template's pool Deployment (`kube/pools.py`) and is RUNNING with `lease_holder` = the pod's
name. What happens to that pod decides what happens to the run:

- a container of the pod was OOMKilled: the runs that container held FAIL by the rule table's
  termination rules (`oom-killed`: its cause and message, `{memory_limit}` from the pod spec),
  a compare-and-set on RUNNING and on the lease's attempt;
- it ended otherwise (a crash, a recycled worker, any restart), or the pod is gone (deleted,
  evicted, failed): its runs are requeued at once (`store.requeue`, holder = the pod), so they
  need not wait for their leases to expire; the schedulers' orphan scans (`store.waiting`)
  lease them again. A run that lost `warm.max_attempts` leases FAILS instead, as the
  schedulers' reaper does it (pipeline/reaping.py);
- every live pod of a pool is stuck before its worker starts (the table's SCHEDULING_FAILED
  rules that look at container-waiting states or pod conditions: an image that cannot be
  pulled, an unschedulable pod..., each after its grace) and none is Ready: nothing will run
  the template's waiting runs, so they fail SCHEDULING_FAILED with that rule's cause and its
  message about one of the pods. Runs that arrive later fail at the next look (a pod change,
  or the informer's resync every `maintainer.interval`), until a pod of the pool is Ready.

Which runs a termination is about: a restarted container keeps its previous instance as
`lastState.terminated` while the new instance leases new runs under the same pod name. A run
belongs to the instance that ended if it was leased (`sent_at`) before that instance finished
(`finishedAt`; Kubernetes gives whole seconds, so that whole second counts); a run leased later
is the new instance's and is left alone. Every write is a compare-and-set, so acting twice (a
resync, two maintainers) changes nothing; the memo of terminations already handled only saves
store reads.

Lease expiry is not here: each scheduler's reaper requeues expired leases.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio

from nexusd.core import metrics
from nexusd.core.errors import NotFound
from nexusd.core.lifecycle import Stage
from nexusd.kube.pools import deployment_name
from nexusd.logs import run_context
from nexusd.pipeline.classifying import Observation, classify
from nexusd.pipeline.reaping import LOST_CAUSE
from nexusd.pipeline.rules import Action, RuleTable, Source
from nexusd.pipeline.worker_pod_view import (
    KUBELET_FAILED,
    Ended,
    WorkerPodView,
    algorithm_of,
    pod_name,
    terminations,
)
from nexusd.stores.checkpoints import DEFAULT_PAGE

if TYPE_CHECKING:
    import datetime as dt

    from nexusd.core.clock import Clock
    from nexusd.core.records import Checkpoint, HeldLease
    from nexusd.pipeline.classifying import Verdict
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

#: `nexusd_maintainer_verdicts_total` rules of the requeues (stage BUFFERED)
WORKER_EXITED = "worker-exited"
WORKER_POD_GONE = "worker-pod-gone"

_STUCK_SOURCES = frozenset({Source.CONTAINER_WAITING, Source.POD_CONDITION})
_TERMINAL_PHASES = frozenset({"Failed", "Succeeded"})
_TERMINAL = "terminal"  # memo entry: the pod itself ended


def termination_rules(table: RuleTable) -> RuleTable:
    """The fail rules that look only at ended containers (by default `oom-killed`)."""
    return attrs.evolve(
        table,
        rules=tuple(
            rule
            for rule in table.rules
            if rule.action is Action.FAIL
            and all(match.source is Source.CONTAINER_TERMINATED for match in rule.matches)
        ),
    )


def stuck_rules(table: RuleTable) -> RuleTable:
    """The SCHEDULING_FAILED rules about a pod that cannot start (image, config, scheduling)."""
    return attrs.evolve(
        table,
        rules=tuple(
            rule
            for rule in table.rules
            if rule.action is Action.FAIL
            and rule.stage is Stage.SCHEDULING_FAILED
            and all(match.source in _STUCK_SOURCES for match in rule.matches)
        ),
    )


def pool_event_reasons(table: RuleTable) -> frozenset[str]:
    """The Events about pool pods the stuck rules read: the kubelet's `Failed` ones (their
    `{event_message}`) and the ones they excuse a pod for (`unless_event`)."""
    excuses = (match.unless_events for rule in stuck_rules(table).rules for match in rule.matches)
    return KUBELET_FAILED.union(*excuses)


@attrs.frozen
class WorkerPodStatistics:
    failed: int
    requeued: int
    errors: int


@attrs.define
class WorkerPods:
    """Acts on one shard's worker pods (its `WorkerPodView`); `run` reacts, `once` is a pass."""

    store: CheckpointStore
    view: WorkerPodView
    rules: RuleTable
    clock: Clock
    max_attempts: int
    #: seconds after a change before acting (a burst of pod updates is one pass)
    delay: float = 1.0
    failed: int = 0
    requeued: int = 0
    errors: int = 0
    _ended_rules: RuleTable = attrs.field(init=False)
    _stuck_rules: RuleTable = attrs.field(init=False)
    _handled: dict[str, frozenset[object]] = attrs.field(init=False, factory=dict)
    _recheck: dict[str, float] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._ended_rules = termination_rules(self.rules)
        self._stuck_rules = stuck_rules(self.rules)

    def statistics(self) -> WorkerPodStatistics:
        return WorkerPodStatistics(failed=self.failed, requeued=self.requeued, errors=self.errors)

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """React to the view's changes, and to pools whose grace ends, for ever."""
        task_status.started()
        while True:
            with trio.move_on_at(min(self._recheck.values(), default=math.inf)):
                await self.view.changed()
            await trio.sleep(self.delay)
            due = {pool for pool, at in self._recheck.items() if at <= trio.current_time()}
            await self._act(*self.view.take(), pools_due=due)

    async def once(self) -> int:
        """One pass over every worker pod and pool of the view; returns the errors of it."""
        before = self.errors
        _, gone, _ = self.view.take()
        await self._act(set(self.view.pods), gone, self.view.pools(), pools_due=set())
        return self.errors - before

    async def _act(
        self, pods: set[str], gone: dict[str, str], pools: set[str], *, pools_due: set[str]
    ) -> None:
        for name, algorithm in sorted(gone.items()):
            self._handled.pop(name, None)
            try:
                await self._pod_gone(name, algorithm)
            except Exception:
                self._failed("worker pod %s (gone)", name)
                self.view.gone[name] = algorithm  # the next pass tries again
        for name in sorted(pods):
            pod = self.view.pods.get(name)
            if pod is None:
                continue
            try:
                await self._check_pod(name, pod)
            except Exception:
                self._failed("worker pod %s", name)
        for algorithm in sorted(pools | pools_due):
            self._recheck.pop(algorithm, None)
            try:
                await self._check_pool(algorithm)
            except Exception:
                self._failed("warm pool %s", algorithm)

    def _failed(self, what: str, name: str) -> None:
        self.errors += 1
        logger.exception("checking " + what + " failed; the next pass tries again", name)

    # -- one pod ----------------------------------------------------------------------------

    async def _check_pod(self, name: str, pod: Obj) -> None:
        ended = terminations(pod)
        terminal = (pod.get("status") or {}).get("phase") in _TERMINAL_PHASES
        memo = frozenset([*(e.key for e in ended), *([_TERMINAL] if terminal else [])])
        if memo <= self._handled.get(name, frozenset()):
            return  # nothing ended since the last look
        now = self.clock.now()
        for held in await self._held(name, algorithm_of(pod)):
            checkpoint = await self.store.get(algorithm=held.algorithm, request_id=held.request_id)
            if not _still_held(checkpoint, held):
                continue
            assert checkpoint is not None
            instance = next((e for e in ended if e.held(checkpoint.sent_at, now)), None)
            if instance is not None:
                verdict = self._ended_verdict(pod, instance, checkpoint, now)
                if verdict is not None:
                    await self._fail(checkpoint, verdict, attempt=held.attempt)
                    continue
                reason = instance.terminated.get("reason") or "ended"
                why = f"its container {instance.container} ended ({reason})"
                await self._requeue(held, WORKER_EXITED, why)
            elif terminal:
                phase = (pod.get("status") or {}).get("phase")
                await self._requeue(held, WORKER_EXITED, f"the pod is {phase}")
        self._handled[name] = memo

    def _ended_verdict(
        self, pod: Obj, instance: Ended, checkpoint: Checkpoint, now: dt.datetime
    ) -> Verdict | None:
        """The termination rule that fires for this ended instance alone (an OOMKill), or None."""
        only = {"name": instance.container, "state": {"terminated": instance.terminated}}
        status = {**(pod.get("status") or {}), "containerStatuses": [only]}
        status["initContainerStatuses"] = []
        observation = Observation(
            checkpoint=checkpoint,
            job=None,
            pods=[{**pod, "status": status}],
            events=[],
            now=now,
            workgroup=_workgroup(checkpoint),
        )
        verdict = classify(observation, self._ended_rules)
        return verdict if verdict is not None and verdict.stage is not None else None

    async def _pod_gone(self, name: str, algorithm: str) -> None:
        for held in await self._held(name, algorithm):
            await self._requeue(held, WORKER_POD_GONE, "the pod was deleted")

    async def _held(self, name: str, algorithm: str) -> list[HeldLease]:
        held = await self.store.leases_of(holder=name, limit=DEFAULT_PAGE)
        return [lease for lease in held if not algorithm or lease.algorithm == algorithm]

    # -- one pool ---------------------------------------------------------------------------

    async def _check_pool(self, algorithm: str) -> None:
        """Fail the waiting runs of a pool none of whose pods can start (see module doc)."""
        pods = [
            pod
            for pod in self.view.pool(algorithm)
            if (pod.get("status") or {}).get("phase") not in _TERMINAL_PHASES
        ]
        if not pods or any(_ready(pod) for pod in pods):
            return
        now = self.clock.now()
        page = await self.store.waiting(algorithm=algorithm, modified_before=now)
        if not page:
            return
        verdicts = [classify(self._observe(page[0], pod, now), self._stuck_rules) for pod in pods]
        if any(verdict is None for verdict in verdicts):
            return
        pending = [v.recheck_after for v in verdicts if v is not None and v.stage is None]
        if pending:
            wait = max((p for p in pending if p is not None), default=0.0)
            self._recheck[algorithm] = trio.current_time() + wait
            return
        pod = pods[0]
        while page:
            applied = 0
            for checkpoint in page:
                verdict = classify(self._observe(checkpoint, pod, now), self._stuck_rules)
                if verdict is not None and verdict.stage is not None:
                    verdict = _about_pool(verdict, algorithm, pod, len(pods))
                    applied += await self._fail(checkpoint, verdict, attempt=checkpoint.attempt)
            if len(page) < DEFAULT_PAGE or not applied:
                return
            page = await self.store.waiting(algorithm=algorithm, modified_before=now)

    def _observe(self, checkpoint: Checkpoint, pod: Obj, now: dt.datetime) -> Observation:
        return Observation(
            checkpoint=checkpoint,
            job=None,
            pods=[pod],
            events=self.view.events(pod_name(pod)),
            now=now,
            workgroup=_workgroup(checkpoint),
        )

    # -- writes -----------------------------------------------------------------------------

    async def _fail(self, checkpoint: Checkpoint, verdict: Verdict, *, attempt: int) -> int:
        assert verdict.stage is not None
        source = checkpoint.lifecycle_stage
        with run_context(request_id=checkpoint.id, algorithm=checkpoint.algorithm):
            try:
                outcome = await self.store.transition(
                    algorithm=checkpoint.algorithm,
                    request_id=checkpoint.id,
                    to=verdict.stage,
                    expected={source},
                    changes={
                        "algorithm_failure_cause": verdict.cause,
                        "algorithm_failure_details": verdict.details,
                    },
                    attempt=attempt,
                )
            except NotFound:
                return 0
            metrics.transitioned(outcome, source=source, to=verdict.stage)
            if not outcome.applied:
                return 0
            metrics.verdict(verdict.rule, verdict.stage)
            self.failed += 1
            logger.info("warm run %s -> %s: %s", source, verdict.stage, verdict.details)
        return 1

    async def _requeue(self, held: HeldLease, rule: str, why: str) -> None:
        with run_context(request_id=held.request_id, algorithm=held.algorithm):
            if not await self.store.requeue(lease=held.key, holder=held.holder):
                return  # ended, released or reaped meanwhile
            metrics.verdict(rule, Stage.BUFFERED)
            self.requeued += 1
            if held.attempt < self.max_attempts:
                logger.info(
                    "worker %s lost attempt %d: %s; queued again", held.holder, held.attempt, why
                )
                return
            details = (
                f"Its worker {held.holder} was lost in attempt {held.attempt} ({why}); "
                f"{self.max_attempts} leases of this run were lost (warm.max_attempts)."
            )
            outcome = await self.store.transition(
                algorithm=held.algorithm,
                request_id=held.request_id,
                to=Stage.FAILED,
                expected={Stage.BUFFERED},
                changes={
                    "algorithm_failure_cause": LOST_CAUSE,
                    "algorithm_failure_details": details,
                },
                attempt=held.attempt + 1,
            )
            metrics.transitioned(outcome, source=Stage.BUFFERED, to=Stage.FAILED)
            logger.warning("run lost %d leases; failed", self.max_attempts)


def _about_pool(verdict: Verdict, algorithm: str, pod: Obj, pods: int) -> Verdict:
    """The rule's details, saying that it is about the run's pool (the run has no pod)."""
    name = pod_name(pod)
    details = verdict.details if name in verdict.details else f"pod {name}: {verdict.details}"
    stuck = "its only pod" if pods == 1 else f"all {pods} of its pods"
    prefix = f"Warm pool {deployment_name(algorithm)} cannot start a worker ({stuck} stuck); "
    return attrs.evolve(verdict, details=prefix + details)


def _still_held(checkpoint: Checkpoint | None, held: HeldLease) -> bool:
    return (
        checkpoint is not None
        and checkpoint.lifecycle_stage is Stage.RUNNING
        and checkpoint.lease_holder == held.holder
        and checkpoint.attempt == held.attempt
    )


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _workgroup(checkpoint: Checkpoint) -> str:
    workgroup = checkpoint.applied_configuration.get("workgroupRef") or {}
    return str(workgroup.get("name", "")) if isinstance(workgroup, dict) else ""
