"""The worker API of warm pools: `POST /worker/v1/pools/{alg}/lease` and `/report`.

Served by the scheduler, called by `nexusd worker` (the protocol: `nexusd.pipeline.leasing`,
`nexusd.pipeline.worker_reports`). It is not part of the versioned public API: only the pool's
own pods call it, with the pool's token (`Authorization: Bearer <NEXUS__WORKER__TOKEN>`, a MAC
of the algorithm) whenever completion tokens are on, so a client of the public API cannot
lease or complete runs. Refusals are text/plain like the rest of the API.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from nexusd.api.context import current_context
from nexusd.api.responses import body, json_response, text
from nexusd.pipeline.worker_reports import (
    InvalidWorkerRequest,
    parse_lease_request,
    parse_report,
)

if TYPE_CHECKING:
    from nexusd.pipeline.leasing import Pool, WarmPools

blueprint = Blueprint("workers", __name__, url_prefix="/worker/v1")


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _pool(algorithm: str, *, leasing: bool) -> tuple[WarmPools, Pool]:
    """The pool of `algorithm` after checking the caller's pool token. A scheduler shutting
    down leases nothing more, but still takes reports (finished runs must not wait)."""
    context = current_context()
    pools, intake = context.pools, context.intake
    if pools is None or intake is None or (leasing and not context.readiness.accepting):
        raise _Refused(503, "This scheduler is not leasing runs now; please retry.")
    tokens = pools.tokens
    if tokens is not None:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), tokens.pool_token(algorithm).encode()):
            raise _Refused(
                403, f"Forbidden: the request does not carry the pool token of {algorithm}"
            )
    resolved = intake.warm(algorithm)
    if resolved is None:
        raise _Refused(404, f"Algorithm {algorithm} has no warm pool (spec.warmPool)")
    return pools, pools.pool(algorithm, resolved.shard.name)


@blueprint.post("/pools/<algorithm>/lease")
async def lease(algorithm: str) -> Response:
    try:
        pools, pool = _pool(algorithm, leasing=True)
        wanted = parse_lease_request(await body())
    except _Refused as exc:
        return text(exc.status, str(exc))
    except InvalidWorkerRequest as exc:
        return text(400, str(exc))
    answer = await pools.lease(pool, worker=wanted.worker, most=wanted.most, wait=wanted.wait)
    return json_response(200, answer)


@blueprint.post("/pools/<algorithm>/report")
async def report(algorithm: str) -> Response:
    try:
        pools, pool = _pool(algorithm, leasing=False)
        parsed = parse_report(await body(), algorithm=algorithm)
    except _Refused as exc:
        return text(exc.status, str(exc))
    except InvalidWorkerRequest as exc:
        return text(400, str(exc))
    return json_response(200, await pools.report(pool, parsed))
