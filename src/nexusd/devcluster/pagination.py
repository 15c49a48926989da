"""List pagination: `limit` / `continue` exactly as kube-apiserver does it (checklist 26).

A continue token is the unpadded base64url encoding of
`{"v":"meta.k8s.io/v1","rv":<list RV>,"start":"<key of the last item>\\u0000"}`, where the key
is the object's etcd key relative to the list's prefix: `/<name>` for a list inside a
namespace, `/<namespace>/<name>` for a list across namespaces. The next page starts at the
first key >= `start` and is served at the token's resourceVersion, so a paginated list is a
consistent snapshot. `remainingItemCount` is only reported when no selector filters the list.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import operator
from typing import TYPE_CHECKING, Any

import attrs

from .objects import ApiError, bad_request, status_body

if TYPE_CHECKING:
    from .objects import Obj

TOKEN_VERSION = "meta.k8s.io/v1"
CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)


@attrs.frozen
class Page:
    items: list[Obj]
    continue_token: str | None
    remaining: int | None


def encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": TOKEN_VERSION, "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _go_char(ch: str) -> str:
    return ch if ch.isprintable() and ord(ch) < 128 else f"\\u{ord(ch):04x}"


def decode_continue(token: str) -> tuple[int, str]:
    """(resourceVersion, start key) of a token; 400 BadRequest like the real server if invalid."""
    prefix = "invalid continue token: continue key is not valid: "
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise bad_request(f"{prefix}illegal base64 data at input byte 0") from None
    text = raw.decode("latin-1")
    try:
        data: Any = json.loads(raw)
    except ValueError:
        first = text.lstrip()[:1] or " "
        msg = f"invalid character '{_go_char(first)}' looking for beginning of value"
        raise bad_request(prefix + msg) from None
    if not isinstance(data, dict):
        data = {}
    rv, start = data.get("rv"), data.get("start")
    if data.get("v") != TOKEN_VERSION or not isinstance(start, str):
        raise bad_request(
            f"{prefix}incorrect encoded start resourceVersion (version {TOKEN_VERSION})"
        )
    if not isinstance(rv, int) or rv <= 0:
        raise bad_request(
            f"{prefix}incorrect encoded start resourceVersion (version {TOKEN_VERSION})"
        )
    return rv, start


def continue_expired(current_rv: int, start: str) -> ApiError:
    """410 for a token whose resourceVersion left the history; it carries a fresh token."""
    body = status_body(410, "Expired", CONTINUE_TOO_OLD)
    body["metadata"] = {"continue": encode_continue(current_rv, start)}
    return ApiError(410, body)


def item_key(obj: Obj, *, across_namespaces: bool) -> str:
    meta = obj["metadata"]
    if across_namespaces and meta.get("namespace"):
        return f"/{meta['namespace']}/{meta['name']}"
    return f"/{meta['name']}"


def paginate(
    keyed: list[tuple[str, Obj]], *, rv: int, limit: int, start: str, filtered: bool
) -> Page:
    """One page of `keyed` ((item key, object) pairs in key order, already filtered by the
    selectors) starting at key `start`. The objects are passed through as they are: the
    caller copies only the page it serves, not the whole collection."""
    first = bisect.bisect_left(keyed, start, key=operator.itemgetter(0)) if start else 0
    rest = len(keyed) - first
    if limit <= 0 or rest <= limit:
        return Page([o for _, o in keyed[first:]], None, None)
    page = keyed[first : first + limit]
    token = encode_continue(rv, page[-1][0] + "\x00")
    remaining = None if filtered else rest - limit
    return Page([o for _, o in page], token, remaining)
