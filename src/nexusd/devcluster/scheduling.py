"""The scheduler: binds pending pods to simulated Nodes, or explains why it cannot (07a-c).

A pod without `spec.nodeName` is checked against every Node with the default filter plugins'
order and texts: TaintToleration (`had untolerated taint(s)`), NodeAffinity (`nodeSelector`
and required node affinity: `didn't match Pod's node affinity/selector`), NodeResourcesFit
(`Insufficient cpu|memory`, `Too many pods`). The first fitting node (fewest pods, then name)
gets the pod (`spec.nodeName`, `PodScheduled=True`, Event `Scheduled`). Otherwise the pod
keeps `PodScheduled=False reason=Unschedulable` with the 1.36 FitError message and a
`FailedScheduling` Event. Any Node change or pod removal retries the unschedulable pods at
once (checklist 13). An optional autoscaler adds a node to a group with `autoscale_max` when a
pending pod would fit a fresh node of that group.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from .events import record_scheduler_event
from .nodes import NodeGroup, create_node, node_object, parse_quantity
from .resources import NODES, PODS
from .storage import TooOld

if TYPE_CHECKING:
    from .objects import Obj
    from .operations import Operations
    from .storage import Change

logger = logging.getLogger(__name__)

MSG_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
MSG_TAINT = "node(s) had untolerated taint(s)"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
PodKey = tuple[str, str]


# -- filters (pure functions) --------------------------------------------------------------


def _requirement_matches(req: Obj, labels: dict[str, str]) -> bool:
    key, op, values = req.get("key", ""), req.get("operator", ""), req.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        try:
            have, want = int(labels[key]), int(values[0])
        except (KeyError, IndexError, ValueError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def _field_matches(req: Obj, node: Obj) -> bool:
    if req.get("key") != "metadata.name":
        return False
    return _requirement_matches({**req, "key": "n"}, {"n": node["metadata"]["name"]})


def node_affinity_matches(pod: Obj, node: Obj) -> bool:
    """nodeSelector AND required node affinity (terms ORed, expressions ANDed)."""
    labels: dict[str, str] = node["metadata"].get("labels") or {}
    spec = pod["spec"]
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms")
    if not terms:
        return True
    for term in terms:
        exprs = term.get("matchExpressions") or []
        fields = term.get("matchFields") or []
        if not exprs and not fields:
            continue
        if all(_requirement_matches(e, labels) for e in exprs) and all(
            _field_matches(f, node) for f in fields
        ):
            return True
    return False


def tolerates(toleration: Obj, taint: Obj) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    op = str(toleration.get("operator", "Equal"))
    if not toleration.get("key"):
        return op == "Exists"
    if toleration["key"] != taint.get("key"):
        return False
    return op == "Exists" or bool(toleration.get("value", "") == taint.get("value", ""))


def taints_tolerated(pod: Obj, node: Obj) -> bool:
    tolerations = pod["spec"].get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return False
    return True


def pod_requests(pod: Obj) -> dict[str, float]:
    """Summed container requests (limits stand in for missing requests, as defaulting does)."""
    total: dict[str, float] = collections.defaultdict(float)
    for c in pod["spec"].get("containers") or []:
        res = c.get("resources") or {}
        asked = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        for name in ("cpu", "memory"):
            if name in asked:
                total[name] += parse_quantity(asked[name])
    return dict(total)


def insufficient(pod: Obj, node: Obj, used: dict[str, float], pods_on_node: int) -> list[str]:
    """NodeResourcesFit's reasons, in its order: pods first, then cpu, memory."""
    alloc = (node.get("status") or {}).get("allocatable") or {}
    reasons = []
    if "pods" in alloc and pods_on_node + 1 > parse_quantity(alloc["pods"]):
        reasons.append("Too many pods")
    for name, want in pod_requests(pod).items():
        if name in alloc and want > 0 and used.get(name, 0.0) + want > parse_quantity(alloc[name]):
            reasons.append(f"Insufficient {name}")
    return reasons


def filter_node(pod: Obj, node: Obj, used: dict[str, float], pods_on_node: int) -> list[str]:
    """Why `node` cannot take `pod` (empty: it can). Stops at the first failing plugin."""
    if not taints_tolerated(pod, node):
        return [MSG_TAINT]
    if not node_affinity_matches(pod, node):
        return [MSG_AFFINITY]
    return insufficient(pod, node, used, pods_on_node)


