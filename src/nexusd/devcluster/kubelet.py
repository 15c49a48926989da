"""The kubelet of the single fake node: binds pods, plays their lifecycle, removes deleted ones.

There is no scheduler: a new pod is bound at once to `devcluster-node-0`. Its container then
runs in one of two runtimes:

* `ScriptedRuntime` (tests): the outcome comes from pod annotations
  (`devcluster.nexusd.io/exit-code`, `…/duration`, `…/oom-killed`), copied from the Job's pod
  template, with defaults from the cluster config. Timing uses trio's clock.
* `LocalProcessRuntime` (`nexusd dev`): the container's `command + args` run as a local
  subprocess with the container's plain `env`, output captured to a log file that
  `GET …/pods/<name>/log` serves.

A pod with a deletionTimestamp has its container stopped (SIGTERM, then SIGKILL after the grace
period) and is then removed; a pod that already finished is removed at once (like kwok).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, NoReturn, Protocol

import attrs
import trio

from .resources import PODS
from .storage import TooOld

if TYPE_CHECKING:
    import pathlib

    from .objects import Obj
    from .operations import Operations

logger = logging.getLogger(__name__)

NODE_NAME = "devcluster-node-0"
ANNOTATION_EXIT_CODE = "devcluster.nexusd.io/exit-code"
ANNOTATION_DURATION = "devcluster.nexusd.io/duration"
ANNOTATION_OOM = "devcluster.nexusd.io/oom-killed"
PodKey = tuple[str, str]


@attrs.frozen
class Outcome:
    exit_code: int
    reason: str  # Completed | Error | OOMKilled


class Runtime(Protocol):
    async def run(self, pod: Obj, stop: trio.Event) -> Outcome:
        """Run the pod's container until it exits or `stop` is set (then stop it)."""
        ...

    def log_path(self, namespace: str, name: str) -> pathlib.Path | None: ...


def _outcome(code: int, oom: bool = False) -> Outcome:
    if oom:
        return Outcome(137, "OOMKilled")
    return Outcome(code, "Completed" if code == 0 else "Error")


@attrs.frozen
class ScriptedRuntime:
    default_exit_code: int = 0
    default_duration: float = 0.0

    async def run(self, pod: Obj, stop: trio.Event) -> Outcome:
        ann = pod["metadata"].get("annotations") or {}
        code = int(ann.get(ANNOTATION_EXIT_CODE, self.default_exit_code))
        duration = float(str(ann.get(ANNOTATION_DURATION, self.default_duration)).rstrip("s"))
        with trio.move_on_after(duration):
            await stop.wait()
            return Outcome(137, "Error")
        return _outcome(code, str(ann.get(ANNOTATION_OOM, "")).lower() == "true")

    def log_path(self, namespace: str, name: str) -> pathlib.Path | None:
        return None


@attrs.frozen
class LocalProcessRuntime:
    """Runs the container's command as a child process; `python` means this interpreter."""

    state_dir: pathlib.Path
    termination_grace: float = 5.0

    def pod_dir(self, namespace: str, name: str) -> pathlib.Path:
        return self.state_dir / "pods" / namespace / name

    def log_path(self, namespace: str, name: str) -> pathlib.Path | None:
        return self.pod_dir(namespace, name) / "container.log"

    def environment(self, container: Obj) -> dict[str, str]:
        env = {
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        }
        for var in ("HOME", "PYTHONPATH"):
            if var in os.environ:
                env[var] = os.environ[var]
        for entry in container.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = str(entry["value"])
        return env

    async def run(self, pod: Obj, stop: trio.Event) -> Outcome:
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
                    env=self.environment(container),
                    start_new_session=True,
                )
            except OSError as exc:
                log.write(f"devcluster: cannot start {argv!r}: {exc}\n".encode())
                return Outcome(128, "ContainerCannotRun")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stop_on, stop, proc, grace)
                code = await proc.wait()
                nursery.cancel_scope.cancel()
        finally:
            if proc.returncode is None:  # cluster shutting down: leave no process behind
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
        if code < 0:
            return Outcome(128 - code, "Error")
        return _outcome(code)

    @staticmethod
    async def _stop_on(stop: trio.Event, proc: trio.Process, grace: float) -> None:
        await stop.wait()
        proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            await proc.wait()
            return
        proc.kill()


