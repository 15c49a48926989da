"""Structural-schema checks: unknown fields (pruned or rejected) and CRD `required`/`type` rules.

For custom resources the schema is the served version's `openAPIV3Schema`; for Jobs a small
built-in schema names the known `spec` fields, enough to report `spec.bogusField` the way
golden file 09 shows. Three things happen on a write (checklist 24 and 30):

* `unknown_fields` lists the paths the schema does not know (`spec.bogusField`); the server
  answers them with `Warning: 299 - "unknown field \\"spec.bogusField\\""`, or with a 400
  strict decoding error under `?fieldValidation=Strict`.
* `prune` drops them from the stored object (custom resources).
* `validate` returns the 422 causes: missing `required` properties, recursively through nested
  objects and array items, and JSON types that do not match `type`.

A schema node without `properties` (and without `additionalProperties`) keeps whatever it is
given, as if it had `x-kubernetes-preserve-unknown-fields: true`; the real server would prune
such a node empty. That leniency keeps minimal test CRDs (`{"type": "object"}`) usable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .objects import Obj

Cause = tuple[str, str, str]  # (reason, field, message) as objects.invalid expects
_ROOT_META = ("apiVersion", "kind", "metadata")

_JOB_SPEC_FIELDS = (
    "activeDeadlineSeconds",
    "backoffLimit",
    "backoffLimitPerIndex",
    "completionMode",
    "completions",
    "managedBy",
    "manualSelector",
    "maxFailedIndexes",
    "parallelism",
    "podFailurePolicy",
    "podReplacementPolicy",
    "selector",
    "successPolicy",
    "suspend",
    "template",
    "ttlSecondsAfterFinished",
)
#: Enough of batch/v1 Job to name unknown top-level and `spec` fields (nested: not checked).
JOB_SCHEMA: Obj = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {f: {} for f in _JOB_SPEC_FIELDS}},
        "status": {"type": "object"},
    },
}


def _preserves(schema: Obj) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields")) or (
        "properties" not in schema and "additionalProperties" not in schema
    )


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def unknown_fields(schema: Obj, obj: Any, path: str = "") -> list[str]:
    """Dotted paths of the fields `schema` does not declare (metadata is never checked)."""
    out: list[str] = []
    if isinstance(obj, dict) and not _preserves(schema):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if not path and key in _ROOT_META:
                continue
            sub = props.get(key)
            if sub is None and isinstance(extra, dict):
                sub = extra
            if sub is None and extra is not True:
                out.append(_child(path, key))
            elif isinstance(sub, dict):
                out.extend(unknown_fields(sub, value, _child(path, key)))
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            out.extend(unknown_fields(schema["items"], item, f"{path}[{i}]"))
    return out


def prune(schema: Obj, obj: Any, *, root: bool = True) -> None:
    """Drop the fields `schema` does not declare, in place."""
    if isinstance(obj, dict) and not _preserves(schema):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in list(obj):
            if root and key in _ROOT_META:
                continue
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is None and extra is not True:
                del obj[key]
            elif isinstance(sub, dict):
                prune(sub, obj[key], root=False)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            prune(schema["items"], item, root=False)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(expected: str, actual: str) -> bool:
    return expected == actual or (expected == "number" and actual == "integer")


def validate(schema: Obj, obj: Any, path: str = "") -> list[Cause]:
    """422 causes for `obj` against `schema`: required properties first, then nested values."""
    causes: list[Cause] = []
    expected = schema.get("type")
    actual = _json_type(obj)
    if expected and not _type_ok(expected, actual):
        if actual == "null" and schema.get("nullable"):
            return causes
        msg = f'Invalid value: "{actual}": {path} in body must be of type {expected}: "{actual}"'
        return [("FieldValueTypeInvalid", path, msg)]
    if isinstance(obj, dict):
        for key in schema.get("required") or ():
            if key not in obj:
                causes.append(("FieldValueRequired", _child(path, key), "Required value"))
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if not path and key in _ROOT_META:
                continue
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if isinstance(sub, dict):
                causes.extend(validate(sub, value, _child(path, key)))
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            causes.extend(validate(schema["items"], item, f"{path}[{i}]"))
    enum = schema.get("enum")
    if enum and obj not in enum:
        supported = ", ".join(f'"{v}"' for v in enum)
        msg = f'Unsupported value: "{obj}": supported values: {supported}'
        causes.append(("FieldValueNotSupported", path, msg))
    return causes


def unknown_field_warning(path: str) -> str:
    """The `Warning` header value for one unknown field (golden 09/11)."""
    return f'299 - "unknown field \\"{path}\\""'


def strict_decoding_message(kind: str, version: str, paths: list[str]) -> str:
    fields = ", ".join(f'unknown field "{p}"' for p in paths)
    return (
        f'{kind} in version "{version}" cannot be handled as a {kind}: '
        f"strict decoding error: {fields}"
    )
