"""The arithmetic of a Deployment rollout, apart from the controller that acts on it.

The `pod-template-hash` that names a template's ReplicaSet, the strategy's maxSurge and
maxUnavailable resolved against `spec.replicas` (intstr percentages: surge rounds up,
unavailable down, both 0 means 1 unavailable), upstream's DeploymentComplete and
DeploymentProgressing tests, and SetDeploymentCondition's rules for the status conditions.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from .objects import NAME_ALPHABET, deep_copy

if TYPE_CHECKING:
    from .objects import Obj

HASH_LABEL = "pod-template-hash"
MSG_AVAILABLE = "Deployment has minimum availability."
MSG_UNAVAILABLE = "Deployment does not have minimum availability."


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    """The `pod-template-hash` of a pod template: FNV-32a, then SafeEncodeString's letters."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":"))
    if collision_count:
        data += str(collision_count)
    value = 0x811C9DC5
    for byte in data.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(NAME_ALPHABET[int(digit)] for digit in str(value))


def comparable(template: Obj) -> Obj:
    """The template without `pod-template-hash` (and without what is left empty), so that a
    ReplicaSet's template compares equal to its Deployment's (EqualIgnoreHash)."""
    out = deep_copy(template)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        labels = meta.get("labels") or {}
        labels.pop(HASH_LABEL, None)
        if not labels:
            meta.pop("labels", None)
        if not meta:
            out.pop("metadata")
    return out


def _int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        share = int(value[:-1]) * total / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(value or 0)


def surge_and_unavailable(deployment: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas (Recreate: 0, 0)."""
    spec = deployment["spec"]
    replicas = spec.get("replicas", 1)
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or replicas == 0:
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    surge = _int_or_percent(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def complete(d: Obj, counts: dict[str, int]) -> bool:
    """DeploymentComplete: every replica updated and available, the latest spec observed."""
    want = int(d["spec"].get("replicas", 1))
    return (
        counts["updatedReplicas"] == want
        and counts["replicas"] == want
        and counts["availableReplicas"] == want
        and counts["observedGeneration"] >= int(d["metadata"].get("generation", 1))
    )


def progressing(old: Obj, counts: dict[str, int]) -> bool:
    """DeploymentProgressing: more updated, ready or available replicas, or fewer old ones."""
    before = {k: int(old.get(k, 0)) for k in counts}
    return (
        counts["updatedReplicas"] > before["updatedReplicas"]
        or counts["replicas"] - counts["updatedReplicas"]
        < before["replicas"] - before["updatedReplicas"]
        or counts["readyReplicas"] > before["readyReplicas"]
        or counts["availableReplicas"] > before["availableReplicas"]
    )


def set_condition(status: Obj, ctype: str, value: str, reason: str, message: str, now: str) -> None:
    """SetDeploymentCondition: unchanged when status and reason are; lastTransitionTime kept
    while the status is; a changed condition goes last."""
    conditions = status.get("conditions") or []
    current = next((c for c in conditions if c["type"] == ctype), None)
    if current is not None and current["status"] == value and current.get("reason") == reason:
        return
    transition = current["lastTransitionTime"] if current and current["status"] == value else now
    status["conditions"] = [c for c in conditions if c["type"] != ctype] + [
        {
            "type": ctype,
            "status": value,
            "lastUpdateTime": now,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        }
    ]
