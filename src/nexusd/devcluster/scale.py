"""The `/scale` subresource of Deployments and ReplicaSets: an autoscaling/v1 `Scale` view.

`kubectl scale`, an HPA and nexusd's pool scaler may read and set `spec.replicas` through it
without touching (or conflicting on) the rest of the object. GET answers the Scale
(`spec.replicas`, `status.replicas`, `status.selector` as a label-selector string); PUT and
PATCH (merge or JSON patch on that Scale) write `spec.replicas` back into the object, honouring
a `metadata.resourceVersion` precondition, with the 422 the real server gives for a negative
count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .objects import (
    ApiError,
    Obj,
    conflict,
    invalid,
    json_patch,
    merge_patch,
    status_body,
    unsupported_media_type,
)
from .operations import MERGE_TYPES
from .resources import ResourceType
from .tables import format_selector

if TYPE_CHECKING:
    from .operations import Operations

SCALE = ResourceType("autoscaling", "v1", "scale", "scale", "Scale")


def scale_of(obj: Obj) -> Obj:
    """The Scale view of a Deployment or ReplicaSet."""
    meta = obj["metadata"]
    selector = format_selector(obj["spec"].get("selector"))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": obj["spec"].get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": "" if selector == "<none>" else selector,
        },
    }


def get_scale(ops: Operations, rt: ResourceType, namespace: str, name: str) -> Obj:
    return scale_of(ops.get(rt, namespace, name))


def replace_scale(ops: Operations, rt: ResourceType, namespace: str, name: str, body: Any) -> Obj:
    """PUT …/scale: set `spec.replicas` from the Scale `body`."""
    current = ops.get(rt, namespace, name)
    if not isinstance(body, dict):
        raise ApiError(400, status_body(400, "BadRequest", "the body must be a Scale object"))
    rv = (body.get("metadata") or {}).get("resourceVersion")
    if rv and rv != current["metadata"]["resourceVersion"]:
        raise conflict(rt, name)
    replicas = (body.get("spec") or {}).get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        msg = f"Invalid value: {replicas}: must be greater than or equal to 0"
        raise invalid(SCALE, name, [("FieldValueInvalid", "spec.replicas", msg)])
    current["spec"]["replicas"] = replicas
    return scale_of(ops.replace(rt, namespace, name, current))


def patch_scale(
    ops: Operations, rt: ResourceType, namespace: str, name: str, patch: Any, content_type: str
) -> Obj:
    """PATCH …/scale: the patch applies to the Scale, then as `replace_scale`."""
    scale = get_scale(ops, rt, namespace, name)
    ctype = content_type.split(";")[0].strip()
    if ctype == "application/json-patch+json" and isinstance(patch, list):
        try:
            patched = json_patch(scale, patch)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, status_body(422, "Invalid", str(exc))) from None
    elif ctype in MERGE_TYPES and isinstance(patch, dict):
        patched = merge_patch(scale, patch)
    else:
        raise unsupported_media_type()
    return replace_scale(ops, rt, namespace, name, patched)
