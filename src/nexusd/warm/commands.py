"""Command mode: each leased run is one process of the template's command, as its Job's pod.

`nexusd worker -- <command> <args...>` is the pod's command line with the template's args
unsubstituted; each run gets them filled exactly as its Job's would be
(`nexusd.kube.manifests.job_args`: `--sas-uri=%s` the payload URL, `--request-id=%s` the run's
id) and the environment of the pod plus the run's own (its receiver URL with this attempt's
completion token, its result-upload URL, ...). So an unchanged algorithm container serves warm
runs: it reads its payload, uploads its result and reports to the receiver as under a Job.

The process runs in its own session (so its own process group) with stdout and stderr passed
through: they are the pod's log. When it exits the worker reports `exited` with its exit code
(the scheduler fails the run unless the algorithm reported it itself). When the run is
cancelled or its lease lost, the whole group gets SIGTERM and, after `kill_grace` seconds,
SIGKILL; whatever the process left behind in its group is killed when it ends, as a pod's
containers are.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
from typing import TYPE_CHECKING

import attrs
import trio

from nexusd.kube.manifests import job_args
from nexusd.warm.leasing import Finished

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.warm.leasing import LeasedRun

logger = logging.getLogger(__name__)

NOT_STARTED = "CommandNotStarted"


@attrs.frozen
class CommandExecutor:
    """Runs `command` (the pod's command and args, placeholders unfilled) once per run."""

    command: tuple[str, ...]
    kill_grace: float = 10.0

    async def __call__(self, run: LeasedRun, started: Callable[[], None]) -> Finished:
        argv = job_args(list(self.command), payload_url=run.payload_uri, request_id=run.request_id)
        env = {**os.environ, **run.env}
        start = functools.partial(
            trio.run_process,
            argv,
            check=False,
            env=env,
            start_new_session=True,
            deliver_cancel=self._stop_group,
        )
        process: trio.Process | None = None
        try:
            # The nursery waits for the process; a cancel makes trio.run_process call
            # _stop_group and still wait (shielded) until the process is gone.
            async with trio.open_nursery() as nursery:
                try:
                    process = await nursery.start(start)
                except OSError as exc:
                    return Finished(
                        request_id=run.request_id,
                        attempt=run.attempt,
                        status="failed",
                        error_cause=NOT_STARTED,
                        error_details=f"{argv[0]}: {exc.strerror or exc}",
                    )
                started()
        finally:
            if process is not None:
                _kill_group(process.pid)
        assert process is not None
        code = process.returncode
        assert code is not None
        logger.debug("run %s: process exited with %d", run.request_id, code)
        return Finished(
            request_id=run.request_id,
            attempt=run.attempt,
            status="exited",
            # As Kubernetes reports a container killed by signal N: 128 + N.
            exit_code=code if code >= 0 else 128 - code,
        )

    async def _stop_group(self, process: trio.Process) -> None:
        """trio.run_process's cancel: the group, not only the process (shielded by trio)."""
        logger.info("stopping process group %d", process.pid)
        _signal_group(process.pid, signal.SIGTERM)
        await trio.sleep(self.kill_grace)
        logger.warning("process group %d outlived its grace: SIGKILL", process.pid)
        _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # every process of the group ended
        os.killpg(pgid, signum)


def _kill_group(pgid: int) -> None:
    """What the run's process left running in its group ends with it."""
    _signal_group(pgid, signal.SIGKILL)
