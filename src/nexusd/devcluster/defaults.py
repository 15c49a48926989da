"""Admission for the embedded API server: defaulting and validation on create/update.

Only what clients observe is copied from the real server: a Job's defaulted spec, selector and
four labels (checklist 1), a Pod's scheduling-relevant defaults, a Namespace's phase, a CRD's
initial status (checklist 30), and the 422 causes for the Job mistakes nexusd can make.
"""

from __future__ import annotations

from typing import Any

from . import workloads
from .objects import Obj, invalid, validate_name
from .resources import CONFIGMAPS, CRDS, JOBS, MANIFEST_TYPES, NAMESPACES, PODS, ResourceType

#: core/v1 validation's cap on a ConfigMap's data + binaryData (checklist 23).
CONFIGMAP_MAX_BYTES = 1024 * 1024

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")


def _default_container(c: Obj) -> None:
    c.setdefault("resources", {})
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = c.get("image", "")
    latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")


def default_pod_spec(spec: Obj) -> None:
    for c in spec.get("containers") or []:
        _default_container(c)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")


def default_job(job: Obj) -> None:
    meta = job["metadata"]
    uid = meta["uid"]
    spec = job.setdefault("spec", {})
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    template = spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    tlabels: dict[str, str] = tmeta.setdefault("labels", {})
    for k in JOB_UID_LABELS:
        tlabels[k] = uid
    for k in JOB_NAME_LABELS:
        tlabels[k] = meta["name"]
    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {JOB_UID_LABELS[0]: uid}}
        spec["manualSelector"] = False
    if not meta.get("labels"):
        meta["labels"] = dict(tlabels)
    default_pod_spec(template.setdefault("spec", {}))
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    job["status"] = {}


def validate_job(job: Obj) -> None:
    name = job["metadata"]["name"]
    spec: dict[str, Any] = job.get("spec") or {}
    causes = []
    for field in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"):
        value = spec.get(field)
        if isinstance(value, int) and value < (1 if field == "activeDeadlineSeconds" else 0):
            bound = (
                "greater than or equal to 0"
                if field != "activeDeadlineSeconds"
                else "greater than 0"
            )
            causes.append(
                ("FieldValueInvalid", f"spec.{field}", f"Invalid value: {value}: must be {bound}")
            )
    pod_spec = ((spec.get("template") or {}).get("spec")) or {}
    if not pod_spec.get("containers"):
        causes.append(("FieldValueRequired", "spec.template.spec.containers", "Required value"))
    if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
        msg = 'Required value: valid values: "OnFailure", "Never"'
        causes.append(("FieldValueRequired", "spec.template.spec.restartPolicy", msg))
    if causes:
        raise invalid(JOBS, name, causes)


def default_pod(pod: Obj) -> None:
    spec = pod.setdefault("spec", {})
    default_pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("priority", 0)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    pod["status"] = {"phase": "Pending", "qosClass": "BestEffort"}


def validate_pod(pod: Obj) -> None:
    if not (pod.get("spec") or {}).get("containers"):
        name = pod["metadata"]["name"]
        raise invalid(PODS, name, [("FieldValueRequired", "spec.containers", "Required value")])


def default_namespace(ns: Obj) -> None:
    meta = ns["metadata"]
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
    ns["spec"] = {"finalizers": ["kubernetes"]}
    ns["status"] = {"phase": "Active"}


def default_crd(crd: Obj) -> None:
    spec = crd.setdefault("spec", {})
    names = spec.setdefault("names", {})
    names.setdefault("singular", names.get("kind", "").lower())
    names.setdefault("listKind", names.get("kind", "") + "List")
    spec.setdefault("scope", "Namespaced")
    spec.setdefault("conversion", {"strategy": "None"})
    storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    crd["status"] = {
        "conditions": None,
        "acceptedNames": {"plural": "", "kind": ""},
        "storedVersions": storage,
    }


def validate_configmap_size(cm: Obj) -> None:
    total = 0
    for section in ("data", "binaryData"):
        for key, value in (cm.get(section) or {}).items():
            total += len(key) + len(str(value))
    if total > CONFIGMAP_MAX_BYTES:
        msg = f"Too long: may not be more than {CONFIGMAP_MAX_BYTES} bytes"
        raise invalid(CONFIGMAPS, cm["metadata"]["name"], [("FieldValueTooLong", "[]", msg)])


def admit_create(rt: ResourceType, obj: Obj) -> None:
    """Default and validate a new object in place (metadata already filled); may raise 422."""
    causes = validate_name(rt, obj["metadata"].get("name", ""))
    if causes:
        raise invalid(rt, obj["metadata"].get("name", ""), causes)
    if rt == JOBS:
        default_job(obj)
        validate_job(obj)
    elif rt == PODS:
        default_pod(obj)
        validate_pod(obj)
    elif rt == NAMESPACES:
        default_namespace(obj)
    elif rt == CRDS:
        default_crd(obj)
    elif rt == CONFIGMAPS:
        validate_configmap_size(obj)
    elif rt in MANIFEST_TYPES:
        workloads.admit(rt, obj, default_pod_spec=default_pod_spec)
    elif rt.custom and rt.has_status:
        obj.pop("status", None)


def admit_update(rt: ResourceType, obj: Obj) -> None:
    """Default and validate an updated object in place (Deployments and ReplicaSets only)."""
    workloads.admit_update(rt, obj, default_pod_spec=default_pod_spec)
