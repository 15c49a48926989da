"""The HTTP face of the embedded cluster: a plain ASGI app speaking the Kubernetes REST API.

It parses the URL into (group, version, namespace, resource, name, subresource), maps the
HTTP method to a verb, calls `Operations`, and renders JSON exactly as the real API server
does: objects with kind/apiVersion, lists whose items lack them, `metav1.Status` errors, and
watches as newline-delimited JSON over a chunked response (checklist 21-28). Unknown
non-resource paths get the text/plain `404 page not found`. Any bearer token is accepted.

Lists follow the resourceVersion rules of golden 09/10: `limit`/`continue` pages served from a
snapshot at the token's RV (`pagination.py`), `resourceVersion=0` ignoring `limit`, `Exact`
lists rebuilt from the history (410 once it is gone) and a 504 for a future RV. Writes report
unknown fields in `Warning` headers (400 under `fieldValidation=Strict`, `validation.py`).
A get or list asked for `as=Table` (what `kubectl get` asks) is answered with the server-side
Table format (`tables.py`), custom resources with their CRD's printer columns.

Each resource request is first routed (verb + resource), then offered to the fault plan
(`faults.py`), which may delay it or answer 429/5xx; `request_counts[(verb, resource, code)]`
is bumped when the response starts, so injected answers count too. `/devcluster/v1/...` is
the admin API (`admin.py`): fault plan and request statistics, never counted or faulted.
"""

from __future__ import annotations

import collections
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from . import admin, discovery, scale, tables, validation
from .faults import FaultPlan, Faults
from .objects import (
    ApiError,
    Obj,
    bad_request,
    expired,
    list_options_invalid,
    method_not_allowed,
    page_not_found,
    resource_not_found,
    status_body,
)
from .pagination import continue_expired, decode_continue
from .resources import CRDS, JOBS, PODS, SCALABLE, ResourceType
from .storage import TooOld
from .watching import stream_watch

