"""The access log: one INFO line per HTTP request on the `nexusd.access` logger.

    POST /algorithm/v1/run/hello 202 3.1ms from 127.0.0.1:51234 [request_id=... algorithm=hello]

Method, path with its query, status (0: no answer was sent, the client went away first),
duration in milliseconds from the request reaching nexusd to the app returning, and the
client's address. The run the request is about comes from the log context (`nexusd.logs`):
this layer opens a fresh `RunLabels` per request, the app's routes fill in the algorithm and
request id of their path, and intake the id of a run it just accepted; JSON lines carry the
same fields under `http`.

A thin ASGI wrapper outside `guard`, so requests the body budget refuses (413, 429) are logged
too. hypercorn's own access log is not used: it cannot see the run a request is about. Turned
off by `http.access_log = false`; a logger level above INFO skips the formatting as well.

Secrets never reach the log: a receiver path's completion token (`/t/<token>/...`) and a signed
URL's `sig` are written as `<redacted>`, since whoever reads the logs could otherwise complete
runs or fetch payloads and results.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

from nexusd.logs import run_context

if TYPE_CHECKING:
    from nexusd.api.asgi import App, Message, Receive, Scope, Send

logger = logging.getLogger("nexusd.access")

_TOKEN_PATH = re.compile(r"^/t/[^/]*")
_SIGNATURE = re.compile(r"(^|&)(sig=)[^&]*")


def log_access(app: App) -> App:
    """`app`, logging one line per HTTP request it answers (see the module docstring)."""

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = 0

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        began = time.perf_counter()
        with run_context():
            try:
                await app(scope, receive, watched)
            finally:
                if logger.isEnabledFor(logging.INFO):
                    _log(scope, status, (time.perf_counter() - began) * 1000.0)

    return logged


def _log(scope: Scope, status: int, duration_ms: float) -> None:
    query = _SIGNATURE.sub(r"\1\2<redacted>", (scope.get("query_string") or b"").decode("latin-1"))
    path = _TOKEN_PATH.sub("/t/<redacted>", scope["path"]) + ("?" + query if query else "")
    client = scope.get("client")
    remote = f"{client[0]}:{client[1]}" if client else "-"
    logger.info(
        "%s %s %d %.1fms from %s",
        scope["method"],
        path,
        status,
        duration_ms,
        remote,
        extra={
            "http": {
                "method": scope["method"],
                "path": path,
                "status": status,
                "duration_ms": round(duration_ms, 3),
                "remote": remote,
            }
        },
    )
