"""The Job controller: pods per attempt, back-off, deadlines, pod failure policy, TTL.

It follows the store's change history (a Job or one of its pods changed) plus its own timers
(back-off expiry, activeDeadlineSeconds, ttlSecondsAfterFinished), and converges each dirty Job
with one `sync`. Reason strings, messages, condition order and Events follow the golden files
01-06 (checklist 1-8, 10). Intervals use `trio.current_time()`, so autojump-clock tests can
run a 10 s back-off instantly. After a restart on a persisted store it picks every Job up
where the stored Job and pods say it was (`jobstate.py`). Simplification: no Indexed mode.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from .defaults import JOB_NAME_LABELS
from .jobstate import TRACKING, JobState, restored_state
from .objects import ApiError, Obj, condition, deep_copy, is_true, owner_uids
from .resources import JOBS, PODS
from .storage import TooOld

if TYPE_CHECKING:
    from .operations import Operations

logger = logging.getLogger(__name__)

COMPONENT = "job-controller"
MAX_BACKOFF = 360.0  # seconds, DefaultJobPodFailureBackOff * 2^n is capped at 6 min upstream
MSG_BACKOFF = "Job has reached the specified backoff limit"
MSG_DEADLINE = "Job was active longer than specified deadline"
MSG_COMPLETE = "Reached expected number of succeeded pods"
CREATE_RETRY = 10.0  # seconds before retrying a pod create that the API server refused
JobKey = tuple[str, str]


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _terminal(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def _condition(ctype: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": ctype,
        "status": "True",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def match_pod_failure_policy(job: Obj, pod: Obj) -> tuple[str, str]:
    """(action, message) of the first matching rule, or ("Count", "")."""
    rules = ((job["spec"].get("podFailurePolicy") or {}).get("rules")) or []
    meta = pod["metadata"]
    where = f"{meta['namespace']}/{meta['name']}"
    for i, rule in enumerate(rules):
        action = rule.get("action", "Count")
        on_codes = rule.get("onExitCodes")
        if on_codes:
            for cs in pod.get("status", {}).get("containerStatuses") or []:
                if on_codes.get("containerName") not in (None, cs.get("name")):
                    continue
                code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode", 0)
                if code and (code in on_codes.get("values", [])) == (
                    on_codes.get("operator") == "In"
                ):
                    return action, (
                        f"Container {cs['name']} for pod {where} failed with exit code "
                        f"{code} matching {action} rule at index {i}"
                    )
        for pattern in rule.get("onPodConditions") or []:
            for c in pod.get("status", {}).get("conditions") or []:
                if c.get("type") == pattern.get("type") and c.get("status") == pattern.get(
                    "status", "True"
                ):
                    return action, (
                        f"Pod {where} has condition {c['type']} matching {action} rule at index {i}"
                    )
    return "Count", ""


def past_backoff_limit_on_failure(job: Obj, pods: list[Obj]) -> bool:
    """Under restartPolicy OnFailure a failing container restarts in place (kubelet), so
    upstream counts the restarts of running and pending pods against backoffLimit."""
    spec = job["spec"]
    if (spec.get("template") or {}).get("spec", {}).get("restartPolicy") != "OnFailure":
        return False
    restarts = sum(
        cs.get("restartCount", 0)
        for pod in pods
        if pod.get("status", {}).get("phase") in ("Running", "Pending")
        for cs in pod["status"].get("containerStatuses") or []
    )
    limit = spec.get("backoffLimit", 6)
    return bool(restarts > 0) if limit == 0 else bool(restarts >= limit)


class JobController:
    def __init__(self, ops: Operations, *, backoff_base: float) -> None:
        self.ops = ops
        self.backoff_base = backoff_base
        self.states: dict[str, JobState] = {}
        self.pods_by_job: dict[str, set[str]] = collections.defaultdict(set)

    # -- bookkeeping ------------------------------------------------------------------------

    def index_pod(self, pod: Obj, old: Obj | None, deleted: bool) -> JobKey | None:
        name = pod["metadata"]["name"]
        for o in (old, pod):
            for uid in owner_uids(o) if o else []:
                self.pods_by_job[uid].discard(name)
        job_key = None
        for ref in (pod if not deleted else old or pod)["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("controller"):
                if not deleted:
                    self.pods_by_job[ref["uid"]].add(name)
                job_key = (pod["metadata"]["namespace"], ref["name"])
        return job_key

    def _owned_pods(self, job: Obj) -> list[Obj]:
        ns, uid = job["metadata"]["namespace"], job["metadata"]["uid"]
        pods = []
        for name in sorted(self.pods_by_job.get(uid, ())):
            pod = self.ops.store.get(PODS.key, ns, name)
            if pod is not None and uid in owner_uids(pod):
                pods.append(pod)
        return pods

    def _event(self, job: Obj, etype: str, reason: str, message: str) -> None:
        try:
            self.ops.record_event(job, JOBS, etype, reason, message, component=COMPONENT)
        except ApiError:  # like client-go's recorder: an Event that cannot be stored is dropped
            logger.debug("event %s for %s dropped", reason, job["metadata"]["name"])

    def _write_status(self, job: Obj, status: Obj) -> Obj:
        order = (
            "conditions",
            "startTime",
            "completionTime",
            "active",
            "succeeded",
            "failed",
            "terminating",
            "uncountedTerminatedPods",
            "ready",
        )
        job["status"] = {k: status[k] for k in order if k in status}
        return self.ops.write(JOBS, job)

    # -- sync -------------------------------------------------------------------------------

    def _pod_finished(self, job: Obj, pod: Obj) -> bool:
        """Terminal, or deleted while running (counted at once unless a podFailurePolicy
        makes the controller wait for the terminal phase, as upstream does)."""
        if _terminal(pod):
            return True
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        return deleting and not job["spec"].get("podFailurePolicy")

    def remove_tracking(self, pod: Obj) -> None:
        """PATCH the `batch.kubernetes.io/job-tracking` finalizer away (checklist 9)."""
        current = self.ops.store.get(
            PODS.key, pod["metadata"]["namespace"], pod["metadata"]["name"]
        )
        if current is None:
            return
        finalizers = current["metadata"].get("finalizers") or []
        if TRACKING not in finalizers:
            return
        rest = [f for f in finalizers if f != TRACKING]
        if rest:
            current["metadata"]["finalizers"] = rest
        else:
            current["metadata"].pop("finalizers", None)
        self.ops.write(PODS, current)

    def sync(self, key: JobKey) -> float | None:
        """Converge one Job; return the trio time at which it wants another look, if any."""
        job = self.ops.store.get(JOBS.key, *key)
        if job is None:
            return None
        uid = job["metadata"]["uid"]
        pods = self._owned_pods(job)
        if job["metadata"].get("deletionTimestamp"):
            for pod in pods:
                self.remove_tracking(pod)
            return None
        now = trio.current_time()
        st = self.states.get(uid)
        if st is None:
            st = restored_state(job, pods, now=now, wall=self.ops.clock.now())
            self.states[uid] = st
        if is_true(job, "Complete") or is_true(job, "Failed"):
            for pod in pods:
                if self._pod_finished(job, pod) or _terminal(pod):
                    self.remove_tracking(pod)
            return self._ttl(job, st, now)
        status: dict[str, Any] = deep_copy(job.get("status") or {})
        if "startTime" not in status:
            status["startTime"] = self.ops.now()
        if st.started_at is None:
            st.started_at = now
        spec = job["spec"]
        new_succeeded, new_failed, ignored = self._count_terminal(job, pods, st, now)
        failed_total = status.get("failed", 0) + len(new_failed)
        target = condition(job, "FailureTarget")
        if target is not None:
            st.failure = (target["reason"], target["message"])
        wake: float | None = None
        if st.failure is None and (
            failed_total > spec.get("backoffLimit", 6) or past_backoff_limit_on_failure(job, pods)
        ):
            st.failure = ("BackoffLimitExceeded", MSG_BACKOFF)
        deadline = spec.get("activeDeadlineSeconds")
        if st.failure is None and deadline is not None:
            if now >= st.started_at + deadline:
                st.failure = ("DeadlineExceeded", MSG_DEADLINE)
            else:
                wake = st.started_at + deadline
        active = [
            p for p in pods if not _terminal(p) and not p["metadata"].get("deletionTimestamp")
        ]
        if st.failure is not None:
            for pod in active:
                deleted = self._delete_pod(job, pod)
                if deleted is not None and self._pod_finished(job, deleted):
                    st.counted.add(pod["metadata"]["uid"])
                    new_failed.append(pod["metadata"]["uid"])
            pods = self._owned_pods(job)
            active = []
            failed_total = status.get("failed", 0) + len(new_failed)
        terminating = sum(
            1 for p in pods if not _terminal(p) and p["metadata"].get("deletionTimestamp")
        )
        succeeded_total = status.get("succeeded", 0) + len(new_succeeded)
        succeeding = st.failure is None and succeeded_total >= spec.get("completions", 1)
        conditions = status.setdefault("conditions", [])
        stamp = self.ops.now()
        if st.failure is not None and not any(c["type"] == "FailureTarget" for c in conditions):
            conditions.append(_condition("FailureTarget", *st.failure, stamp))
        if succeeding and not any(c["type"] == "SuccessCriteriaMet" for c in conditions):
            conditions.append(
                _condition("SuccessCriteriaMet", "CompletionsReached", MSG_COMPLETE, stamp)
            )
        if not conditions:
            status.pop("conditions")
        if not st.failure and not succeeding:
            active += self._maybe_create(job, st, active, succeeded_total, now)
            wake = _earliest(wake, st.retry_at)
        # 1. record the newly finished pods as uncounted, then drop their finalizers
        self._put_counts(status, active, status.get("succeeded", 0), status.get("failed", 0))
        status["terminating"] = terminating
        uncounted: dict[str, list[str]] = {}
        if new_succeeded:
            uncounted["succeeded"] = new_succeeded
        if new_failed:
            uncounted["failed"] = new_failed
        status["uncountedTerminatedPods"] = uncounted
        if status != (job.get("status") or {}):
            job = self._write_status(job, status)
        for pod in pods:
            if pod["metadata"]["uid"] in (*new_succeeded, *new_failed, *ignored):
                self.remove_tracking(pod)
        # 2. move them to the counts; finish once nothing is left terminating
        self._put_counts(status, active, succeeded_total, failed_total)
        status["uncountedTerminatedPods"] = {}
        finished = (st.failure is not None or succeeding) and terminating == 0
        if finished:
            stamp = self.ops.now()
            if st.failure is not None:
                conditions.append(_condition("Failed", *st.failure, stamp))
            else:
                status["completionTime"] = stamp
                conditions.append(_condition("Complete", "CompletionsReached", MSG_COMPLETE, stamp))
        if status != (job.get("status") or {}):
            job = self._write_status(job, status)
        if finished:
            if st.failure is not None:
                self._event(job, "Warning", st.failure[0], st.failure[1])
            else:
                self._event(job, "Normal", "Completed", "Job completed")
            st.finished_at = now
            return self._ttl(job, st, now)
        return wake

    def _maybe_create(
        self, job: Obj, st: JobState, active: list[Obj], succeeded: int, now: float
    ) -> list[Obj]:
        spec = job["spec"]
        want = min(spec.get("parallelism", 1), spec.get("completions", 1) - succeeded)
        st.retry_at = None
        if len(active) >= want or spec.get("suspend"):
            return []
        due = max(st.last_failure_at + self._backoff(st.failures), st.create_failed_at)
        if now < due:
            st.retry_at = due
            return []
        created = []
        for _ in range(want - len(active)):
            pod = self._create_pod(job, st, now)
            if pod is None:
                break
            created.append(pod)
        return created

    def _backoff(self, failures: int) -> float:
        if failures == 0:
            return 0.0
        return float(min(self.backoff_base * 2 ** (failures - 1), MAX_BACKOFF))

    def _count_terminal(
        self, job: Obj, pods: list[Obj], st: JobState, now: float
    ) -> tuple[list[str], list[str], list[str]]:
        succeeded, failed, ignored = [], [], []
        for pod in pods:
            pod_uid = pod["metadata"]["uid"]
            if pod_uid in st.counted or not self._pod_finished(job, pod):
                continue
            st.counted.add(pod_uid)
            if pod.get("status", {}).get("phase") == "Succeeded":
                succeeded.append(pod_uid)
                continue
            st.failures += 1
            st.last_failure_at = now
            action, message = match_pod_failure_policy(job, pod)
            if action == "Ignore":
                ignored.append(pod_uid)
                continue
            failed.append(pod_uid)
            if action == "FailJob" and st.failure is None:
                st.failure = ("PodFailurePolicy", message)
        return succeeded, failed, ignored

    @staticmethod
    def _put_counts(status: Obj, active: list[Obj], succeeded: int, failed: int) -> None:
        for field, value in (("active", len(active)), ("succeeded", succeeded), ("failed", failed)):
            if value:
                status[field] = value
            else:
                status.pop(field, None)
        status.setdefault("terminating", 0)
        status.setdefault("uncountedTerminatedPods", {})
        status["ready"] = sum(1 for p in active if is_true(p, "Ready"))

    def _create_pod(self, job: Obj, st: JobState, now: float) -> Obj | None:
        meta, template = job["metadata"], job["spec"]["template"]
        tmeta = template.get("metadata") or {}
        pod_meta: Obj = {
            "generateName": meta["name"] + "-",
            "labels": dict(tmeta.get("labels") or {}),
        }
        if tmeta.get("annotations"):
            pod_meta["annotations"] = dict(tmeta["annotations"])
        pod_meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        pod_meta["finalizers"] = [TRACKING]
        try:
            pod = self.ops.create(
                PODS,
                meta["namespace"],
                {"metadata": pod_meta, "spec": deep_copy(template.get("spec") or {})},
            )
        except ApiError as exc:
            self._event(job, "Warning", "FailedCreate", f"Error creating: {exc}")
            st.create_failed_at = now + CREATE_RETRY
            return None
        self.pods_by_job[meta["uid"]].add(pod["metadata"]["name"])
        self._event(job, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        return pod

    def _delete_pod(self, job: Obj, pod: Obj) -> Obj | None:
        try:
            deleted, _ = self.ops.delete(
                PODS, pod["metadata"]["namespace"], pod["metadata"]["name"]
            )
        except ApiError:
            return None
        self._event(job, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
        return deleted

    def _ttl(self, job: Obj, st: JobState, now: float) -> float | None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return None
        if st.finished_at is None:
            st.finished_at = now
        due: float = st.finished_at + ttl
        if now < due:
            return due
        meta = job["metadata"]
        with contextlib.suppress(ApiError):
            self.ops.delete(
                JOBS,
                meta["namespace"],
                meta["name"],
                propagation="Foreground",
                preconditions={"uid": meta["uid"]},
            )
        return None

    def release_pods_of(self, job_uid: str) -> None:
        """The Job is gone: its pods lose the tracking finalizer at once (checklist 9)."""
        for name in list(self.pods_by_job.pop(job_uid, ())):
            for pod in self.ops.store.iter(PODS.key):
                if pod["metadata"]["name"] == name and job_uid in owner_uids(pod):
                    self.remove_tracking(pod)
                    break

    def resync_keys(self) -> set[JobKey]:
        self.pods_by_job.clear()
        for pod in self.ops.store.iter(PODS.key):
            self.index_pod(pod, None, False)
        return {
            (j["metadata"]["namespace"], j["metadata"]["name"])
            for j in self.ops.store.iter(JOBS.key)
        }


async def run_job_controller(
    *,
    ops: Operations,
    backoff_base: float = 10.0,
    sync_delay: float = 0.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Sync Jobs on their own changes at once and on their pods' changes after `sync_delay`
    (upstream batches pod events for about 1 s, checklist 7)."""
    ctrl = JobController(ops, backoff_base=backoff_base)
    dirty = ctrl.resync_keys()
    cursor = ops.store.resource_version
    timers: dict[JobKey, float] = {}
    task_status.started()
    while True:
        for key in sorted(dirty):
            timers.pop(key, None)
            wake = ctrl.sync(key)
            if wake is not None:
                timers[key] = wake
        dirty = set()
        with trio.move_on_at(min(timers.values(), default=math.inf)):
            await ops.store.wait_after(cursor)
        try:
            changes = ops.store.changes_since(cursor)
        except TooOld:
            changes = []
            dirty = ctrl.resync_keys()
        cursor = ops.store.resource_version
        now = trio.current_time()
        for change in changes:
            if change.resource == JOBS.key:
                meta = change.obj["metadata"]
                dirty.add((meta["namespace"], meta["name"]))
                if change.type == "DELETED":
                    ctrl.release_pods_of(meta["uid"])
                    ctrl.states.pop(meta["uid"], None)
            elif change.resource == PODS.key:
                owner = ctrl.index_pod(change.obj, change.old, change.type == "DELETED")
                if owner is None or ops.store.peek(JOBS.key, *owner) is None:
                    if change.type != "DELETED":
                        ctrl.remove_tracking(change.obj)  # orphaned: let it go at once
                elif sync_delay <= 0:
                    dirty.add(owner)
                else:
                    timers[owner] = min(timers.get(owner, math.inf), now + sync_delay)
        dirty |= {k for k, t in timers.items() if t <= now}


__all__ = ["JOB_NAME_LABELS", "JobController", "run_job_controller"]
