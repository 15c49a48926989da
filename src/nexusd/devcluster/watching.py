"""Watch streams: `GET …?watch=true` as newline-delimited JSON events over a chunked response.

Semantics follow golden file 10 and checklist 25/27: without a resourceVersion (or with "0")
the stream starts with synthetic ADDED events for the current objects; with one, it replays the
history after it, or — if that history is gone — sends HTTP 200, one ERROR line carrying a
410 Expired Status, and closes. With label/field selectors an object that stops matching is
sent as DELETED and one that starts matching as ADDED. `allowWatchBookmarks` adds a BOOKMARK
every minute and one just before a `timeoutSeconds` close. `sendInitialEvents=true` (which
needs `resourceVersionMatch=NotOlderThan` and `allowWatchBookmarks=true`, else 422) sends the
current objects as ADDED, then a BOOKMARK annotated `k8s.io/initial-events-end: "true"`.

A fault plan may cut a stream after N events or S seconds: the response then ends without
its terminating chunk, which clients see as a dropped connection (they relist or resume).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import trio

from .faults import WatchCut
from .objects import Obj, bad_request, expired, list_options_invalid
from .operations import Operations
from .selectors import fields_match, labels_match, parse_field_selector, parse_label_selector
from .storage import Change, TooOld

if TYPE_CHECKING:
    from .apiserver import Request
    from .resources import ResourceType

logger = logging.getLogger(__name__)

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


def _check_options(query: dict[str, str]) -> tuple[int, bool, bool]:
    """(resourceVersion, allowWatchBookmarks, sendInitialEvents), or the real 400/422 errors."""
    rv_text = query.get("resourceVersion") or "0"
    if not rv_text.isdigit():
        raise bad_request(
            f'invalid resource version: resourceVersion: Invalid value: "{rv_text}": '
            f'strconv.ParseUint: parsing "{rv_text}": invalid syntax'
        )
    bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
    initial = query.get("sendInitialEvents") in ("true", "1")
    match = query.get("resourceVersionMatch", "")
    if initial and match != "NotOlderThan":
        raise list_options_invalid(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        )
    if initial and not bookmarks:
        raise list_options_invalid(
            "allowWatchBookmarks", "sendInitialEvents requires setting allowWatchBookmarks to true"
        )
    if match and not initial:
        raise list_options_invalid(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        )
    return int(rv_text), bookmarks, initial


class _Cut(Exception):
    """The fault plan says: drop this watch now."""


async def stream_watch(
    req: Request,
    ops: Operations,
    rt: ResourceType,
    namespace: str | None,
    *,
    cut: WatchCut | None = None,
) -> None:
    """Serve one watch; with a `cut`, end it abruptly (no terminating chunk) at the limit."""
    query = req.query
    flt = _Filter(rt, namespace, query)
    rv, bookmarks, initial = _check_options(query)
    timeout = float(query.get("timeoutSeconds") or DEFAULT_TIMEOUT)
    cut = cut or WatchCut()
    await req.start(200, "application/json")
    send = req.send
    sent = 0

    async def emit(data: bytes, *, counts: bool = True) -> None:
        nonlocal sent
        if counts and cut.events is not None and sent >= cut.events:
            raise _Cut
        await send({"type": "http.response.body", "body": data, "more_body": True})
        sent += counts

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, req, nursery.cancel_scope)
        try:
            with trio.move_on_after(cut.seconds if cut.seconds is not None else float("inf")) as cs:
                with trio.move_on_after(timeout) as timeout_scope:
                    await _pump(ops, rt, flt, rv, emit, bookmarks=bookmarks, initial=initial)
                if timeout_scope.cancelled_caught and bookmarks:
                    bookmark = _bookmark(rt, ops.store.resource_version)
                    await emit(_line("BOOKMARK", bookmark), counts=False)
            if cs.cancelled_caught:
                raise _Cut
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except _Cut:
            logger.debug("watch on %s cut by the fault plan after %d events", rt.plural, sent)
            req.cut = True
        nursery.cancel_scope.cancel()


def _bookmark(rt: ResourceType, rv: int, *, initial_end: bool = False) -> Obj:
    meta: Obj = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}


async def _pump(
    ops: Operations,
    rt: ResourceType,
    flt: _Filter,
    rv: int,
    emit: Any,
    *,
    bookmarks: bool,
    initial: bool,
) -> None:
    store = ops.store
    if rv == 0 or initial:
        # No RV (or sendInitialEvents): synthetic ADDED for the current state first.
        cursor = store.resource_version
        for obj in store.list(rt.key, flt.namespace):
            if flt.matches(obj):
                await emit(_line("ADDED", Operations.with_type(rt, obj)))
        if initial:
            bookmark = _bookmark(rt, cursor, initial_end=True)
            await emit(_line("BOOKMARK", bookmark), counts=False)
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
            await emit(_line("BOOKMARK", _bookmark(rt, store.resource_version)), counts=False)


async def _cancel_on_disconnect(req: Request, scope: trio.CancelScope) -> None:
    while True:
        message = await req.receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
