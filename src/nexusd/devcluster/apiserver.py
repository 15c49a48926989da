"""The HTTP face of the embedded cluster: a plain ASGI app speaking the Kubernetes REST API.

It parses the URL into (group, version, namespace, resource, name, subresource), maps the
HTTP method to a verb, calls `Operations`, and renders JSON exactly as the real API server
does: objects with kind/apiVersion, lists whose items lack them, `metav1.Status` errors, and
watches as newline-delimited JSON over a chunked response (checklist 21-28). Unknown
non-resource paths get the text/plain `404 page not found`. Any bearer token is accepted.
"""

from __future__ import annotations

import collections
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from . import discovery
from .objects import (
    ApiError,
    Obj,
    bad_request,
    method_not_allowed,
    page_not_found,
    resource_not_found,
    status_body,
)
from .resources import PODS, ResourceType
from .watching import stream_watch

if TYPE_CHECKING:
    import builtins

    from .operations import Operations

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_BODY = 3 * 1024 * 1024
LogPath = Callable[[str, str], "Any"]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class ApiServer:
    """ASGI application; `request_counts[(verb, resource, code)]` counts every answered request."""

    def __init__(self, ops: Operations, *, log_path: LogPath | None = None) -> None:
        self.ops = ops
        self.log_path = log_path
        self.server_address = "127.0.0.1:0"
        self.request_counts: collections.Counter[tuple[str, str, int]] = collections.Counter()

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
        try:
            await self.dispatch(req)
        except ApiError as exc:
            await req.error(exc)
        self.request_counts[(req.verb, req.resource, req.code)] += 1

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
        if sub and not ((sub == "status" and rt.has_status) or (sub == "log" and rt == PODS)):
            raise resource_not_found()
        req.resource = f"{rt.plural}/{sub}" if sub else rt.plural
        ns = namespace or ""
        if rt.namespaced and name is not None and namespace is None:
            raise resource_not_found()
        method = req.method
        if name is None:
            if method == "GET":
                if req.query.get("watch") in ("true", "1"):
                    req.verb = "watch"
                    return await stream_watch(req, self.ops, rt, namespace)
                req.verb = "list"
                return await self.list(req, rt, namespace)
            if method == "POST":
                req.verb = "create"
                body = await req.body_json(rt)
                return await req.json(201, self.ops.create(rt, ns, body))
            if method == "DELETE":
                req.verb = "deletecollection"
                return await self.delete_collection(req, rt, namespace)
            raise method_not_allowed()
        if method == "GET":
            req.verb = "get"
            if sub == "log":
                return await self.pod_log(req, ns, name)
            return await req.json(200, self.ops.get(rt, ns, name))
        if method == "PUT":
            req.verb = "update"
            body = await req.body_json(rt)
            return await req.json(200, self.ops.replace(rt, ns, name, body, subresource=sub))
        if method == "PATCH":
            req.verb = "patch"
            body = await req.body_json(rt)
            ctype = req.headers.get("content-type", "")
            return await req.json(200, self.ops.patch(rt, ns, name, body, ctype, subresource=sub))
        if method == "DELETE" and not sub:
            req.verb = "delete"
            return await self.delete(req, rt, ns, name)
        raise method_not_allowed()

    async def list(self, req: Request, rt: ResourceType, namespace: str | None) -> None:
        rv = req.query.get("resourceVersion")
        if rv and not rv.isdigit():
            raise bad_request(
                f'invalid resource version: resourceVersion: Invalid value: "{rv}": '
                f'strconv.ParseUint: parsing "{rv}": invalid syntax'
            )
        items, list_rv = self.ops.list(
            rt,
            namespace,
            label_selector=req.query.get("labelSelector"),
            field_selector=req.query.get("fieldSelector"),
        )
        await req.json(
            200,
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(list_rv)},
                "items": items,
            },
        )

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
