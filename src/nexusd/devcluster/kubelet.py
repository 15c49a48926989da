"""The kubelet of the simulated nodes: plays the life of every pod the scheduler bound.

For a bound pod it does what a real kubelet does, in the same order and with the same
reasons, messages and Events:

1. resolve the image reference (`images.normalize`): a malformed one ends in waiting reason
   `InvalidImageName` (Events `InspectFailed`, `Failed`);
2. "pull" it: `Pulling`/`Pulled`, or with `devcluster.nexusd.io/image-pull-error` waiting
   `ErrImagePull` then `ImagePullBackOff` (Events `Failed`, `BackOff`);
3. resolve `env[].valueFrom` and `envFrom` Secrets/ConfigMaps: a missing one (or key) is
   waiting `CreateContainerConfigError` (`secret "x" not found`), retried whenever a Secret or
   ConfigMap changes;
4. create and start the container (`Created`, `Started`), then run it in a `Runtime`:
   * `ScriptedRuntime` (tests): the outcome comes from pod annotations (`…/exit-code`,
     `…/duration`, `…/oom-killed`, `…/evict`), defaults from the cluster config;
   * `LocalProcessRuntime` (`nexusd dev`): `command + args` run as a local process in its
     own session with the resolved env; its log is served by `GET …/pods/<name>/log`.

A pod with a deletionTimestamp has its container stopped (`Killing`; SIGTERM to the process
group, SIGKILL after the grace) and reported Failed/137; the pod object is removed once no
finalizer is left (the Job controller drops `batch.kubernetes.io/job-tracking`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, NoReturn, Protocol

import attrs
import trio

from .events import record_kubelet_event
from .images import InvalidImageName, image_id, normalize
from .nodes import DEFAULT_NODE_NAME
from .resources import CONFIGMAPS, PODS, SECRETS
from .storage import TooOld

if TYPE_CHECKING:
    import pathlib

    from .objects import Obj
    from .operations import Operations

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


def _outcome(code: int, oom: bool = False) -> Outcome:
    if oom:
        return Outcome(137, "OOMKilled")
    return Outcome(code, "Completed" if code == 0 else "Error")


def _annotations(pod: Obj) -> dict[str, str]:
    return pod["metadata"].get("annotations") or {}


@attrs.frozen
class ScriptedRuntime:
    default_exit_code: int = 0
    default_duration: float = 0.0

    async def run(self, pod: Obj, stop: trio.Event, env: dict[str, str]) -> Outcome:
        ann = _annotations(pod)
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


@attrs.frozen
class LocalProcessRuntime:
    """Runs the container's command as a child process; `python` means this interpreter."""

    state_dir: pathlib.Path
    termination_grace: float = 5.0

    def pod_dir(self, namespace: str, name: str) -> pathlib.Path:
        return self.state_dir / "pods" / namespace / name

    def log_path(self, namespace: str, name: str) -> pathlib.Path | None:
        return self.pod_dir(namespace, name) / "container.log"

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
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stop_on, stop, proc, grace)
                code = await proc.wait()
                nursery.cancel_scope.cancel()
        finally:
            _signal_group(proc, signal.SIGKILL)  # leave no grandchild behind
            if proc.returncode is None:  # cluster shutting down
                with trio.CancelScope(shield=True):
                    await proc.wait()
        if code < 0:
            return Outcome(128 - code, "Error")
        return _outcome(code)

    @staticmethod
    async def _stop_on(stop: trio.Event, proc: trio.Process, grace: float) -> None:
        await stop.wait()
        _signal_group(proc, signal.SIGTERM)
        with trio.move_on_after(grace):
            await proc.wait()
            return
        _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: trio.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


# -- env resolution (CreateContainerConfigError) ------------------------------------------


class ConfigError(Exception):
    """A referenced Secret/ConfigMap (or key) is missing; str() is the kubelet's message."""


def _lookup(ops: Operations, namespace: str, kind: str, name: str) -> Obj | None:
    rt = SECRETS if kind == "Secret" else CONFIGMAPS
    return ops.store.peek(rt.key, namespace, name)


def _data(obj: Obj, kind: str) -> dict[str, str]:
    import base64

    if kind == "Secret":
        out = {
            k: base64.b64decode(v).decode(errors="replace")
            for k, v in (obj.get("data") or {}).items()
        }
        out.update(obj.get("stringData") or {})
        return out
    return dict(obj.get("data") or {})


