"""Admission for Deployments, ReplicaSets and the kinds served so deployment manifests apply.

Deployments and ReplicaSets are run by their controllers (`deployments.py`, `replicasets.py`);
Services, CronJobs, PodDisruptionBudgets, HorizontalPodAutoscalers and RBAC objects are only
stored and served. On create they get the defaults a client reads back most often and the
cheap 422s a real API server gives for the common mistakes (a Deployment whose selector misses
its template's labels, a Service without ports, a RoleBinding to an unsupported kind). Updates
are re-checked only for Deployments and ReplicaSets (`admit_update`: the pod template is
defaulted again, so its hash names the same ReplicaSet as a create would, and `replicas`
stays non-negative), since their controllers act on every change.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from .objects import invalid
from .resources import (
    CLUSTERROLEBINDINGS,
    CLUSTERROLES,
    CRONJOBS,
    DEPLOYMENTS,
    HPAS,
    PDBS,
    REPLICASETS,
    ROLEBINDINGS,
    ROLES,
    SERVICES,
    ResourceType,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from .objects import Obj

Cause = tuple[str, str, str]  # (reason, field, message), as objects.invalid expects

RBAC_GROUP = "rbac.authorization.k8s.io"
_RBAC_TYPES = (ROLES, ROLEBINDINGS, CLUSTERROLES, CLUSTERROLEBINDINGS)
_RESTART_POLICIES = 'Required value: valid values: "OnFailure", "Never"'


def admit(rt: ResourceType, obj: Obj, *, default_pod_spec: Callable[[Obj], None]) -> None:
    """Default and validate a new object of one of `resources.MANIFEST_TYPES`; may raise 422."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) and rt not in _RBAC_TYPES:  # RBAC objects have no spec
        spec = obj["spec"] = {}
    spec = spec if isinstance(spec, dict) else {}
    causes: list[Cause] = []
    if rt in (DEPLOYMENTS, REPLICASETS):
        causes = _replicated(rt, spec, default_pod_spec)
    elif rt == SERVICES:
        causes = _service(obj["metadata"], spec)
    elif rt == CRONJOBS:
        causes = _cronjob(spec, default_pod_spec)
    elif rt == PDBS:
        causes = _pdb(spec)
    elif rt == HPAS:
        causes = _hpa(spec)
    elif rt in (ROLES, CLUSTERROLES):
        causes = _rules(obj.get("rules") or [], namespaced=rt == ROLES)
    elif rt in (ROLEBINDINGS, CLUSTERROLEBINDINGS):
        causes = _binding(obj, cluster=rt == CLUSTERROLEBINDINGS)
    if causes:
        raise invalid(rt, obj["metadata"].get("name", ""), causes)
    if rt.has_status:
        obj["status"] = {"loadBalancer": {}} if rt == SERVICES else {}


# -- workloads ----------------------------------------------------------------------------


def admit_update(rt: ResourceType, obj: Obj, *, default_pod_spec: Callable[[Obj], None]) -> None:
    """Re-default and re-check an updated Deployment or ReplicaSet; may raise 422."""
    spec = obj.get("spec")
    if rt not in (DEPLOYMENTS, REPLICASETS) or not isinstance(spec, dict):
        return
    template = spec.get("template")
    if isinstance(template, dict):
        default_pod_spec(template.setdefault("spec", {}))
    _default_replicated(rt, spec)
    causes = _non_negative(spec, "replicas", "spec")
    if causes:
        raise invalid(rt, obj["metadata"].get("name", ""), causes)


def _default_replicated(rt: ResourceType, spec: Obj) -> None:
    spec.setdefault("replicas", 1)
    if rt == DEPLOYMENTS:
        spec.setdefault(
            "strategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
        )
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)


def _replicated(
    rt: ResourceType, spec: Obj, default_pod_spec: Callable[[Obj], None]
) -> list[Cause]:
    _default_replicated(rt, spec)
    template = spec.get("template") or {}
    default_pod_spec(template.setdefault("spec", {}))
    causes = _non_negative(spec, "replicas", "spec")
    policy = template["spec"].get("restartPolicy")
    if policy != "Always":
        msg = f'Unsupported value: "{policy}": supported values: "Always"'
        causes.append(("FieldValueNotSupported", "spec.template.spec.restartPolicy", msg))
    selector = spec.get("selector")
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(("FieldValueRequired", "spec.selector", "Required value"))
    elif not selector_matches(selector, labels):
        shown = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
        msg = (
            f"Invalid value: map[string]string{{{shown}}}: "
            "`selector` does not match template `labels`"
        )
        causes.append(("FieldValueInvalid", "spec.template.metadata.labels", msg))
    if not template.get("spec", {}).get("containers"):
        causes.append(("FieldValueRequired", "spec.template.spec.containers", "Required value"))
    return causes


def _cronjob(spec: Obj, default_pod_spec: Callable[[Obj], None]) -> list[Cause]:
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    causes: list[Cause] = []
    if not spec.get("schedule"):
        causes.append(("FieldValueRequired", "spec.schedule", "Required value"))
    policy = spec["concurrencyPolicy"]
    if policy not in ("Allow", "Forbid", "Replace"):
        msg = f'Unsupported value: "{policy}": supported values: "Allow", "Forbid", "Replace"'
        causes.append(("FieldValueNotSupported", "spec.concurrencyPolicy", msg))
    job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    pod_spec = (job_spec.get("template") or {}).get("spec") or {}
    path = "spec.jobTemplate.spec.template.spec"
    if not pod_spec.get("containers"):
        causes.append(("FieldValueRequired", f"{path}.containers", "Required value"))
    if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
        causes.append(("FieldValueRequired", f"{path}.restartPolicy", _RESTART_POLICIES))
    if pod_spec:
        default_pod_spec(pod_spec)
    return causes