class Kubelet:
    """Follows pod changes and runs one task per pod on the fake node."""

    def __init__(self, ops: Operations, runtime: Runtime) -> None:
        self.ops = ops
        self.runtime = runtime
        self.stops: dict[PodKey, trio.Event] = {}

    def _update(self, key: PodKey, **status: object) -> Obj | None:
        pod = self.ops.store.get(PODS.key, *key)
        if pod is None:
            return None
        pod["status"] = {**pod.get("status", {}), **status}
        return self.ops.write(PODS, pod)

    def observe(self, pod: Obj, nursery: trio.Nursery) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        if meta.get("deletionTimestamp"):
            if key in self.stops:
                self.stops[key].set()
            else:
                self.ops.remove_pod(*key)
        elif key not in self.stops and not pod["spec"].get("nodeName") and not _terminal(pod):
            self.stops[key] = trio.Event()
            nursery.start_soon(self.run_pod, key, self.stops[key])

    async def run_pod(self, key: PodKey, stop: trio.Event) -> None:
        try:
            pod = self._bind(key)
            if pod is not None and not stop.is_set():
                pod = self._start(key, pod)
                if pod is not None:
                    outcome = await self.runtime.run(pod, stop)
                    self._finish(key, outcome)
        finally:
            self.stops.pop(key, None)
        if stop.is_set():
            self.ops.remove_pod(*key)

    def _bind(self, key: PodKey) -> Obj | None:
        pod = self.ops.store.get(PODS.key, *key)
        if pod is None:
            return None
        now = self.ops.now()
        pod["spec"]["nodeName"] = NODE_NAME
        pod["status"]["conditions"] = [_cond("PodScheduled", now)]
        return self.ops.write(PODS, pod)

    def _start(self, key: PodKey, pod: Obj) -> Obj | None:
        now = self.ops.now()
        container = pod["spec"]["containers"][0]
        return self._update(
            key,
            phase="Running",
            conditions=[
                _cond(t, now) for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            hostIP="127.0.0.1",
            hostIPs=[{"ip": "127.0.0.1"}],
            podIP="127.0.0.1",
            podIPs=[{"ip": "127.0.0.1"}],
            startTime=now,
            containerStatuses=[
                {
                    "name": container["name"],
                    "state": {"running": {"startedAt": now}},
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": container.get("image", ""),
                    "imageID": "",
                    "started": True,
                }
            ],
        )

    def _finish(self, key: PodKey, outcome: Outcome) -> None:
        pod = self.ops.store.get(PODS.key, *key)
        if pod is None:
            return
        now = self.ops.now()
        statuses = pod["status"].get("containerStatuses") or [{}]
        started = (statuses[0].get("state", {}).get("running") or {}).get("startedAt", now)
        terminated = {
            "exitCode": outcome.exit_code,
            "reason": outcome.reason,
            "startedAt": started,
            "finishedAt": now,
        }
        statuses[0] = {
            **statuses[0],
            "state": {"terminated": terminated},
            "ready": False,
            "started": False,
        }
        conditions = []
        for c in pod["status"].get("conditions") or []:
            if c["type"] in ("Ready", "ContainersReady"):
                c = {**c, "status": "False", "lastTransitionTime": now, "reason": "PodCompleted"}
            conditions.append(c)
        self._update(
            key,
            phase="Succeeded" if outcome.exit_code == 0 else "Failed",
            conditions=conditions,
            containerStatuses=statuses,
        )


def _terminal(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def _cond(ctype: str, now: str) -> Obj:
    return {"type": ctype, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}


async def run_kubelet(
    *,
    ops: Operations,
    runtime: Runtime,
    task_status: trio.TaskStatus[Kubelet] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    kubelet = Kubelet(ops, runtime)
    async with trio.open_nursery() as nursery:
        for pod in ops.store.list(PODS.key):
            kubelet.observe(pod, nursery)
        cursor = ops.store.resource_version
        task_status.started(kubelet)
        while True:
            await ops.store.wait_after(cursor)
            try:
                changes = ops.store.changes_since(cursor)
            except TooOld:
                changes = []
            cursor = ops.store.resource_version
            for change in changes:
                if change.resource == PODS.key and change.type != "DELETED":
                    kubelet.observe(change.obj, nursery)
                elif change.resource == PODS.key and change.type == "DELETED":
                    meta = change.obj["metadata"]
                    stop = kubelet.stops.get((meta["namespace"], meta["name"]))
                    if stop is not None:
                        stop.set()
    raise AssertionError("unreachable")


__all__ = [
    "ANNOTATION_DURATION",
    "ANNOTATION_EXIT_CODE",
    "ANNOTATION_OOM",
    "NODE_NAME",
    "Kubelet",
    "LocalProcessRuntime",
    "ScriptedRuntime",
    "run_kubelet",
]