def fit_error(reasons_by_node: dict[str, list[str]]) -> str:
    """The 1.36 FitError text: sorted `<n> <reason>` histogram, then the PostFilter text."""
    n = len(reasons_by_node)
    hist: collections.Counter[str] = collections.Counter()
    preempt: collections.Counter[str] = collections.Counter()
    for reasons in reasons_by_node.values():
        hist.update(reasons)
        resolvable = all(r.startswith(("Insufficient", "Too many")) for r in reasons)
        preempt[NO_VICTIMS if resolvable else NOT_HELPFUL] += 1
    parts = sorted(f"{count} {reason}" for reason, count in hist.items())
    pre = sorted(f"{count} {reason}" for reason, count in preempt.items())
    return (
        f"0/{n} nodes are available: {', '.join(parts)}. no new claims to deallocate, "
        f"preemption: 0/{n} nodes are available: {', '.join(pre)}."
    )


# -- the loop ------------------------------------------------------------------------------


def _pending(pod: Obj) -> bool:
    return (
        not pod["spec"].get("nodeName")
        and not pod["metadata"].get("deletionTimestamp")
        and pod.get("status", {}).get("phase", "Pending") == "Pending"
        and pod["spec"].get("schedulerName", "default-scheduler") == "default-scheduler"
    )


def _holds_resources(pod: Obj) -> bool:
    return bool(pod["spec"].get("nodeName")) and pod.get("status", {}).get("phase") not in (
        "Succeeded",
        "Failed",
    )


class Usage:
    """Requests held and pods bound, per node name."""

    def __init__(self) -> None:
        self.used: dict[str, dict[str, float]] = collections.defaultdict(dict)
        self.count: collections.Counter[str] = collections.Counter()

    def add(self, pod: Obj, node: str, sign: int = 1) -> None:
        self.count[node] += sign
        with contextlib.suppress(ValueError):  # bound by another scheduler: skip it
            for name, value in pod_requests(pod).items():
                self.used[node][name] = self.used[node].get(name, 0.0) + sign * value

    def follow(self, change: Change) -> None:
        """Account for one pod write: what its old state held is released, its new one's
        taken (a bind, a pod finishing, a delete)."""
        if change.old is not None and _holds_resources(change.old):
            self.add(change.old, change.old["spec"]["nodeName"], -1)
        if change.type != "DELETED" and _holds_resources(change.obj):
            self.add(change.obj, change.obj["spec"]["nodeName"])

    def copy(self) -> Usage:
        twin = Usage()
        twin.used.update({node: dict(used) for node, used in self.used.items()})
        twin.count.update(self.count)
        return twin


