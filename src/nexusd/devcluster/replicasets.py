"""The ReplicaSet controller: keeps `spec.replicas` pods of a ReplicaSet alive, counts them.

As kube-controller-manager's replicaset controller does, it creates pods from the template
(`generateName: <replicaset>-`, so `<replicaset>-<5 chars>`; ownerReference controller=true,
blockOwnerDeletion=true; Event `SuccessfulCreate` "Created pod: <name>"), and on scale-down
deletes the pods the upstream ranking gives up first (`deletion_order`): unscheduled, then
pending, then not ready, then lower `controller.kubernetes.io/pod-deletion-cost`, then more
pods of the set on the same node, then ready for less time, more restarts, newest (Event
`SuccessfulDelete` "Deleted pod: <name>"). A pod is active while neither terminal nor
terminating; a Failed pod (evicted) is replaced and left for its owner's deletion.

Status: replicas (active pods), fullyLabeledReplicas (their labels carry all the template's),
readyReplicas (Ready=True), availableReplicas (ready for minReadySeconds), observedGeneration.
A refused pod create is Event `FailedCreate` and condition `ReplicaFailure` (reason
`FailedCreate`), retried with the controller work queue's per-item back-off (5 ms doubling
to 1000 s, reset by a create that succeeds). Simplified: no adoption of orphan pods that
match the selector (pods are only ever this controller's own), no create batching (slow start).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from .controlloop import Key, OwnerIndex, controller_ref, key_of, run_control_loop
from .objects import ApiError, Obj, condition, deep_copy, is_true
from .resources import PODS, REPLICASETS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .operations import Operations
    from .storage import Change

logger = logging.getLogger(__name__)

COMPONENT = "replicaset-controller"
#: workqueue.DefaultControllerRateLimiter's per-item exponential back-off, in seconds.
RETRY_BASE = 0.005
RETRY_CAP = 1000.0
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}
_STATUS_ORDER = (
    "replicas",
    "fullyLabeledReplicas",
    "readyReplicas",
    "availableReplicas",
    "observedGeneration",
    "conditions",
)


def active(pod: Obj) -> bool:
    """Counted as a replica: not terminal and not being deleted (FilterActivePods)."""
    phase = pod.get("status", {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not pod["metadata"].get("deletionTimestamp")


def _parse(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def ready_since(pod: Obj) -> dt.datetime | None:
    """When the pod last became Ready, or None while it is not."""
    cond = condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return _parse(cond.get("lastTransitionTime")) or dt.datetime.min.replace(tzinfo=dt.UTC)


def deletion_order(pods: list[Obj], now: dt.datetime) -> list[Obj]:
    """`pods` in the order a scale-down deletes them (ActivePodsWithRanks, upstream)."""
    on_node = collections.Counter(p["spec"].get("nodeName", "") for p in pods)

    def rank(pod: Obj) -> tuple[Any, ...]:
        node = pod["spec"].get("nodeName", "")
        since = ready_since(pod)
        cost = int((pod["metadata"].get("annotations") or {}).get(DELETION_COST, "0") or 0)
        restarts = sum(
            cs.get("restartCount", 0) for cs in pod.get("status", {}).get("containerStatuses") or []
        )
        created = _parse(pod["metadata"].get("creationTimestamp")) or now
        return (
            bool(node),
            _PHASE_RANK.get(pod.get("status", {}).get("phase", "Pending"), 1),
            since is not None,
            cost,
            -on_node[node],
            -(since or now).timestamp(),  # ready for less time first
            -restarts,
            -created.timestamp(),  # newest first
            pod["metadata"]["name"],
        )

    return sorted(pods, key=rank)


class ReplicaSetController:
    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        self.pods = OwnerIndex(ops, PODS.key, "ReplicaSet")
        self.retry_at: dict[str, float] = {}
        self.failures: dict[str, int] = {}

    def _event(self, rs: Obj, etype: str, reason: str, message: str) -> None:
        try:
            self.ops.record_event(rs, REPLICASETS, etype, reason, message, component=COMPONENT)
        except ApiError:  # like client-go's recorder: an Event that cannot be stored is dropped
            logger.debug("event %s for %s dropped", reason, rs["metadata"]["name"])

    def sync(self, key: Key) -> float | None:
        """Converge one ReplicaSet; the trio time it wants another look at, if any."""
        rs = self.ops.store.get(REPLICASETS.key, *key)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return None  # its pods go with it (garbage collector)
        uid = rs["metadata"]["uid"]
        pods = [p for p in self.pods.owned(rs) if active(p)]
        want = rs["spec"].get("replicas", 1)
        failure = None
        now = trio.current_time()
        if len(pods) < want and now >= self.retry_at.get(uid, -1.0):
            self.retry_at.pop(uid, None)
            for _ in range(want - len(pods)):
                pod, failure = self._create_pod(rs)
                if pod is None:
                    failures = self.failures.get(uid, 0)
                    self.failures[uid] = failures + 1
                    self.retry_at[uid] = now + min(RETRY_BASE * 2**failures, RETRY_CAP)
                    break
                self.failures.pop(uid, None)
                pods.append(pod)
        elif len(pods) > want:
            doomed = deletion_order(pods, self.ops.clock.now())[: len(pods) - want]
            for pod in doomed:
                self._delete_pod(rs, pod)
            gone = {p["metadata"]["name"] for p in doomed}
            pods = [p for p in pods if p["metadata"]["name"] not in gone]
        wake = self._write_status(rs, pods, failure)
        retry = self.retry_at.get(uid)
        if retry is None:
            return wake
        return retry if wake is None else min(wake, retry)

    def _create_pod(self, rs: Obj) -> tuple[Obj | None, str | None]:
        meta, template = rs["metadata"], rs["spec"].get("template") or {}
        tmeta = template.get("metadata") or {}
        pod_meta: Obj = {
            "generateName": meta["name"] + "-",
            "labels": dict(tmeta.get("labels") or {}),
        }
        if tmeta.get("annotations"):
            pod_meta["annotations"] = dict(tmeta["annotations"])
        pod_meta["ownerReferences"] = [
            {
                "apiVersion": REPLICASETS.api_version,
                "kind": REPLICASETS.kind,
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        body = {"metadata": pod_meta, "spec": deep_copy(template.get("spec") or {})}
        try:
            pod = self.ops.create(PODS, meta["namespace"], body)
        except ApiError as exc:
            self._event(rs, "Warning", "FailedCreate", f"Error creating: {exc}")
            return None, str(exc)
        self.pods.add(pod)
        self._event(rs, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        return pod, None

    def _delete_pod(self, rs: Obj, pod: Obj) -> None:
        meta = pod["metadata"]
        try:
            self.ops.delete(
                PODS, meta["namespace"], meta["name"], preconditions={"uid": meta["uid"]}
            )
        except ApiError:
            return
        self._event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {meta['name']}")

    def _write_status(self, rs: Obj, pods: list[Obj], failure: str | None) -> float | None:
        spec, old = rs["spec"], rs.get("status") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        min_ready = spec.get("minReadySeconds", 0)
        now = self.ops.clock.now()
        available, wake = 0, None
        for pod in pods:
            since = ready_since(pod)
            if since is None:
                continue
            due = (since + dt.timedelta(seconds=min_ready) - now).total_seconds()
            if min_ready == 0 or due <= 0:
                available += 1
            else:
                at = trio.current_time() + due
                wake = at if wake is None else min(wake, at)
        counts = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(
                1 for p in pods if labels.items() <= (p["metadata"].get("labels") or {}).items()
            ),
            "readyReplicas": sum(1 for p in pods if is_true(p, "Ready")),
            "availableReplicas": available,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        status: Obj = {k: v for k, v in counts.items() if v or k == "replicas"}
        conditions = [c for c in old.get("conditions") or [] if c["type"] != "ReplicaFailure"]
        previous = condition(rs, "ReplicaFailure")
        if failure is not None:
            stamp = (previous or {}).get("lastTransitionTime") or self.ops.now()
            conditions.append(
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "lastTransitionTime": stamp,
                    "reason": "FailedCreate",
                    "message": failure,
                }
            )
        elif previous is not None and rs["metadata"]["uid"] in self.retry_at:
            conditions.append(previous)  # still failing until a retried create succeeds
        if conditions:
            status["conditions"] = conditions
        status = {k: status[k] for k in _STATUS_ORDER if k in status}
        if status != old:
            current = self.ops.store.get(REPLICASETS.key, *key_of(rs))
            if current is not None and current["metadata"]["uid"] == rs["metadata"]["uid"]:
                current["status"] = status
                self.ops.write(REPLICASETS, current)
        return wake

    # -- following the store --------------------------------------------------------------

    def dirty_from(self, change: Change) -> Iterable[Key]:
        meta = change.obj["metadata"]
        if change.resource == REPLICASETS.key:
            if change.type == "DELETED":
                self.retry_at.pop(meta["uid"], None)
                self.failures.pop(meta["uid"], None)
            return [(meta["namespace"], meta["name"])]
        if change.resource == PODS.key:
            owner = self.pods.follow(change)
            return [owner] if owner is not None else []
        return []

    def resync(self) -> set[Key]:
        self.pods.rebuild()
        return {key_of(rs) for rs in self.ops.store.iter(REPLICASETS.key)}


async def run_replicaset_controller(
    *, ops: Operations, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> NoReturn:
    ctrl = ReplicaSetController(ops)
    await run_control_loop(
        ops=ops,
        sync=ctrl.sync,
        dirty_from=ctrl.dirty_from,
        resync=ctrl.resync,
        task_status=task_status,
    )


__all__ = ["ReplicaSetController", "controller_ref", "deletion_order", "run_replicaset_controller"]
