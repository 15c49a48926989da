"""Small helpers for Kubernetes objects as plain JSON dicts: names, times, patches, errors.

Objects stay plain `dict`s end to end (they arrive as JSON and leave as JSON); these helpers
keep the fiddly parts (RFC 3339 seconds, generateName's alphabet, RFC 7386 merge-patch, the
exact `metav1.Status` bodies the real API server returns) in one place.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import secrets
import uuid
from typing import TYPE_CHECKING, Any

from nexusd.core.clock import Clock, SystemClock

if TYPE_CHECKING:
    from .resources import ResourceType

Obj = dict[str, Any]

#: The alphabet of k8s.io/apimachinery/pkg/util/rand.String (no vowels, no confusables).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)

_clock: Clock = SystemClock()


def now_rfc3339(clock: Clock | None = None) -> str:
    """metav1.Time: UTC, whole seconds, `Z` suffix."""
    t = (clock or _clock).now().astimezone(dt.UTC).replace(microsecond=0)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(NAME_ALPHABET) for _ in range(n))


def deep_copy(obj: Obj) -> Obj:
    return copy.deepcopy(obj)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, `null` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Obj, ops: list[Obj]) -> Obj:
    """RFC 6902 JSON patch, the add/replace/remove/test subset (kubectl's `--type json`)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1] if parts else ""
        kind = op["op"]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(idx, op["value"])
            elif kind == "replace":
                parent[idx] = op["value"]
            elif kind == "remove":
                del parent[idx]
        elif kind in ("add", "replace"):
            parent[last] = op["value"]
        elif kind == "remove":
            del parent[last]
        elif kind == "test" and parent.get(last) != op["value"]:
            raise ValueError(f"test failed at {op['path']}")
    return doc


def owner_uids(obj: Obj) -> list[str]:
    return [ref.get("uid", "") for ref in obj.get("metadata", {}).get("ownerReferences") or []]


def condition(obj: Obj, ctype: str) -> Obj | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c  # type: ignore[no-any-return]
    return None


def is_true(obj: Obj, ctype: str) -> bool:
    c = condition(obj, ctype)
    return c is not None and c.get("status") == "True"


# -- errors ------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered to the client: HTTP code plus a `metav1.Status` body (or plain text)."""

    def __init__(self, code: int, body: Obj | str, headers: list[tuple[str, str]] | None = None):
        super().__init__(body if isinstance(body, str) else body.get("message", ""))
        self.code = code
        self.body = body
        self.headers = headers or []


def status_body(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(rt: ResourceType, name: str) -> Obj:
    d: Obj = {"name": name}
    if rt.group:
        d["group"] = rt.group
    d["kind"] = rt.plural
    return d


def not_found(rt: ResourceType, name: str) -> ApiError:
    msg = f'{rt.qualified} "{name}" not found'
    return ApiError(404, status_body(404, "NotFound", msg, _details(rt, name)))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    msg = f'{rt.qualified} "{name}" already exists'
    return ApiError(409, status_body(409, "AlreadyExists", msg, _details(rt, name)))


def conflict(rt: ResourceType, name: str) -> ApiError:
    msg = (
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiError(409, status_body(409, "Conflict", msg, _details(rt, name)))


def forbidden(rt: ResourceType, name: str, reason: str) -> ApiError:
    """403 from admission, e.g. `pods "job-x-" is forbidden: error looking up service account`."""
    msg = f'{rt.plural} "{name}" is forbidden: {reason}'
    return ApiError(403, status_body(403, "Forbidden", msg, _details(rt, name)))


def bad_request(message: str) -> ApiError:
    return ApiError(400, status_body(400, "BadRequest", message))


def resource_not_found() -> ApiError:
    msg = "the server could not find the requested resource"
    return ApiError(404, status_body(404, "NotFound", msg, {}))


def page_not_found() -> ApiError:
    return ApiError(404, "404 page not found\n")


def method_not_allowed() -> ApiError:
    msg = "the server does not allow this method on the requested resource"
    return ApiError(405, status_body(405, "MethodNotAllowed", msg, {}))


def unsupported_media_type() -> ApiError:
    msg = "415: Unsupported Media Type"
    return ApiError(415, status_body(415, "UnsupportedMediaType", msg, {}))


def unsupported_patch_type() -> ApiError:
    """415 for a strategic-merge-patch to a custom resource (golden 11)."""
    msg = (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )
    return ApiError(415, status_body(415, "UnsupportedMediaType", msg))


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; `causes` are (reason, field, message) like `field.ErrorList`."""
    texts = [f"{field}: {msg}" for _, field, msg in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details: Obj = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.kind
    details["causes"] = [{"reason": r, "message": m, "field": f} for r, f, m in causes]
    message = f'{rt.qualified_kind} "{name}" is invalid: {joined}'
    return ApiError(422, status_body(422, "Invalid", message, details))


def validate_name(rt: ResourceType, name: str) -> list[tuple[str, str, str]]:
    if not name:
        return [
            (
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            )
        ]
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        return [
            ("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {_SUBDOMAIN_MSG}')
        ]
    return []


def list_options_invalid(field: str, detail: str) -> ApiError:
    """422 for contradictory list/watch options, shaped like the real `ListOptions` error."""
    message = f'ListOptions.meta.k8s.io "" is invalid: {field}: Forbidden: {detail}'
    cause = {"reason": "FieldValueForbidden", "message": f"Forbidden: {detail}", "field": field}
    details = {"group": "meta.k8s.io", "kind": "ListOptions", "causes": [cause]}
    return ApiError(422, status_body(422, "Invalid", message, details))


def expired(message: str) -> Obj:
    return status_body(410, "Expired", message)
