"""Container environment as a kubelet builds it: `env` values, and `env[].valueFrom` /
`envFrom` resolved from the namespace's Secrets and ConfigMaps and from the pod's own fields
(the downward API's `fieldRef`: `metadata.name`, `metadata.labels['k']`, `spec.nodeName`...).
A missing object or key is `CreateContainerConfigError` with the kubelet's message
(`secret "x" not found`).
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING

from .resources import CONFIGMAPS, SECRETS

if TYPE_CHECKING:
    from .objects import Obj
    from .operations import Operations


class ConfigError(Exception):
    """A referenced Secret/ConfigMap (or key) is missing; str() is the kubelet's message."""


def _lookup(ops: Operations, namespace: str, kind: str, name: str) -> Obj | None:
    rt = SECRETS if kind == "Secret" else CONFIGMAPS
    return ops.store.peek(rt.key, namespace, name)


def _data(obj: Obj, kind: str) -> dict[str, str]:

    if kind == "Secret":
        out = {
            k: base64.b64decode(v).decode(errors="replace")
            for k, v in (obj.get("data") or {}).items()
        }
        out.update(obj.get("stringData") or {})
        return out
    return dict(obj.get("data") or {})


def _referenced(ops: Operations, namespace: str, kind: str, ref: Obj) -> dict[str, str] | None:
    """The data of the Secret/ConfigMap `ref` names; None if it is optional and missing."""
    obj = _lookup(ops, namespace, kind, ref.get("name", ""))
    if obj is None:
        if ref.get("optional"):
            return None
        raise ConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
    return _data(obj, kind)


#: The pod fields the downward API gives an env var (`fieldRef.fieldPath`), as dotted paths.
_POD_FIELDS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.podIP",
)
_MAP_FIELD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def field_value(pod: Obj, path: str) -> str:
    """The value of a `fieldRef.fieldPath` of `pod` ("" for one not set yet or unknown)."""
    keyed = _MAP_FIELD.fullmatch(path)
    if keyed is not None:
        return str((pod.get("metadata", {}).get(keyed[1]) or {}).get(keyed[2], ""))
    if path not in _POD_FIELDS:
        return ""
    value: object = pod
    for part in path.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return str(value or "")


def resolve_env(
    ops: Operations, namespace: str, container: Obj, *, pod: Obj | None = None
) -> dict[str, str]:
    """The container's environment as the kubelet builds it; raises ConfigError."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = source.get(field)
            if ref is None:
                continue
            data = _referenced(ops, namespace, kind, ref)
            if data is not None:
                prefix = source.get("prefix", "")
                env.update({prefix + k: v for k, v in data.items()})
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        value_from = entry.get("valueFrom") or {}
        field_ref = value_from.get("fieldRef")
        if field_ref is not None and pod is not None:
            env[entry["name"]] = field_value(pod, str(field_ref.get("fieldPath", "")))
            continue
        for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            ref = value_from.get(field)
            if ref is None:
                continue
            data = _referenced(ops, namespace, kind, ref)
            if data is None:
                continue
            if ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(
                    f"couldn't find key {ref.get('key')} in {kind} {namespace}/{ref.get('name')}"
                )
            env[entry["name"]] = data[ref["key"]]
        if "name" in entry and entry["name"] not in env and not value_from:
            env[entry["name"]] = ""
    return env


# -- the kubelet --------------------------------------------------------------------------