if TYPE_CHECKING:
    import builtins

    from .operations import Operations

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_BODY = 3 * 1024 * 1024
LIST_TOO_OLD = "The resourceVersion for the provided list is too old."
LogPath = Callable[[str, str], "Any"]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class ApiServer:
    """ASGI application; `request_counts[(verb, resource, code)]` counts every answered request."""

    def __init__(
        self, ops: Operations, *, log_path: LogPath | None = None, faults: FaultPlan | None = None
    ) -> None:
        self.ops = ops
        self.log_path = log_path
        self.server_address = "127.0.0.1:0"
        self.request_counts: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.faults = Faults(faults)
        #: How long a list with a future resourceVersion waits before its 504 (real: 3 s).
        self.too_large_rv_wait = 3.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        req = Request(scope, receive, send)
        if req.path.startswith(admin.PREFIX):
            await admin.handle(req, self)
            return
        # Counted when the response starts, so a client that has its answer sees the count.
        req.counts = self.request_counts
        try:
            await self.dispatch(req)
        except ApiError as exc:
            await req.error(exc)

    async def dispatch(self, req: Request) -> None:
        parts = [p for p in req.path.split("/") if p]
        if req.path == "/version":
            return await req.json(200, discovery.VERSION)
        if parts[:1] == ["api"]:
            if len(parts) == 1:
                return await req.json(200, discovery.api_versions(self.server_address))
            if parts[1] != "v1":
                raise page_not_found()
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"]:
            if len(parts) == 1:
                return await req.json(200, discovery.api_group_list(self.ops.registry))
            if len(parts) == 2:
                doc = discovery.api_group(self.ops.registry, parts[1])
                if doc is None:
                    raise page_not_found()
                return await req.json(200, doc)
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise page_not_found()
        if not self.ops.registry.has_group_version(group, version):
            raise page_not_found()
        if not rest:
            doc = discovery.resource_list(self.ops.registry, group, version)
            return await req.json(200, doc)
        await self.resource_request(req, group, version, rest)

    def _route(
        self, group: str, version: str, rest: builtins.list[str]
    ) -> tuple[ResourceType, str | None, builtins.list[str]]:
        lookup = self.ops.registry.lookup
        if rest[0] == "namespaces" and len(rest) >= 3:
            rt = lookup(group, version, rest[2])
            if rt is not None and rt.namespaced:
                return rt, rest[1], rest[3:]
        rt = lookup(group, version, rest[0])
        if rt is None:
            raise resource_not_found()
        return rt, None, rest[1:]

    async def resource_request(
        self, req: Request, group: str, version: str, rest: builtins.list[str]
    ) -> None:
        rt, namespace, tail = self._route(group, version, rest)
        if len(tail) > 2:
            raise resource_not_found()
        name = tail[0] if tail else None
        sub = tail[1] if len(tail) == 2 else ""
        if sub and not (
            (sub == "status" and rt.has_status)
            or (sub == "log" and rt == PODS)
            or (sub == "scale" and rt in SCALABLE)
        ):
            raise resource_not_found()
        req.resource = f"{rt.plural}/{sub}" if sub else rt.plural
        ns = namespace or ""
        if rt.namespaced and name is not None and namespace is None:
            raise resource_not_found()
        req.verb = _verb(req.method, name, sub, req.query)
        if req.verb == "":
            raise method_not_allowed()
        await self.faults.before(req.verb, req.resource)
        if req.verb == "watch":
            cut = self.faults.watch_cut(req.resource)
            return await stream_watch(req, self.ops, rt, namespace, cut=cut)
        if req.verb == "list":
            return await self.list(req, rt, namespace)
        if req.verb == "deletecollection":
            return await self.delete_collection(req, rt, namespace)
        if req.verb == "create":
            body = await req.body_json(rt)
            warnings = self.field_warnings(req, rt, body)
            return await req.json(201, self.ops.create(rt, ns, body), warnings)
        assert name is not None
        if req.verb == "get":
            if sub == "log":
                return await self.pod_log(req, ns, name)
            if sub == "scale":
                return await req.json(200, scale.get_scale(self.ops, rt, ns, name))
            obj = self.ops.get(rt, ns, name)
            if not sub and tables.table_version(req.headers.get("accept", "")):
                rv = obj.get("metadata", {}).get("resourceVersion", "")
                return await req.json(200, self.table(req, rt, [obj], {"resourceVersion": rv}))
            return await req.json(200, obj)
        if req.verb == "update":
            body = await req.body_json(rt)
            if sub == "scale":
                return await req.json(200, scale.replace_scale(self.ops, rt, ns, name, body))
            warnings = self.field_warnings(req, rt, body) if not sub else []
            obj = self.ops.replace(rt, ns, name, body, subresource=sub)
            return await req.json(200, obj, warnings)
        if req.verb == "patch":
            body = await req.body_json(rt)
            ctype = req.headers.get("content-type", "")
            if sub == "scale":
                scaled = scale.patch_scale(self.ops, rt, ns, name, body, ctype)
                return await req.json(200, scaled)
            merge = ctype.startswith("application/merge-patch+json")
            warnings = self.field_warnings(req, rt, body) if merge and not sub else []
            obj = self.ops.patch(rt, ns, name, body, ctype, subresource=sub)
            return await req.json(200, obj, warnings)
        return await self.delete(req, rt, ns, name)

    def field_warnings(
        self, req: Request, rt: ResourceType, body: Any
    ) -> builtins.list[tuple[str, str]]:
        """Unknown-field `Warning` headers, or a 400 under `?fieldValidation=Strict` (item 24)."""
        schema = rt.schema if rt.custom else (validation.JOB_SCHEMA if rt == JOBS else None)
        mode = req.query.get("fieldValidation", "Warn")
        if schema is None or mode == "Ignore" or not isinstance(body, dict):
            return []
        paths = validation.unknown_fields(schema, body)
        if paths and mode == "Strict":
            raise bad_request(validation.strict_decoding_message(rt.kind, rt.version, paths))
        return [("warning", validation.unknown_field_warning(p)) for p in paths]

    async def list(self, req: Request, rt: ResourceType, namespace: str | None) -> None:
        """List with the resourceVersion semantics of golden files 09/10 (checklist 25, 26)."""
        query = req.query
        rv_text = query.get("resourceVersion", "")
        match = query.get("resourceVersionMatch", "")
        token = query.get("continue", "")
        if rv_text and not rv_text.isdigit():
            raise bad_request(
                f'invalid resource version: resourceVersion: Invalid value: "{rv_text}": '
                f'strconv.ParseUint: parsing "{rv_text}": invalid syntax'
            )
        if match and not rv_text:
            raise list_options_invalid(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            )
        if token and rv_text and rv_text != "0":
            raise list_options_invalid(
                "resourceVersion", "specifying resource version is not allowed when using continue"
            )
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else 0
        store = self.ops.store
        start, at_rv = "", None
        if token:
            at_rv, start = decode_continue(token)
            if at_rv < store.oldest_resource_version:
                raise continue_expired(store.resource_version, start)
        elif rv_text == "0":
            limit = 0  # served from the watch cache, which ignores limit (golden 10)
        elif rv_text:
            requested = int(rv_text)
            await self.wait_for_resource_version(requested)
            if match == "Exact":
                if requested < store.oldest_resource_version:
                    raise ApiError(410, expired(LIST_TOO_OLD))
                at_rv = requested
        label_selector = query.get("labelSelector")
        field_selector = query.get("fieldSelector")
        try:
            page, list_rv = self.ops.list_page(
                rt,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                resource_version=at_rv,
                start=start,
                limit=limit,
            )
        except TooOld:
            raise ApiError(410, expired(LIST_TOO_OLD)) from None
        meta: Obj = {"resourceVersion": str(list_rv)}
        if page.continue_token:
            meta["continue"] = page.continue_token
        if page.remaining is not None:
            meta["remainingItemCount"] = page.remaining
        if tables.table_version(req.headers.get("accept", "")):
            typed = [self.ops.with_type(rt, item) for item in page.items]
            return await req.json(200, self.table(req, rt, typed, meta))
        await req.json(
            200,
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": meta,
                "items": page.items,
            },
        )

    def table(self, req: Request, rt: ResourceType, objects: builtins.list[Obj], meta: Obj) -> Obj:
        """`objects` as the Table the Accept header asked for (`tables.py`), with a custom
        resource's columns from its CRD."""
        include = req.query.get("includeObject") or "Metadata"
        if include not in tables.INCLUDE_OBJECT:
            raise bad_request(
                f'includeObject: Unsupported value: "{include}": supported values: '
                + ", ".join(f'"{value}"' for value in tables.INCLUDE_OBJECT)
            )
        columns = None
        if rt.custom:
            crd = self.ops.get(CRDS, "", rt.qualified)
            served = [v for v in crd["spec"]["versions"] if v.get("name") == rt.version]
            columns = served[0].get("additionalPrinterColumns") if served else None
        return tables.render(
            rt,
            objects,
            now=self.ops.clock.now(),
            version=tables.table_version(req.headers.get("accept", "")) or "v1",
            include_object=include,
            printer_columns=columns,
            metadata=meta,
        )

    async def wait_for_resource_version(self, rv: int) -> None:
        """A future resourceVersion: wait briefly for it, then 504 (checklist 25)."""
        store = self.ops.store
        if rv <= store.resource_version:
            return
        with trio.move_on_after(self.too_large_rv_wait):
            await store.wait_after(rv - 1)
            return
        current = store.resource_version
        body = status_body(
            504,
            "Timeout",
            f"Timeout: Too large resource version: {rv}, current: {current}",
            {
                "causes": [
                    {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
                ],
                "retryAfterSeconds": 1,
            },
        )
        raise ApiError(504, body, [("retry-after", "1")])

    async def delete(self, req: Request, rt: ResourceType, ns: str, name: str) -> None:
        options = await req.body_json(rt, optional=True) or {}
        policy = req.query.get("propagationPolicy") or options.get("propagationPolicy")
        if policy is None and "orphanDependents" in options:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        grace = req.query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        body, warnings = self.ops.delete(
            rt,
            ns,
            name,
            propagation=policy,
            grace_seconds=None if grace is None else int(grace),
            preconditions=options.get("preconditions"),
        )
        await req.json(200, body, extra=[("warning", w) for w in warnings])

    async def delete_collection(
        self, req: Request, rt: ResourceType, namespace: str | None
    ) -> None:
        items, _ = self.ops.list(
            rt,
            namespace,
            label_selector=req.query.get("labelSelector"),
            field_selector=req.query.get("fieldSelector"),
        )
        for item in items:
            meta = item["metadata"]
            self.ops.delete(rt, meta.get("namespace", ""), meta["name"], propagation="Background")
        items, rv = self.ops.list(rt, namespace)
        await req.json(
            200,
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(rv)},
                "items": [],
            },
        )

    async def pod_log(self, req: Request, ns: str, name: str) -> None:
        self.ops.get(PODS, ns, name)
        path = self.log_path(ns, name) if self.log_path else None
        data = b""
        if path is not None:
            try:
                data = await trio.Path(path).read_bytes()
            except FileNotFoundError:
                data = b""
        await req.respond(200, data, "text/plain")