def resolve_env(ops: Operations, namespace: str, container: Obj) -> dict[str, str]:
    """The container's environment as the kubelet builds it; raises ConfigError."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = source.get(field)
            if ref is None:
                continue
            obj = _lookup(ops, namespace, kind, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            prefix = source.get("prefix", "")
            env.update({prefix + k: v for k, v in _data(obj, kind).items()})
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        value_from = entry.get("valueFrom") or {}
        for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            ref = value_from.get(field)
            if ref is None:
                continue
            obj = _lookup(ops, namespace, kind, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            data = _data(obj, kind)
            if ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(
                    f"couldn't find key {ref.get('key')} in {kind} {namespace}/{ref.get('name')}"
                )
            env[entry["name"]] = data[ref["key"]]
        if "name" in entry and entry["name"] not in env and not value_from:
            env[entry["name"]] = ""
    return env


# -- the kubelet --------------------------------------------------------------------------


class Kubelet:
    """Follows pod changes and runs one task per bound pod."""

    def __init__(self, ops: Operations, runtime: Runtime, *, pull_backoff: float = 0.0) -> None:
        self.ops = ops
        self.runtime = runtime
        self.pull_backoff = pull_backoff
        self.stops: dict[PodKey, trio.Event] = {}
        self.running: set[PodKey] = set()
        self.config_changed = trio.Event()

    # -- test API -------------------------------------------------------------------------

    def evict(self, namespace: str, name: str, reason: str = "EvictionByEvictionAPI") -> None:
        """Evict a pod: DisruptionTarget=True, then it ends Failed (like checklist's 05 rule)."""
        pod = self.ops.store.get(PODS.key, namespace, name)
        if pod is None:
            return
        self._disrupt(pod, reason)
        if reason == "EvictionByEvictionAPI":
            self.ops.delete(PODS, namespace, name)
        elif (namespace, name) in self.stops:
            self.stops[(namespace, name)].set()

    def _disrupt(self, pod: Obj, reason: str) -> Obj:
        message = "Eviction API: evicting" if reason == "EvictionByEvictionAPI" else MSG_PRESSURE
        cond = {
            "type": "DisruptionTarget",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": self.ops.now(),
            "reason": reason,
            "message": message,
        }
        others = [c for c in pod["status"].get("conditions") or [] if c["type"] != cond["type"]]
        pod["status"]["conditions"] = [cond, *others]
        return self.ops.write(PODS, pod)

    # -- following the store --------------------------------------------------------------

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
            elif not meta.get("finalizers"):
                self.ops.remove_pod(*key)
        elif key not in self.stops and pod["spec"].get("nodeName") and not _started(pod):
            self.stops[key] = trio.Event()
            nursery.start_soon(self.run_pod, key, self.stops[key])

    async def run_pod(self, key: PodKey, stop: trio.Event) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._lifecycle, key, stop, nursery.cancel_scope)
                await stop.wait()
                if key not in self.running:  # still waiting on image or config: give up
                    nursery.cancel_scope.cancel()
        finally:
            self.stops.pop(key, None)
            self.running.discard(key)
        pod = self.ops.store.peek(PODS.key, *key)
        if pod is not None and pod["metadata"].get("deletionTimestamp"):
            if not _terminal(pod):
                self._finish(key, Outcome(137, "Error"), killed=True)
                pod = self.ops.store.peek(PODS.key, *key)
            if pod is not None and not pod["metadata"].get("finalizers"):
                self.ops.remove_pod(*key)

    async def _lifecycle(self, key: PodKey, stop: trio.Event, scope: trio.CancelScope) -> None:
        pod = self.ops.store.get(PODS.key, *key)
        if pod is None:
            return
        container = pod["spec"]["containers"][0]
        pod = self._prepare(key, pod)
        image = container.get("image", "")
        try:
            normalize(image)
        except InvalidImageName as exc:
            record_kubelet_event(
                self.ops, pod, "Warning", "InspectFailed", str(exc), container=container["name"]
            )
            self._waiting(key, "InvalidImageName", str(exc))
            record_kubelet_event(
                self.ops,
                pod,
                "Warning",
                "Failed",
                "Error: InvalidImageName",
                container=container["name"],
            )
            return
        if not await self._pull(key, pod, container):
            return
        while True:
            try:
                env = resolve_env(self.ops, key[0], container)
                break
            except ConfigError as exc:
                self._waiting(key, "CreateContainerConfigError", str(exc))
                record_kubelet_event(
                    self.ops, pod, "Warning", "Failed", f"Error: {exc}", container=container["name"]
                )
                await self.config_changed.wait()
        name = container["name"]
        record_kubelet_event(
            self.ops, pod, "Normal", "Created", f"Created container: {name}", container=name
        )
        record_kubelet_event(
            self.ops, pod, "Normal", "Started", f"Started container {name}", container=name
        )
        started = self._start(key)
        if started is None:
            return
        self.running.add(key)
        outcome = await self.runtime.run(started, stop, env)
        if stop.is_set():
            record_kubelet_event(
                self.ops, started, "Normal", "Killing", f"Stopping container {name}", container=name
            )
            outcome = Outcome(outcome.exit_code, outcome.reason)
        if outcome.evicted == "EvictionByEvictionAPI":
            current = self.ops.store.get(PODS.key, *key)
            if current is not None:
                self._disrupt(current, outcome.evicted)
                self.ops.delete(PODS, *key)
                outcome = Outcome(137, "Error")
        elif outcome.evicted:
            current = self.ops.store.get(PODS.key, *key)
            if current is not None:
                self._disrupt(current, outcome.evicted)
                record_kubelet_event(self.ops, current, "Warning", "Evicted", MSG_PRESSURE)
                record_kubelet_event(
                    self.ops,
                    current,
                    "Normal",
                    "Killing",
                    f"Stopping container {name}",
                    container=name,
                )
        self._finish(key, outcome, killed=stop.is_set())
        scope.cancel()

    async def _pull(self, key: PodKey, pod: Obj, container: Obj) -> bool:
        image, name = container.get("image", ""), container["name"]
        error = _annotations(pod).get(ANNOTATION_PULL_ERROR)
        policy = container.get("imagePullPolicy", "IfNotPresent")
        if error is None and policy != "Always":
            msg = f'Container image "{image}" already present on machine'
            record_kubelet_event(self.ops, pod, "Normal", "Pulled", msg, container=name)
            return True
        record_kubelet_event(
            self.ops, pod, "Normal", "Pulling", f'Pulling image "{image}"', container=name
        )
        if error is None:
            msg = (
                f'Successfully pulled image "{image}" in 0s (0s including waiting). '
                "Image size: 0 bytes."
            )
            record_kubelet_event(self.ops, pod, "Normal", "Pulled", msg, container=name)
            return True
        failed = f'Failed to pull image "{image}": {error}'
        record_kubelet_event(self.ops, pod, "Warning", "Failed", failed, container=name)
        record_kubelet_event(
            self.ops, pod, "Warning", "Failed", "Error: ErrImagePull", container=name
        )
        self._waiting(key, "ErrImagePull", failed)
        await trio.sleep(self.pull_backoff)
        backoff = f'Back-off pulling image "{image}"'
        record_kubelet_event(self.ops, pod, "Normal", "BackOff", backoff, container=name)
        record_kubelet_event(
            self.ops, pod, "Warning", "Failed", "Error: ImagePullBackOff", container=name
        )
        self._waiting(key, "ImagePullBackOff", backoff)
        await trio.sleep_forever()
        return False

    # -- status writes --------------------------------------------------------------------

    def _container_status(self, pod: Obj, container: Obj, state: Obj, **extra: object) -> Obj:
        image = container.get("image", "")
        with contextlib.suppress(InvalidImageName):
            image = normalize(image)
        out: Obj = {"name": container["name"], "state": state, "lastState": {}, "ready": False}
        out["restartCount"] = 0
        out["image"] = image
        out["imageID"] = ""
        out |= extra
        out.setdefault("started", False)
        return out

    def _prepare(self, key: PodKey, pod: Obj) -> Obj:
        """The kubelet's first status: sandbox ready, containers waiting (ContainerCreating)."""
        now = self.ops.now()
        names = [c["name"] for c in pod["spec"]["containers"]]
        not_ready = {
            "status": "False",
            "lastProbeTime": None,
            "lastTransitionTime": now,
            "reason": "ContainersNotReady",
            "message": f"containers with unready status: [{' '.join(names)}]",
        }
        scheduled = [
            c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"
        ]
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        updated = self._update(
            key,
            phase="Pending",
            conditions=[
                _cond("PodReadyToStartContainers", now),
                _cond("Initialized", now),
                {"type": "Ready", **not_ready},
                {"type": "ContainersReady", **not_ready},
                *scheduled,
            ],
            hostIP="127.0.0.1",
            hostIPs=[{"ip": "127.0.0.1"}],
            podIP="127.0.0.1",
            podIPs=[{"ip": "127.0.0.1"}],
            startTime=now,
            containerStatuses=[
                self._container_status(pod, c, waiting) for c in pod["spec"]["containers"]
            ],
        )
        return updated or pod

    def _waiting(self, key: PodKey, reason: str, message: str) -> None:
        pod = self.ops.store.get(PODS.key, *key)
        if pod is None:
            return
        state = {"waiting": {"reason": reason, "message": message}}
        self._update(
            key,
            containerStatuses=[
                self._container_status(pod, c, state) for c in pod["spec"]["containers"]
            ],
        )

    def _start(self, key: PodKey) -> Obj | None:
        pod = self.ops.store.get(PODS.key, *key)
        if pod is None:
            return None
        now = self.ops.now()
        conditions = []
        for c in pod["status"].get("conditions") or []:
            if c["type"] in ("Ready", "ContainersReady"):
                c = _cond(c["type"], now)
            conditions.append(c)
        statuses = []
        for c in pod["spec"]["containers"]:
            normalized = self._container_status(pod, c, {})["image"]
            statuses.append(
                self._container_status(
                    pod,
                    c,
                    {"running": {"startedAt": now}},
                    ready=True,
                    imageID=image_id(normalized),
                    containerID=f"containerd://{secrets.token_hex(32)}",
                    started=True,
                )
            )
        return self._update(key, phase="Running", conditions=conditions, containerStatuses=statuses)

    def _finish(self, key: PodKey, outcome: Outcome, *, killed: bool = False) -> None:
        pod = self.ops.store.get(PODS.key, *key)
        if pod is None:
            return
        now = self.ops.now()
        statuses = []
        for cs in pod["status"].get("containerStatuses") or []:
            running = (cs.get("state") or {}).get("running")
            if running is None and killed:
                # never started (waiting on image/config): a real kubelet reports exit 137
                terminated: Obj = {"exitCode": 137, "reason": "ContainerStatusUnknown"}
                terminated["message"] = (
                    "The container could not be located when the pod was terminated"
                )
            else:
                terminated = {"exitCode": outcome.exit_code, "reason": outcome.reason}
            terminated["startedAt"] = (running or {}).get("startedAt", now)
            terminated["finishedAt"] = now
            if cs.get("containerID"):
                terminated["containerID"] = cs["containerID"]
            statuses.append(
                {**cs, "state": {"terminated": terminated}, "ready": False, "started": False}
            )
        failed = outcome.exit_code != 0 or killed
        conditions = []
        for c in pod["status"].get("conditions") or []:
            if c["type"] in ("Ready", "ContainersReady"):
                c = {**c, "status": "False", "lastTransitionTime": now, "reason": "PodCompleted"}
                c.pop("message", None)
            elif c["type"] == "PodReadyToStartContainers":
                c = {**c, "status": "False", "lastTransitionTime": now}
            conditions.append(c)
        extra: dict[str, object] = {}
        if outcome.evicted == "TerminationByKubelet":
            extra = {"reason": "Evicted", "message": MSG_PRESSURE}
        self._update(
            key,
            phase="Failed" if failed else "Succeeded",
            conditions=conditions,
            containerStatuses=statuses,
            **extra,
        )


