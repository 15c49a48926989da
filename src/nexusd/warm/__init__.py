"""Warm-pool workers: `nexusd worker`, which leases runs of one warm template from the
scheduler over HTTP and runs each, as a process of the template's command or as a call of a
Python function in-process (no pod, no process start per run).

    leasing.py    the HTTP client of the scheduler's worker API; back-off on transient errors
    reporting.py  done/release items in batches, lease renewal by long poll
    serving.py    the loop: lease into free slots, run, report; stop and recycling
    commands.py   command mode: one process (group) per run, args filled as a Job's
    handlers.py   in-process mode: `WarmRun`, the handler's result uploaded and reported
    running.py    a worker from the `worker.*` settings; signals; `serve`

Algorithm authors use `serve` and `WarmRun`:

    from nexusd.warm import WarmRun, serve

    def handle(run: WarmRun) -> dict:
        return {"echo": run.payload_json()}

    serve(handle)   # settings from NEXUS__WORKER__* (the pool's pods have them)

Depends on `nexusd.core`, `nexusd.settings` and `nexusd.kube.manifests` (the Job args rule) only.
"""

from nexusd.warm.handlers import WarmRun
from nexusd.warm.running import serve

__all__ = ["WarmRun", "serve"]
