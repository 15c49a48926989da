"""Watch streams: `GET …?watch=true` as newline-delimited JSON events over a chunked response.

Semantics follow golden file 10 and checklist 25/27: without a resourceVersion (or with "0")
the stream starts with synthetic ADDED events for the current objects; with one, it replays the
history after it, or — if that history is gone — sends HTTP 200, one ERROR line carrying a
410 Expired Status, and closes. With label/field selectors an object that stops matching is
sent as DELETED and one that starts matching as ADDED. `allowWatchBookmarks` adds a BOOKMARK
every minute and one just before a `timeoutSeconds` close.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio

from .objects import Obj, bad_request, expired
from .selectors import fields_match, labels_match, parse_field_selector, parse_label_selector
from .storage import Change, TooOld

if TYPE_CHECKING:
    from .apiserver import Request
    from .operations import Operations
    from .resources import ResourceType

DEFAULT_TIMEOUT = 1800.0
BOOKMARK_INTERVAL = 60.0


def _line(event_type: str, obj: Obj) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


class _Filter:
    def __init__(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> None:
        self.rt = rt
        self.namespace = namespace
        self.labels = parse_label_selector(query.get("labelSelector"))
        self.fields = parse_field_selector(query.get("fieldSelector"), rt)

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, obj) and fields_match(self.fields, obj)

    def event_type(self, change: Change) -> str | None:
        """The event a selector watch reports for this change, if any."""
        if change.resource != self.rt.key:
            return None
        now = self.matches(change.obj)
        if change.type != "MODIFIED":
            return change.type if now else None
        before = self.matches(change.old)
        if now and before:
            return "MODIFIED"
        if now:
            return "ADDED"
        return "DELETED" if before else None


async def stream_watch(
    req: Request, ops: Operations, rt: ResourceType, namespace: str | None
) -> None:
    query = req.query
    flt = _Filter(rt, namespace, query)
    rv_text = query.get("resourceVersion") or "0"
    if not rv_text.isdigit():
        raise bad_request(f'invalid resource version: resourceVersion: Invalid value: "{rv_text}"')
    timeout = float(query.get("timeoutSeconds") or DEFAULT_TIMEOUT)
    bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
    await req.start(200, "application/json")
    send = req.send

    async def emit(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, req, nursery.cancel_scope)
        with trio.move_on_after(timeout) as timeout_scope:
            await _pump(ops, rt, flt, int(rv_text), emit, bookmarks)
        if timeout_scope.cancelled_caught and bookmarks:
            await emit(_line("BOOKMARK", _bookmark(rt, ops.store.resource_version)))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        nursery.cancel_scope.cancel()


def _bookmark(rt: ResourceType, rv: int) -> Obj:
    return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(rv)}}


async def _pump(
    ops: Operations, rt: ResourceType, flt: _Filter, rv: int, emit: Any, bookmarks: bool
) -> None:
    store = ops.store
    if rv == 0:
        cursor = store.resource_version
        for obj in store.list(rt.key, flt.namespace):
            if flt.matches(obj):
                await emit(_line("ADDED", obj))
    else:
        cursor = rv
    while True:
        try:
            changes = store.changes_since(cursor)
        except TooOld as exc:
            await emit(_line("ERROR", expired(str(exc))))
            return
        cursor = max(cursor, store.resource_version)
        for change in changes:
            event_type = flt.event_type(change)
            if event_type is not None:
                await emit(_line(event_type, change.obj))
        with trio.move_on_after(BOOKMARK_INTERVAL if bookmarks else float("inf")) as idle:
            await store.wait_after(cursor)
        if idle.cancelled_caught:
            await emit(_line("BOOKMARK", _bookmark(rt, store.resource_version)))


async def _cancel_on_disconnect(req: Request, scope: trio.CancelScope) -> None:
    while True:
        message = await req.receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
