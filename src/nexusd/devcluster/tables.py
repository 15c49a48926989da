"""The server-side Table format: what `kubectl get` shows, rendered by the embedded cluster.

kubectl asks for a list or an object with
`Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (v1beta1 as a second choice) and prints
the columns the server chooses. A Table (`meta.k8s.io/v1`, kind `Table`) has
`columnDefinitions` (name, type, format, description, priority: 0 shown by default, 1 only with
`-o wide`) and `rows`, each with its `cells` and the `object`: a `PartialObjectMetadata` by
default, the whole object with `?includeObject=Object`, nothing with `None`.

Columns, as the real API server's printers make them (k8s.io/kubernetes pkg/printers):

- Jobs: NAME STATUS COMPLETIONS DURATION AGE, wide CONTAINERS IMAGES SELECTOR.
- Deployments: NAME READY UP-TO-DATE AVAILABLE AGE; ReplicaSets: NAME DESIRED CURRENT READY
  AGE; both wide CONTAINERS IMAGES SELECTOR.
- Pods: NAME READY STATUS RESTARTS AGE, wide IP NODE NOMINATED-NODE READINESS-GATES (the
  STATUS reason as kubectl shows it: a waiting or terminated container's reason, `Completed`,
  `Terminating`; the embedded kubelet runs no init containers, so their `Init:` states are
  not rendered).
- custom resources: NAME and their CRD version's `additionalPrinterColumns`, each cell the
  first result of the column's JSONPath (python-jsonpath; the Kubernetes form `.spec.x`
  is RFC 9535's `$.spec.x`), typed like the apiextensions server does (`date` as an age);
  a CRD without columns gets AGE.
- anything else: NAME AGE.

Ages and durations use apimachinery's `HumanDuration` spelling (`45s`, `3m12s`, `5h4m`, `3d4h`),
written out below: no Python package spells durations the way kubectl users read them.
"""

from __future__ import annotations

import datetime as dt
import json
from email.message import Message
from typing import TYPE_CHECKING, Any

import jsonpath

from .resources import DEPLOYMENTS, JOBS, PODS, REPLICASETS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .objects import Obj
    from .resources import ResourceType

#: The Table versions served, in the order a client's Accept header is honoured.
TABLE_VERSIONS = ("v1", "v1beta1")
INCLUDE_OBJECT = ("Metadata", "Object", "None")

_NAME = "Name must be unique within a namespace. Cannot be updated."
_AGE = "CreationTimestamp is a timestamp representing the server time when this object was created."
_SINCE_NOW_SLACK = -1  # seconds a timestamp may lie in the future before it is `<invalid>`


def _column(name: str, description: str, *, kind: str = "string", priority: int = 0) -> Obj:
    column: Obj = {"name": name, "type": kind, "format": "", "description": description}
    if name == "Name":
        column["format"] = "name"
    column["priority"] = priority
    return column


JOB_COLUMNS = [
    _column("Name", _NAME),
    _column("Status", "Status of the job."),
    _column("Completions", "The number of pods which reached phase Succeeded."),
    _column("Duration", "Time required to complete the job."),
    _column("Age", _AGE),
    _column("Containers", "Names of each container in the template.", priority=1),
    _column("Images", "Images referenced by each container in the template.", priority=1),
    _column("Selector", "A label query over pods that should match the pod count.", priority=1),
]
POD_COLUMNS = [
    _column("Name", _NAME),
    _column("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    _column("Status", "The aggregate status of the containers in this pod."),
    _column(
        "Restarts",
        "The number of times the containers in this pod have been restarted and when the last "
        "container in this pod has restarted.",
    ),
    _column("Age", _AGE),
    _column("IP", "IP address allocated to the pod.", priority=1),
    _column("Node", "The node the pod is bound to.", priority=1),
    _column("Nominated Node", "The node the scheduler nominated for the pod.", priority=1),
    _column("Readiness Gates", "Pod readiness gates met, of those declared.", priority=1),
]
_TEMPLATE_COLUMNS = JOB_COLUMNS[-3:]  # Containers, Images, Selector (wide)
DEPLOYMENT_COLUMNS = [
    _column("Name", _NAME),
    _column("Ready", "Number of the pod with ready state"),
    _column(
        "Up-to-date",
        "Total number of non-terminating pods targeted by this deployment "
        "that have the desired template spec.",
    ),
    _column(
        "Available",
        "Total number of available non-terminating pods (ready for at least "
        "minReadySeconds) targeted by this deployment.",
    ),
    _column("Age", _AGE),
    *_TEMPLATE_COLUMNS,
]
REPLICASET_COLUMNS = [
    _column("Name", _NAME),
    _column("Desired", "Replicas is the number of desired pods.", kind="integer"),
    _column(
        "Current",
        "Replicas is the most recently observed number of non-terminating pods.",
        kind="integer",
    ),
    _column(
        "Ready",
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
        kind="integer",
    ),
    _column("Age", _AGE),
    *_TEMPLATE_COLUMNS,
]
DEFAULT_COLUMNS = [_column("Name", _NAME), _column("Age", _AGE)]
#: The column a CRD version without `additionalPrinterColumns` gets.
CRD_AGE_COLUMN: Obj = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def table_version(accept: str) -> str | None:
    """The Table version the Accept header asks for first (`v1`, `v1beta1`), or None when the
    client wants plain objects."""
    for media_range in accept.split(","):
        parsed = Message()
        parsed["content-type"] = media_range.strip()
        if parsed.get_content_type() != "application/json":
            continue
        version = parsed.get_param("v")
        if (
            parsed.get_param("as") == "Table"
            and parsed.get_param("g") == "meta.k8s.io"
            and version in TABLE_VERSIONS
        ):
            return str(version)
    return None


def render(
    rt: ResourceType,
    objects: Sequence[Obj],
    *,
    now: dt.datetime,
    version: str = "v1",
    include_object: str = "Metadata",
    printer_columns: Sequence[Obj] | None = None,
    metadata: Obj | None = None,
) -> Obj:
    """The Table of `objects` (each with kind/apiVersion) of type `rt`. `printer_columns` are a
    custom resource's CRD columns (None for a built-in type); `metadata` the list's (or the
    object's) resourceVersion and paging fields."""
    columns, cells = _printer(rt, printer_columns, now)
    rows = []
    for obj in objects:
        row: Obj = {"cells": cells(obj), "object": _row_object(obj, include_object, version)}
        if rt == PODS:
            conditions = _pod_row_conditions(obj)
            if conditions:
                row["conditions"] = conditions
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": metadata or {},
        "columnDefinitions": columns,
        "rows": rows,
    }