def _terminal(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def _started(pod: Obj) -> bool:
    """The kubelet already took this pod on (after a restart of the cluster it is not redone)."""
    return _terminal(pod) or bool(pod.get("status", {}).get("startTime"))


def _cond(ctype: str, now: str) -> Obj:
    return {"type": ctype, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}


async def run_kubelet(
    *,
    ops: Operations,
    runtime: Runtime,
    pull_backoff: float = 0.0,
    task_status: trio.TaskStatus[Kubelet] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    kubelet = Kubelet(ops, runtime, pull_backoff=pull_backoff)
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
                if change.resource in (SECRETS.key, CONFIGMAPS.key):
                    kubelet.config_changed.set()
                    kubelet.config_changed = trio.Event()
                elif change.resource == PODS.key and change.type != "DELETED":
                    kubelet.observe(change.obj, nursery)
                elif change.resource == PODS.key and change.type == "DELETED":
                    meta = change.obj["metadata"]
                    stop = kubelet.stops.get((meta["namespace"], meta["name"]))
                    if stop is not None:
                        stop.set()
    raise AssertionError("unreachable")


__all__ = [
    "ANNOTATION_DURATION",
    "ANNOTATION_EVICT",
    "ANNOTATION_EXIT_CODE",
    "ANNOTATION_OOM",
    "ANNOTATION_PULL_ERROR",
    "NODE_NAME",
    "Kubelet",
    "LocalProcessRuntime",
    "ScriptedRuntime",
    "resolve_env",
    "run_kubelet",
]
