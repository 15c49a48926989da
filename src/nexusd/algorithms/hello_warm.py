"""The `hello-warm` example algorithm: `hello` served in-process by a warm pool.

`nexusd dev` applies it beside `hello` (hello.yaml). Its template's `spec.warmPool.handler`
names `greet`, so the pool's workers (`nexusd worker --handler ...`) call it once per run in
their own process: no pod and no process start per run. Same payload as `hello`: it greets
`name`; `{"fail": "report"}` makes it fail the run (the exception becomes errorCause and
errorDetails); `{"sleep": seconds}` makes it take its time, cancellable.

`ignore` does nothing and returns no result: the algorithm of the warm-pool benchmark
(tests/perf), which measures nexusd's cost per run rather than an algorithm's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from nexusd.warm import WarmRun


class AskedToFail(ValueError):
    """The payload asked hello-warm to fail."""


async def greet(run: WarmRun) -> dict[str, Any]:
    payload = run.payload_json()
    await trio.sleep(float(payload.get("sleep", 0)))
    if payload.get("fail") == "report":
        raise AskedToFail("the payload asked hello-warm to fail")
    return {"greeting": f"Hello, {payload.get('name', 'world')}!", "requestId": run.request_id}


async def ignore(run: WarmRun) -> None:
    del run