def _printer(
    rt: ResourceType, printer_columns: Sequence[Obj] | None, now: dt.datetime
) -> tuple[list[Obj], Callable[[Obj], list[Any]]]:
    """The column definitions of `rt` and the function making one object's cells."""
    if rt.custom:
        crd_columns = list(printer_columns or []) or [CRD_AGE_COLUMN]
        paths = [jsonpath.compile("$" + column["jsonPath"]) for column in crd_columns]

        def custom_cells(obj: Obj) -> list[Any]:
            return [_name(obj)] + [
                _crd_cell(column, path, obj, now)
                for column, path in zip(crd_columns, paths, strict=True)
            ]

        return [_column("Name", _NAME), *map(_crd_column, crd_columns)], custom_cells
    if rt == JOBS:
        return JOB_COLUMNS, lambda obj: job_cells(obj, now)
    if rt == PODS:
        return POD_COLUMNS, lambda obj: pod_cells(obj, now)
    if rt == DEPLOYMENTS:
        return DEPLOYMENT_COLUMNS, lambda obj: replicated_cells(obj, now, deployment=True)
    if rt == REPLICASETS:
        return REPLICASET_COLUMNS, lambda obj: replicated_cells(obj, now, deployment=False)
    return DEFAULT_COLUMNS, lambda obj: [
        _name(obj),
        since(obj.get("metadata", {}).get("creationTimestamp"), now),
    ]


def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _row_object(obj: Obj, include: str, version: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": obj.get("metadata", {}),
    }


# --- custom resources ------------------------------------------------------------------


def _crd_column(column: Obj) -> Obj:
    description = column.get("description") or (
        f"Custom resource definition column (in JSONPath format): {column['jsonPath']}"
    )
    return {
        "name": column["name"],
        "type": column.get("type", "string"),
        "format": column.get("format", ""),
        "description": description,
        "priority": int(column.get("priority", 0)),
    }


def _crd_cell(
    column: Obj, path: jsonpath.JSONPath | jsonpath.CompoundJSONPath, obj: Obj, now: dt.datetime
) -> Any:
    """The first JSONPath result, typed by the column (None when absent or of another type)."""
    found = path.findall(obj)
    if not found or found[0] is None:
        return None
    value = found[0]
    kind = column.get("type", "string")
    if kind == "string":
        if isinstance(value, str):
            return value
        return json.dumps(value, separators=(",", ":"))  # 3 -> "3", true -> "true"
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        stamp = _parse_time(value)
        return "<invalid>" if stamp is None else human_duration((now - stamp).total_seconds())
    return None


# --- Jobs ---------------------------------------------------------------------------------


