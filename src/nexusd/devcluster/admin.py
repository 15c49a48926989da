"""The embedded cluster's own admin endpoints, outside /api and /apis, for tests in any process.

    GET    /devcluster/v1/faults   -> the active FaultPlan as JSON
    PUT    /devcluster/v1/faults   <- a whole FaultPlan (missing fields take their defaults)
    PATCH  /devcluster/v1/faults   <- some FaultPlan fields, merged into the active plan
    DELETE /devcluster/v1/faults   -> back to no faults
    GET    /devcluster/v1/stats    -> request counters, writes, latest resourceVersion
    DELETE /devcluster/v1/stats    -> reset the request counters

Admin requests are neither counted in `request_counts` nor subject to faults. A bad plan is a
400 `metav1.Status`; an unknown admin path is the usual text/plain 404.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .faults import MUTATING_VERBS, plan_from_json
from .objects import ApiError, bad_request, method_not_allowed, page_not_found

if TYPE_CHECKING:
    import collections

    from .apiserver import ApiServer, Request

PREFIX = "/devcluster/"
FAULTS = "/devcluster/v1/faults"
STATS = "/devcluster/v1/stats"


def stats(counts: collections.Counter[tuple[str, str, int]], resource_version: int) -> Any:
    """The JSON document of `GET /devcluster/v1/stats`."""
    rows = [
        {"verb": verb, "resource": resource, "code": code, "count": n}
        for (verb, resource, code), n in sorted(counts.items())
    ]
    return {
        "requests": rows,
        "total": sum(counts.values()),
        "writes": sum(n for (verb, _, _), n in counts.items() if verb in MUTATING_VERBS),
        "throttled": sum(n for (_, _, code), n in counts.items() if code == 429),
        "resourceVersion": str(resource_version),
    }


async def _json_body(req: Request) -> Any:
    raw = await req.body_bytes()
    try:
        return json.loads(raw or b"{}")
    except ValueError as exc:
        raise bad_request(f"invalid JSON: {exc}") from None


async def handle(req: Request, server: ApiServer) -> None:
    try:
        await _dispatch(req, server)
    except ApiError as exc:
        await req.error(exc)


async def _dispatch(req: Request, server: ApiServer) -> None:
    path = req.path.rstrip("/")
    faults = server.faults
    if path == FAULTS:
        if req.method == "PUT":
            data = await _json_body(req)
            try:
                faults.set(plan_from_json(data))
            except ValueError as exc:
                raise bad_request(str(exc)) from None
        elif req.method == "PATCH":
            data = await _json_body(req)
            try:
                merged = faults.plan.to_json() | (data if isinstance(data, dict) else {})
                faults.set(plan_from_json(merged if isinstance(data, dict) else data))
            except ValueError as exc:
                raise bad_request(str(exc)) from None
        elif req.method == "DELETE":
            faults.clear()
        elif req.method != "GET":
            raise method_not_allowed()
        return await req.json(200, faults.plan.to_json())
    if path == STATS:
        if req.method == "DELETE":
            server.request_counts.clear()
        elif req.method != "GET":
            raise method_not_allowed()
        return await req.json(200, stats(server.request_counts, server.ops.store.resource_version))
    raise page_not_found()
