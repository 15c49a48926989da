"""Container runtimes of the embedded kubelet: what a started container does until it ends.

* `ScriptedRuntime` (tests): the outcome comes from pod annotations (`…/exit-code`,
  `…/duration`, `…/oom-killed`, `…/evict`), defaults from the cluster config;
* `LocalProcessRuntime` (`nexusd dev`): `command + args` run as a local process in its own
  session with the resolved env, its output in the pod's log file; stopping it signals the
  whole process group (SIGTERM, then SIGKILL after the grace). Each container's process is
  recorded while it runs, so that the kubelet of a restarted cluster kills the ones a crashed
  cluster left behind (`orphans.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from . import orphans
from .nodes import DEFAULT_NODE_NAME

if TYPE_CHECKING:
    import pathlib

    from .objects import Obj

logger = logging.getLogger(__name__)

NODE_NAME = DEFAULT_NODE_NAME
ANNOTATION_EXIT_CODE = "devcluster.nexusd.io/exit-code"
ANNOTATION_DURATION = "devcluster.nexusd.io/duration"
ANNOTATION_OOM = "devcluster.nexusd.io/oom-killed"
ANNOTATION_PULL_ERROR = "devcluster.nexusd.io/image-pull-error"
"""Value: the registry's error text; the pull fails (ErrImagePull, then ImagePullBackOff)."""
ANNOTATION_EVICT = "devcluster.nexusd.io/evict"
"""`TerminationByKubelet` (node pressure) or `EvictionByEvictionAPI`, after the duration."""
EVICTION_REASONS = ("TerminationByKubelet", "EvictionByEvictionAPI")
MSG_PRESSURE = "The node was low on resource: memory. "
PodKey = tuple[str, str]


@attrs.frozen
class Outcome:
    exit_code: int
    reason: str  # Completed | Error | OOMKilled | ContainerCannotRun
    evicted: str = ""  # an EVICTION_REASONS entry when the kubelet evicted the pod


class Runtime(Protocol):
    async def run(self, pod: Obj, stop: trio.Event, env: dict[str, str]) -> Outcome:
        """Run the pod's container until it exits or `stop` is set (then stop it)."""
        ...

    def log_path(self, namespace: str, name: str) -> pathlib.Path | None: ...

    async def kill_orphans(self) -> list[int]:
        """Kill what containers a crashed earlier kubelet left running; their pids."""
        ...


def _outcome(code: int, oom: bool = False) -> Outcome:
    if oom:
        return Outcome(137, "OOMKilled")
    return Outcome(code, "Completed" if code == 0 else "Error")


def annotations_of(pod: Obj) -> dict[str, str]:
    return pod["metadata"].get("annotations") or {}


@attrs.frozen
class ScriptedRuntime:
    default_exit_code: int = 0
    default_duration: float = 0.0

    async def run(self, pod: Obj, stop: trio.Event, env: dict[str, str]) -> Outcome:
        ann = annotations_of(pod)
        code = int(ann.get(ANNOTATION_EXIT_CODE, self.default_exit_code))
        duration = float(str(ann.get(ANNOTATION_DURATION, self.default_duration)).rstrip("s"))
        with trio.move_on_after(duration):
            await stop.wait()
            return Outcome(137, "Error")
        evict = ann.get(ANNOTATION_EVICT, "")
        if evict:
            return Outcome(137, "Error", evicted=evict)
        return _outcome(code, str(ann.get(ANNOTATION_OOM, "")).lower() == "true")

    def log_path(self, namespace: str, name: str) -> pathlib.Path | None:
        return None

    async def kill_orphans(self) -> list[int]:
        return []


@attrs.frozen
class LocalProcessRuntime:
    """Runs the container's command as a child process; `python` means this interpreter."""

    state_dir: pathlib.Path
    termination_grace: float = 5.0

    def pod_dir(self, namespace: str, name: str) -> pathlib.Path:
        return self.state_dir / "pods" / namespace / name

    def log_path(self, namespace: str, name: str) -> pathlib.Path | None:
        return self.pod_dir(namespace, name) / "container.log"

    async def kill_orphans(self) -> list[int]:
        return await orphans.kill_orphans(self.state_dir / "pods")

    @staticmethod
    def environment(env: dict[str, str]) -> dict[str, str]:
        base = {
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        }
        for var in ("HOME", "PYTHONPATH"):
            if var in os.environ:
                base[var] = os.environ[var]
        return {**base, **env}

    async def run(self, pod: Obj, stop: trio.Event, env: dict[str, str]) -> Outcome:
        meta = pod["metadata"]
        container = pod["spec"]["containers"][0]
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        workdir = self.pod_dir(meta["namespace"], meta["name"])
        workdir.mkdir(parents=True, exist_ok=True)
        grace = min(self.termination_grace, float(meta.get("deletionGracePeriodSeconds") or 30))
        log_path = self.log_path(meta["namespace"], meta["name"])
        assert log_path is not None
        # A local file opened once per pod: not worth a thread hop in the embedded cluster.
        with open(log_path, "ab") as log:  # noqa: ASYNC230
            try:
                proc = await trio.lowlevel.open_process(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env=self.environment(env),
                    start_new_session=True,  # its own process group: stop kills the tree
                )
            except OSError as exc:
                log.write(f"devcluster: cannot start {argv!r}: {exc}\n".encode())
                return Outcome(128, "ContainerCannotRun")
        orphans.record(workdir, proc.pid)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stop_on, stop, proc, grace)
                code = await proc.wait()
                nursery.cancel_scope.cancel()
        finally:
            signal_group(proc, signal.SIGKILL)  # leave no grandchild behind
            if proc.returncode is None:  # cluster shutting down
                with trio.CancelScope(shield=True):
                    await proc.wait()
            orphans.forget(workdir)
        if code < 0:
            return Outcome(128 - code, "Error")
        return _outcome(code)

    @staticmethod
    async def _stop_on(stop: trio.Event, proc: trio.Process, grace: float) -> None:
        await stop.wait()
        signal_group(proc, signal.SIGTERM)
        with trio.move_on_after(grace):
            await proc.wait()
            return
        signal_group(proc, signal.SIGKILL)


def signal_group(proc: trio.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


# -- env resolution (CreateContainerConfigError) ------------------------------------------