def job_cells(job: Obj, now: dt.datetime) -> list[Any]:
    """NAME STATUS COMPLETIONS DURATION AGE CONTAINERS IMAGES SELECTOR, as `printJob`."""
    spec, status = job.get("spec", {}), job.get("status", {})
    succeeded = int(status.get("succeeded") or 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    elif int(spec.get("parallelism") or 0) > 1:
        completions = f"{succeeded}/1 of {spec['parallelism']}"
    else:
        completions = f"{succeeded}/1"
    started, finished = (
        _parse_time(status.get("startTime")),
        _parse_time(status.get("completionTime")),
    )
    duration = ""
    if started is not None:
        duration = human_duration(((finished or now) - started).total_seconds())
    conditions = {c.get("type"): c.get("status") == "True" for c in status.get("conditions") or []}
    if conditions.get("Complete"):
        state = "Complete"
    elif conditions.get("Failed"):
        state = "Failed"
    elif job.get("metadata", {}).get("deletionTimestamp"):
        state = "Terminating"
    elif conditions.get("Suspended"):
        state = "Suspended"
    elif conditions.get("FailureTarget"):
        state = "FailureTarget"
    elif conditions.get("SuccessCriteriaMet"):
        state = "SuccessCriteriaMet"
    else:
        state = "Running"
    containers = spec.get("template", {}).get("spec", {}).get("containers") or []
    return [
        _name(job),
        state,
        completions,
        duration,
        since(job.get("metadata", {}).get("creationTimestamp"), now),
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        format_selector(spec.get("selector")),
    ]


def replicated_cells(obj: Obj, now: dt.datetime, *, deployment: bool) -> list[Any]:
    """A Deployment's (`printDeployment`) or a ReplicaSet's (`printReplicaSet`) cells."""
    spec, status = obj.get("spec", {}), obj.get("status", {})
    desired, ready = int(spec.get("replicas", 1)), int(status.get("readyReplicas") or 0)
    if deployment:
        counts: list[Any] = [
            f"{ready}/{desired}",
            int(status.get("updatedReplicas") or 0),
            int(status.get("availableReplicas") or 0),
        ]
    else:
        counts = [desired, int(status.get("replicas") or 0), ready]
    containers = spec.get("template", {}).get("spec", {}).get("containers") or []
    return [
        _name(obj),
        *counts,
        since(obj.get("metadata", {}).get("creationTimestamp"), now),
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        format_selector(spec.get("selector")),
    ]


def format_selector(selector: Obj | None) -> str:
    """`metav1.FormatLabelSelector`: `a=b,c in (d,e),!f`; `<none>` when it selects nothing."""
    if not selector:
        return "<none>"
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key", ""), expression.get("operator", "")
        values = ",".join(sorted(expression.get("values") or []))
        if operator in ("In", "NotIn"):
            parts.append(f"{key} {operator.lower()} ({values})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts) or "<none>"


# --- Pods ---------------------------------------------------------------------------------


def pod_cells(pod: Obj, now: dt.datetime) -> list[Any]:
    """NAME READY STATUS RESTARTS AGE IP NODE NOMINATED-NODE READINESS-GATES, as `printPod`."""
    spec, status, meta = pod.get("spec", {}), pod.get("status", {}), pod.get("metadata", {})
    phase = str(status.get("phase", ""))
    reason = str(status.get("reason") or phase)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    restarts, ready, last_restart, running = 0, 0, None, False
    for container in reversed(status.get("containerStatuses") or []):
        restarts += int(container.get("restartCount") or 0)
        finished = _parse_time(
            (container.get("lastState") or {}).get("terminated", {}).get("finishedAt")
        )
        if finished is not None and (last_restart is None or finished > last_restart):
            last_restart = finished
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            reason = str(waiting["reason"])
        elif terminated is not None and terminated.get("reason"):
            reason = str(terminated["reason"])
        elif terminated is not None:
            signal = terminated.get("signal")
            reason = f"Signal:{signal}" if signal else f"ExitCode:{terminated.get('exitCode', 0)}"
        elif container.get("ready") and "running" in state:
            running = True
            ready += 1
    if reason == "Completed" and running:
        reason = "Running" if _condition_true(status, "Ready") else "NotReady"
    if meta.get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"
    restart_text = str(restarts)
    if restarts and last_restart is not None:
        restart_text = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    gates = spec.get("readinessGates") or []
    gates_text = "<none>"
    if gates:
        met = sum(1 for gate in gates if _condition_true(status, gate.get("conditionType")))
        gates_text = f"{met}/{len(gates)}"
    ips = status.get("podIPs") or []
    return [
        _name(pod),
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restart_text,
        since(meta.get("creationTimestamp"), now),
        (ips[0].get("ip") if ips else "") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_text,
    ]


def _condition_true(status: Obj, kind: Any) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _pod_row_conditions(pod: Obj) -> list[Obj]:
    """A finished pod's row is marked Completed (what `kubectl get` used to hide them by)."""
    phase = pod.get("status", {}).get("phase")
    if phase == "Succeeded":
        message = "The pod has completed successfully."
    elif phase == "Failed":
        message = "The pod failed."
    else:
        return []
    return [{"type": "Completed", "status": "True", "reason": phase, "message": message}]


# --- time -----------------------------------------------------------------------------------


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def since(value: Any, now: dt.datetime) -> str:
    """`translateTimestampSince`: the age of an RFC 3339 time, `<unknown>` without one."""
    stamp = _parse_time(value)
    if stamp is None:
        return "<unknown>"
    return human_duration((now - stamp).total_seconds())


def human_duration(seconds: float) -> str:
    """apimachinery's `duration.HumanDuration`: two units while they matter, then one."""
    whole = int(seconds)
    if whole < _SINCE_NOW_SLACK:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        return f"{minutes}m" if whole % 60 == 0 else f"{minutes}m{whole % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"
