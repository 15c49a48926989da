"""Handlers that tests name as `module:function` (worker.handler), in-process or in a real
`nexusd worker` process."""

from __future__ import annotations

import os
import pathlib
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nexusd.warm import WarmRun

NOT_CALLABLE = 42


def echo(run: WarmRun) -> dict[str, Any]:
    return {
        "requestId": run.request_id,
        "algorithm": run.algorithm,
        "attempt": run.attempt,
        "payload": run.payload_json(),
        "receiver": run.env.get("NEXUS__CLIENT__RECEIVER"),
    }


def wait_for_file(run: WarmRun) -> str:
    """Marks that it started, then returns once the file named by the payload exists."""
    target = pathlib.Path(run.payload.decode())
    pathlib.Path(f"{target}.started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not target.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{target} never appeared")
        time.sleep(0.02)
    return f"done {run.request_id}"
