"""Events as the real components write them (golden file 13).

* The scheduler (and the simulated autoscaler) write through events.k8s.io/v1: seen through
  core/v1 the Event has `eventTime` (MicroTime), `action`, `reportingComponent` and
  `reportingInstance`, an empty `source`, null first/last timestamps and no `count`.
* The kubelet writes core/v1 Events like the job-controller does (`count: 1`, `source` with
  `component: kubelet` and `host: <node>`), via `Operations.record_event`'s shape.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import TYPE_CHECKING

from .resources import EVENTS

if TYPE_CHECKING:
    from .objects import Obj
    from .operations import Operations

SCHEDULER = "default-scheduler"
SCHEDULER_INSTANCE = "default-scheduler-devcluster"


def micro_time(ops: Operations) -> str:
    """metav1.MicroTime: UTC with six fractional digits."""
    return ops.clock.now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _involved(pod: Obj) -> Obj:
    meta = pod["metadata"]
    return {
        "kind": "Pod",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "apiVersion": "v1",
        "resourceVersion": meta.get("resourceVersion", ""),
    }


def record_scheduler_event(
    ops: Operations,
    pod: Obj,
    etype: str,
    reason: str,
    action: str,
    message: str,
    *,
    component: str = SCHEDULER,
    instance: str = SCHEDULER_INSTANCE,
) -> Obj:
    """An events.k8s.io/v1-style Event about a pod, stored as core/v1 (checklist 14)."""
    meta = pod["metadata"]
    event: Obj = {
        "metadata": {
            "name": f"{meta['name']}.{secrets.token_hex(8)}",
            "namespace": meta["namespace"],
        },
        "involvedObject": _involved(pod),
        "reason": reason,
        "message": message,
        "source": {},
        "firstTimestamp": None,
        "lastTimestamp": None,
        "type": etype,
        "eventTime": micro_time(ops),
        "action": action,
        "reportingComponent": component,
        "reportingInstance": instance,
    }
    return ops.create(EVENTS, meta["namespace"], event)


def record_kubelet_event(
    ops: Operations, pod: Obj, etype: str, reason: str, message: str, *, container: str = ""
) -> Obj:
    """A core/v1 Event from the kubelet on the pod's node (`count: 1`, `source.host`)."""
    meta = pod["metadata"]
    node = pod["spec"].get("nodeName", "")
    involved = _involved(pod)
    if container:
        involved["fieldPath"] = f"spec.containers{{{container}}}"
    now = ops.now()
    event: Obj = {
        "metadata": {
            "name": f"{meta['name']}.{secrets.token_hex(8)}",
            "namespace": meta["namespace"],
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": node},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": etype,
        "eventTime": None,
        "reportingComponent": "kubelet",
        "reportingInstance": node,
    }
    return ops.create(EVENTS, meta["namespace"], event)


__all__ = ["micro_time", "record_kubelet_event", "record_scheduler_event"]
