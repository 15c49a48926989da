"""The shard copy of a controller object, and whether a shard object has drifted from it.

A copy keeps the source's name, namespace, labels and annotations, plus the two labels that
mark it as ours (upstream's, kept so existing selectors and dashboards work). Templates and
workgroups copy `spec` (never `status`: each cluster writes its own). Secrets copy `type`,
`data` and `stringData`, ConfigMaps `data` and `binaryData` (upstream dropped `type` and
`binaryData`). A Secret/ConfigMap copy is owned by the SHARD templates that reference it, so
the shard's garbage collector removes it when the last one goes.

`needs_update` compares only what a copy carries, so fields the shard adds (uid,
resourceVersion, managedFields, status) never cause a write: no churn on resync.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

CONTROLLER_APP_LABEL: Final = "science.sneaksanddata.com/controller-app"
CONTROLLER_APP: Final = "nexus-configuration-controller"
OWNER_LABEL: Final = "science.sneaksanddata.com/configuration-owner"
#: On the user's Secret/ConfigMap in the controller cluster: the templates referencing it.
#: An annotation, not an ownerReference, so Kubernetes never garbage-collects the user's object.
REFERENCED_BY_ANNOTATION: Final = "science.sneaksanddata.com/referenced-by"
TEMPLATE_API_VERSION: Final = "science.sneaksanddata.com/v1"
TEMPLATE_KIND: Final = "NexusAlgorithmTemplate"

#: What each kind's copy carries besides metadata.
_BODY_FIELDS: Final = {
    "NexusAlgorithmTemplate": ("spec",),
    "NexusAlgorithmWorkgroup": ("spec",),
    "Secret": ("type", "data", "stringData"),
    "ConfigMap": ("data", "binaryData"),
}


def managed_labels(alias: str) -> dict[str, str]:
    """The labels on every copy this controller (`alias`) writes."""
    return {CONTROLLER_APP_LABEL: CONTROLLER_APP, OWNER_LABEL: alias}


def managed_selector(alias: str) -> str:
    """The label selector of the copies this controller writes."""
    return ",".join(f"{key}={value}" for key, value in managed_labels(alias).items())


def is_managed(obj: Mapping[str, Any], alias: str) -> bool:
    """True if `obj` carries this controller's labels."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in managed_labels(alias).items())


def is_managed_by_another(obj: Mapping[str, Any], alias: str) -> bool:
    """True if `obj` is a copy another configuration controller (another alias) keeps."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return labels.get(CONTROLLER_APP_LABEL) == CONTROLLER_APP and labels.get(OWNER_LABEL) != alias


def owner_reference(template: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to a template: no `controller`, no `blockOwnerDeletion` (upstream)."""
    metadata = template["metadata"]
    return {
        "apiVersion": TEMPLATE_API_VERSION,
        "kind": TEMPLATE_KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
    }


def template_owners(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ownerReferences of `obj` that point to templates."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return [ref for ref in refs if ref.get("kind") == TEMPLATE_KIND]


def shard_copy(
    source: Mapping[str, Any], *, alias: str, owners: Iterable[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The object to keep in a shard for the controller's `source`."""
    kind = source["kind"]
    metadata = source["metadata"]
    annotations = dict(metadata.get("annotations") or {})
    annotations.pop(REFERENCED_BY_ANNOTATION, None)
    copied: dict[str, Any] = {
        "apiVersion": source["apiVersion"],
        "kind": kind,
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "labels": {**(metadata.get("labels") or {}), **managed_labels(alias)},
            "annotations": annotations,
        },
    }
    unique_owners = {ref["uid"]: dict(ref) for ref in owners}
    if unique_owners:
        copied["metadata"]["ownerReferences"] = sorted(
            unique_owners.values(), key=lambda ref: (ref["name"], ref["uid"])
        )
    for field in _BODY_FIELDS[kind]:
        if field in source:
            copied[field] = copy.deepcopy(source[field])
    if kind == "Secret":
        copied.setdefault("type", "Opaque")
    return copied


def needs_update(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True if the shard's `current` object differs from `desired` in what a copy carries."""
    have, want = current.get("metadata", {}), desired["metadata"]
    for field in ("labels", "annotations"):
        if (have.get(field) or {}) != (want.get(field) or {}):
            return True
    if _owner_uids(have) != _owner_uids(want):
        return True
    if desired["kind"] == "Secret" and current.get("type", "Opaque") != desired["type"]:
        return True
    return any(
        current.get(field) != desired.get(field)
        for field in _BODY_FIELDS[desired["kind"]]
        if field != "type"
    )


def replacement(current: Mapping[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The PUT body turning `current` into `desired`: the shard's own metadata (uid,
    resourceVersion for optimistic concurrency, finalizers) with our fields on top."""
    body = copy.deepcopy(desired)
    metadata = {**current.get("metadata", {}), **body["metadata"]}
    if "ownerReferences" not in body["metadata"]:
        metadata.pop("ownerReferences", None)
    metadata.pop("managedFields", None)
    body["metadata"] = metadata
    return body


def _owner_uids(metadata: Mapping[str, Any]) -> set[str]:
    return {ref.get("uid", "") for ref in metadata.get("ownerReferences") or []}