def _verb(method: str, name: str | None, sub: str, query: dict[str, str]) -> str:
    """The Kubernetes verb of a resource request ("" when the method is not allowed)."""
    if name is None:
        if method == "GET":
            return "watch" if query.get("watch") in ("true", "1") else "list"
        return {"POST": "create", "DELETE": "deletecollection"}.get(method, "")
    if method == "DELETE" and sub:
        return ""
    return {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "")


class Request:
    """One HTTP exchange: parsed scope, lazy body, and response helpers that record the code."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = {
            k: v[-1]
            for k, v in urllib.parse.parse_qs(
                scope["query_string"].decode(), keep_blank_values=True
            ).items()
        }
        self.headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.receive = receive
        self.send = send
        self.verb = self.method.lower()
        self.resource = ""
        self.code = 0
        self.started = False
        #: Set when a watch was cut on purpose by the fault plan (no terminating chunk).
        self.cut = False
        self.counts: collections.Counter[tuple[str, str, int]] | None = None

    async def body_bytes(self) -> bytes:
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise ApiError(
                    413,
                    status_body(
                        413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728"
                    ),
                )
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)

    async def body_json(self, rt: ResourceType, *, optional: bool = False) -> Any:
        raw = await self.body_bytes()
        if not raw.strip() and optional:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            text = raw.decode(errors="replace")[:100]
            raise bad_request(
                f"the object provided is unrecognized (must be of type {rt.kind}): couldn't get "
                f"version/kind; json parse error: {exc} ({text})"
            ) from None

    async def start(
        self, code: int, content_type: str, extra: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.code = code
        self.started = True
        if self.counts is not None:
            self.counts[(self.verb, self.resource, code)] += 1
        headers = [
            (b"content-type", content_type.encode()),
            (b"cache-control", b"no-cache, private"),
        ]
        headers += [(k.encode(), v.encode()) for k, v in extra]
        await self.send({"type": "http.response.start", "status": code, "headers": headers})

    async def respond(
        self, code: int, body: bytes, content_type: str, extra: Sequence[tuple[str, str]] = ()
    ) -> None:
        await self.start(code, content_type, [*extra, ("content-length", str(len(body)))])
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def json(self, code: int, obj: Obj | None, extra: Sequence[tuple[str, str]] = ()) -> None:
        await self.respond(code, dumps(obj), "application/json", extra)

    async def error(self, exc: ApiError) -> None:
        if self.started:
            return
        if isinstance(exc.body, str):
            await self.respond(
                exc.code, exc.body.encode(), "text/plain; charset=utf-8", exc.headers
            )
        else:
            await self.json(exc.code, exc.body, exc.headers)