class Scheduler:
    def __init__(self, ops: Operations, groups: tuple[NodeGroup, ...] = ()) -> None:
        self.ops = ops
        self.groups = groups
        #: pod key -> trio time it first failed to schedule (the autoscaler's clock)
        self.unschedulable: dict[PodKey, float] = {}
        self.scale_ups: dict[str, float] = {}

    def usage(self) -> Usage:
        """What the pods bound now hold, node by node: one walk over every pod (at start, and
        when the change log has moved on too far); `run_scheduler` then follows changes."""
        usage = Usage()
        for pod in self.ops.store.iter(PODS.key):
            if _holds_resources(pod):
                usage.add(pod, pod["spec"]["nodeName"])
        return usage

    def schedule(self, key: PodKey, usage: Usage | None = None) -> bool:
        """Try once; True if bound. `usage` is the pass's, kept up to date as pods bind."""
        pod = self.ops.store.get(PODS.key, *key)
        if pod is None or not _pending(pod):
            self.unschedulable.pop(key, None)
            return False
        if usage is None:
            usage = self.usage()
        used, count = usage.used, usage.count
        nodes = list(self.ops.store.iter(NODES.key))
        try:
            pod_requests(pod)
        except ValueError as exc:  # the API server refuses such a pod; this one never binds
            self._mark_unschedulable(pod, f"invalid resource quantity: {exc}")
            return False
        reasons: dict[str, list[str]] = {}
        for node in sorted(
            nodes, key=lambda n: (count[n["metadata"]["name"]], n["metadata"]["name"])
        ):
            name = node["metadata"]["name"]
            why = filter_node(pod, node, used.get(name, {}), count[name])
            if not why:
                self._bind(pod, name)
                usage.add(pod, name)
                self.unschedulable.pop(key, None)
                return True
            reasons[name] = why
        self._mark_unschedulable(
            pod, fit_error(reasons) if nodes else "no nodes available to schedule pods"
        )
        self.unschedulable.setdefault(key, trio.current_time())
        return False

    def _bind(self, pod: Obj, node: str) -> None:
        now = self.ops.now()
        pod["spec"]["nodeName"] = node
        conditions = [
            c for c in pod["status"].get("conditions") or [] if c["type"] != "PodScheduled"
        ]
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
        )
        pod["status"]["conditions"] = conditions
        bound = self.ops.write(PODS, pod)
        meta = bound["metadata"]
        message = f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}"
        record_scheduler_event(self.ops, pod, "Normal", "Scheduled", "Binding", message)

    def _mark_unschedulable(self, pod: Obj, message: str) -> None:
        current = next(
            (c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"), None
        )
        if current is not None and current.get("message") == message:
            return
        condition = {
            "type": "PodScheduled",
            "observedGeneration": pod["metadata"].get("generation", 1),
            "status": "False",
            "lastProbeTime": None,
            "lastTransitionTime": self.ops.now(),
            "reason": "Unschedulable",
            "message": message,
        }
        others = [c for c in pod["status"].get("conditions") or [] if c["type"] != "PodScheduled"]
        pod["status"]["conditions"] = [*others, condition]
        self.ops.write(PODS, pod)
        record_scheduler_event(self.ops, pod, "Warning", "FailedScheduling", "Scheduling", message)

    # -- autoscaling ---------------------------------------------------------------------

    def autoscale(self, now: float) -> float | None:
        """Add nodes for long-enough pending pods; return when to look again, if ever."""
        wake: float | None = None
        for group in self.groups:
            if group.autoscale_max is None:
                continue
            size = sum(
                1
                for n in self.ops.store.iter(NODES.key)
                if n["metadata"]["name"].rsplit("-", 1)[0] == group.name
            )
            if size >= group.autoscale_max:
                continue
            for key, since in sorted(self.unschedulable.items(), key=lambda kv: kv[1]):
                pod = self.ops.store.peek(PODS.key, *key)
                if pod is None or filter_node(pod, node_object(group, size), {}, 0):
                    continue
                due = max(since, self.scale_ups.get(group.name, -1e18)) + group.autoscale_delay
                if now < due:
                    wake = due if wake is None else min(wake, due)
                    break
                message = (
                    f"pod triggered scale-up: [{{{group.name} {size}->{size + 1} "
                    f"(max: {group.autoscale_max})}}]"
                )
                record_scheduler_event(
                    self.ops,
                    pod,
                    "Normal",
                    "TriggeredScaleUp",
                    "ScaleUp",
                    message,
                    component="cluster-autoscaler",
                    instance="cluster-autoscaler",
                )
                create_node(self.ops, group, size)
                self.scale_ups[group.name] = now
                break
        return wake


def _pending_keys(ops: Operations) -> set[PodKey]:
    return {
        (p["metadata"]["namespace"], p["metadata"]["name"])
        for p in ops.store.iter(PODS.key)
        if _pending(p)
    }


async def run_scheduler(
    *,
    ops: Operations,
    groups: tuple[NodeGroup, ...] = (),
    task_status: trio.TaskStatus[Scheduler] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Schedule new pods; retry unschedulable ones on Node changes and freed capacity."""
    sched = Scheduler(ops, groups)
    dirty = _pending_keys(ops)
    cursor = ops.store.resource_version
    # What bound pods hold, kept up to date from the change log (the binds of a pass come
    # back through it too), so a pass costs its pending pods, not every pod there is.
    usage = sched.usage()
    task_status.started(sched)
    wake: float | None = None
    while True:
        if dirty:
            this_pass = usage.copy()  # binds count at once for the rest of the pass
            for key in sorted(dirty):
                sched.schedule(key, this_pass)
        wake = sched.autoscale(trio.current_time())
        with trio.move_on_at(wake if wake is not None else float("inf")):
            await ops.store.wait_after(cursor)
        dirty = set()
        try:
            changes = ops.store.changes_since(cursor)
        except TooOld:  # the log moved on too far: start over from the objects
            changes = []
            usage = sched.usage()
            dirty = _pending_keys(ops)
        cursor = ops.store.resource_version
        retry_all = False
        for change in changes:
            meta: Any = change.obj["metadata"]
            if change.resource == NODES.key:
                retry_all = True
            elif change.resource == PODS.key:
                usage.follow(change)
                key = (meta["namespace"], meta["name"])
                if change.type == "ADDED" and _pending(change.obj):
                    dirty.add(key)
                elif change.type == "DELETED" or not _holds_resources(change.obj):
                    retry_all = retry_all or (
                        change.old is not None and _holds_resources(change.old)
                    )
                    if change.type == "DELETED":
                        sched.unschedulable.pop(key, None)
        if retry_all:
            dirty |= set(sched.unschedulable)


__all__ = [
    "Scheduler",
    "filter_node",
    "fit_error",
    "node_affinity_matches",
    "run_scheduler",
    "taints_tolerated",
]
