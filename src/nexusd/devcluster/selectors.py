"""Label and field selectors, parsed like k8s.io/apimachinery and matched against dict objects.

Label selectors support `=`, `==`, `!=`, `in (…)`, `notin (…)`, `key` and `!key`, joined by
commas. Field selectors support `=`, `==` and `!=` on the few fields each resource indexes; any
other field is a 400 with the per-resource message the real server uses (checklist 28).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs

from .objects import ApiError, Obj, bad_request

if TYPE_CHECKING:
    from collections.abc import Callable

    from .resources import ResourceType

_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_./]*)?[A-Za-z0-9]$")


@attrs.frozen
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("=", "in"):
            return has and value in self.values
        # "!=" and "notin" match when the key is absent, like the real server.
        return not has or value not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _check_key(key: str) -> str:
    if not key or not _KEY.match(key):
        raise bad_request(f'unable to parse requirement: invalid label key "{key}"')
    return key


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text:
        return []
    reqs = []
    for part in _split_top_level(text):
        m = re.match(r"^(\S+)\s+(in|notin)\s*(.*)$", part)
        if m:
            key, op, rest = m.groups()
            rest = rest.strip()
            if not rest.startswith("("):
                word = rest.split()[0] if rest else ""
                raise bad_request(f"unable to parse requirement: found '{word}' expected: '('")
            if not rest.endswith(")"):
                raise bad_request("unable to parse requirement: found '', expected: ')'")
            values = tuple(v.strip() for v in rest[1:-1].split(",") if v.strip())
            reqs.append(Requirement(_check_key(key), op, values))
            continue
        for token, op in (("!=", "!="), ("==", "="), ("=", "=")):
            if token in part:
                key, value = part.split(token, 1)
                reqs.append(Requirement(_check_key(key.strip()), op, (value.strip(),)))
                break
        else:
            if part.startswith("!"):
                reqs.append(Requirement(_check_key(part[1:].strip()), "!"))
            else:
                reqs.append(Requirement(_check_key(part), "exists"))
    return reqs


def labels_match(reqs: list[Requirement], obj: Obj) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


# -- field selectors ---------------------------------------------------------------------------


def _path(*keys: str) -> Callable[[Obj], str]:
    def get(obj: Obj) -> str:
        cur: Any = obj
        for k in keys:
            cur = cur.get(k) if isinstance(cur, dict) else None
        return "" if cur is None else str(cur)

    return get


def _job_successful(obj: Obj) -> str:
    return str(obj.get("status", {}).get("succeeded", 0))


_COMMON = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}
_FIELDS: dict[str, dict[str, Callable[[Obj], str]]] = {
    "pods": {
        **_COMMON,
        "status.phase": _path("status", "phase"),
        "spec.nodeName": _path("spec", "nodeName"),
        "spec.restartPolicy": _path("spec", "restartPolicy"),
        "spec.serviceAccountName": _path("spec", "serviceAccountName"),
        "status.podIP": _path("status", "podIP"),
    },
    "jobs": {**_COMMON, "status.successful": _job_successful},
    "events": {
        **_COMMON,
        "involvedObject.kind": _path("involvedObject", "kind"),
        "involvedObject.name": _path("involvedObject", "name"),
        "involvedObject.namespace": _path("involvedObject", "namespace"),
        "involvedObject.uid": _path("involvedObject", "uid"),
        "reason": _path("reason"),
        "type": _path("type"),
    },
}


@attrs.frozen
class FieldRequirement:
    getter: Callable[[Obj], str]
    value: str
    negate: bool

    def matches(self, obj: Obj) -> bool:
        return (self.getter(obj) == self.value) != self.negate


def parse_field_selector(text: str | None, rt: ResourceType) -> list[FieldRequirement]:
    if not text:
        return []
    fields = _FIELDS.get(rt.plural, _COMMON)
    reqs = []
    for part in _split_top_level(text):
        token = next((t for t in ("!=", "==", "=") if t in part), None)
        if token is None:
            raise bad_request(f"invalid selector: '{part}'; can't understand '{part}'")
        negate = token == "!="
        key, value = (s.strip() for s in part.split(token, 1))
        getter = fields.get(key)
        if getter is None:
            raise _unsupported_field(rt, key)
        reqs.append(FieldRequirement(getter, value, negate))
    return reqs


def _unsupported_field(rt: ResourceType, key: str) -> ApiError:
    if rt.group == "":
        return bad_request(f"field label not supported: {key}")
    return bad_request(f'field label "{key}" not supported for {rt.kind}')


def fields_match(reqs: list[FieldRequirement], obj: Obj) -> bool:
    return all(r.matches(obj) for r in reqs)