def _service(meta: Obj, spec: Obj) -> list[Cause]:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    causes: list[Cause] = []
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if not ports and spec["type"] != "ExternalName" and not headless:
        causes.append(("FieldValueRequired", "spec.ports", "Required value"))
    for i, port in enumerate(ports):
        number = port.get("port")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            msg = f"Invalid value: {number}: must be between 1 and 65535, inclusive"
            causes.append(("FieldValueInvalid", f"spec.ports[{i}].port", msg))
        if len(ports) > 1 and not port.get("name"):
            causes.append(("FieldValueRequired", f"spec.ports[{i}].name", "Required value"))
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", number)
    if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
        spec["clusterIP"] = _cluster_ip(meta)
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    return causes


def _cluster_ip(meta: Obj) -> str:
    """A stable address in 10.96.0.0/16 (the kubeadm default service range) per object."""
    digest = hashlib.sha256(f"{meta.get('namespace')}/{meta.get('uid')}".encode()).digest()
    return f"10.96.{digest[0]}.{digest[1] % 253 + 2}"


# -- availability and scaling -------------------------------------------------------------


def _pdb(spec: Obj) -> list[Cause]:
    if "minAvailable" in spec and "maxUnavailable" in spec:
        msg = "Invalid value: spec: minAvailable and maxUnavailable cannot be both set"
        return [("FieldValueInvalid", "spec", msg)]
    return []


def _hpa(spec: Obj) -> list[Cause]:
    spec.setdefault("minReplicas", 1)
    ref = spec.get("scaleTargetRef") or {}
    causes: list[Cause] = [
        ("FieldValueRequired", f"spec.scaleTargetRef.{key}", "Required value")
        for key in ("kind", "name")
        if not ref.get(key)
    ]
    low, high = spec["minReplicas"], spec.get("maxReplicas")
    if not isinstance(low, int) or low < 1:
        msg = f"Invalid value: {low}: must be greater than or equal to 1"
        causes.append(("FieldValueInvalid", "spec.minReplicas", msg))
    if not isinstance(high, int) or high < 1:
        msg = f"Invalid value: {high}: must be greater than 0"
        causes.append(("FieldValueInvalid", "spec.maxReplicas", msg))
    elif isinstance(low, int) and high < low:
        msg = f"Invalid value: {high}: must be greater than or equal to `minReplicas`"
        causes.append(("FieldValueInvalid", "spec.maxReplicas", msg))
    return causes


# -- RBAC ---------------------------------------------------------------------------------


def _rules(rules: list[Obj], *, namespaced: bool) -> list[Cause]:
    causes: list[Cause] = []
    for i, rule in enumerate(rules):
        path = f"rules[{i}]"
        if not rule.get("verbs"):
            msg = "Required value: verbs must contain at least one value"
            causes.append(("FieldValueRequired", f"{path}.verbs", msg))
        if rule.get("nonResourceURLs"):
            if namespaced:
                urls = ", ".join(f'"{u}"' for u in rule["nonResourceURLs"])
                msg = (
                    f"Invalid value: []string{{{urls}}}: "
                    "namespaced rules cannot apply to non-resource URLs"
                )
                causes.append(("FieldValueInvalid", f"{path}.nonResourceURLs", msg))
        elif not rule.get("apiGroups"):
            msg = "Required value: resource rules must supply at least one api group"
            causes.append(("FieldValueRequired", f"{path}.apiGroups", msg))
    return causes


def _binding(obj: Obj, *, cluster: bool) -> list[Cause]:
    ref = obj.get("roleRef") or {}
    causes: list[Cause] = []
    kinds = ("ClusterRole",) if cluster else ("Role", "ClusterRole")
    if ref.get("apiGroup") != RBAC_GROUP:
        causes.append(_unsupported("roleRef.apiGroup", ref.get("apiGroup", ""), (RBAC_GROUP,)))
    if ref.get("kind") not in kinds:
        causes.append(_unsupported("roleRef.kind", ref.get("kind", ""), kinds))
    if not ref.get("name"):
        causes.append(("FieldValueRequired", "roleRef.name", "Required value"))
    for i, subject in enumerate(obj.get("subjects") or []):
        kind = subject.get("kind", "")
        if kind not in ("ServiceAccount", "User", "Group"):
            allowed = ("ServiceAccount", "User", "Group")
            causes.append(_unsupported(f"subjects[{i}].kind", kind, allowed))
        if not subject.get("name"):
            causes.append(("FieldValueRequired", f"subjects[{i}].name", "Required value"))
        if kind == "ServiceAccount" and cluster and not subject.get("namespace"):
            causes.append(("FieldValueRequired", f"subjects[{i}].namespace", "Required value"))
    return causes


# -- helpers ------------------------------------------------------------------------------


def _unsupported(field: str, value: Any, allowed: tuple[str, ...]) -> Cause:
    supported = ", ".join(f'"{v}"' for v in allowed)
    return (
        "FieldValueNotSupported",
        field,
        f'Unsupported value: "{value}": supported values: {supported}',
    )


def _non_negative(spec: Obj, field: str, prefix: str) -> list[Cause]:
    value = spec.get(field)
    if isinstance(value, int) and value < 0:
        msg = f"Invalid value: {value}: must be greater than or equal to 0"
        return [("FieldValueInvalid", f"{prefix}.{field}", msg)]
    return []


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions) against a label map."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op, False)
        if not ok:
            return False
    return True
