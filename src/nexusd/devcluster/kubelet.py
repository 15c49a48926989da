"""The kubelet of the simulated nodes: plays the life of every pod the scheduler bound.

For a bound pod it does what a real kubelet does, in the same order and with the same
reasons, messages and Events:

1. resolve the image reference (`pulling.py`): a malformed one ends in waiting reason
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
     own session with the resolved env; its log is served by `GET …/pods/<name>/log`;
5. when the container exits and `restartPolicy` restarts it (`Always`: any exit, 0 too;
   `OnFailure`: a non-zero one), restart it in place after the CrashLoopBackOff delay
   (`restarts.py`: immediate, then 10 s doubling to 300 s; Event `BackOff`), with
   `restartCount` and `lastState.terminated`; the pod stays Running, Ready only while its
   container runs. Otherwise the pod ends Succeeded or Failed.

A pod with a deletionTimestamp has its container stopped (`Killing`; SIGTERM to the process
group, SIGKILL after the grace) and reported Failed/137; the pod object is removed once no
finalizer is left (the Job controller drops `batch.kubernetes.io/job-tracking`).

A kubelet started on a persisted store first settles what the crashed one left (`recover`):
the recorded containers still running are killed, and the pods they belonged to end Failed as
after a graceful node shutdown, so their Jobs (or ReplicaSets) replace them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
from typing import TYPE_CHECKING, NoReturn

import trio

from nexusd.core.images import InvalidImageName, image_id, normalize

from .container_env import ConfigError, resolve_env
from .events import record_kubelet_event
from .pulling import inspect_image, pull_image
from .resources import CONFIGMAPS, PODS, SECRETS
from .restarts import (
    DEFAULT_BASE,
    DEFAULT_CAP,
    RestartBackoff,
    crashloop_status,
    exited_status,
    not_ready,
    pod_ref,
    restarts,
)
from .runtimes import (
    MSG_PRESSURE,
    Outcome,
    PodKey,
    Runtime,
)
from .storage import TooOld

if TYPE_CHECKING:
    from .objects import Obj
    from .operations import Operations

logger = logging.getLogger(__name__)

#: pkg/kubelet/nodeshutdown's pod status, which a restarted cluster's kubelet gives the pods
#: of the crashed one.
SHUTDOWN_REASON = "Terminated"
MSG_SHUTDOWN = "Pod was terminated in response to imminent node shutdown."
#: The kubelet's status for a container it cannot find (any more, or yet).
LOST_CONTAINER = {
    "exitCode": 137,
    "reason": "ContainerStatusUnknown",
    "message": "The container could not be located when the pod was terminated",
}
LOST = Outcome(137, "ContainerStatusUnknown")


class Kubelet:
    """Follows pod changes and runs one task per bound pod."""

    def __init__(
        self,
        ops: Operations,
        runtime: Runtime,
        *,
        pull_backoff: float = 0.0,
        restart_base: float = DEFAULT_BASE,
        restart_cap: float = DEFAULT_CAP,
    ) -> None:
        self.ops = ops
        self.runtime = runtime
        self.pull_backoff = pull_backoff
        self.restart_base = restart_base
        self.restart_cap = restart_cap
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
        conditions = pod["status"].get("conditions") or []
        pod["status"]["conditions"] = _disrupted(conditions, reason, message, self.ops.now())
        return self.ops.write(PODS, pod)

    # -- restart --------------------------------------------------------------------------

    async def recover(self) -> None:
        """Before following the store: what a crashed kubelet was running is lost.

        Its containers cannot be resumed (their processes were killed, or are killed now, and
        a scripted run has no state to go on from), so every pod it had started, or was
        starting, ends the way a graceful node shutdown ends it: Failed with `DisruptionTarget`
        (reason `TerminationByKubelet`), which a podFailurePolicy can Ignore, so the Job
        controller replaces the pod without counting it against backoffLimit. Bound pods it
        had not taken on yet are started as usual.
        """
        killed = await self.runtime.kill_orphans()
        if killed:
            logger.info("killed %d container(s) left running by a crashed kubelet", len(killed))
        for pod in self.ops.store.list(PODS.key):
            if _started(pod) and not _terminal(pod):
                meta = pod["metadata"]
                self._finish((meta["namespace"], meta["name"]), LOST, lost=True)

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
        waiting = functools.partial(self._waiting, key)
        if not inspect_image(self.ops, pod, container, waiting):
            return
        if not await self._pull(key, pod, container):
            return
        while True:
            try:
                env = resolve_env(self.ops, key[0], container, pod=pod)
                break
            except ConfigError as exc:
                self._waiting(key, "CreateContainerConfigError", str(exc))
                record_kubelet_event(
                    self.ops, pod, "Warning", "Failed", f"Error: {exc}", container=container["name"]
                )
                await self.config_changed.wait()
        name = container["name"]
        policy = pod["spec"].get("restartPolicy", "Always")
        backoff = RestartBackoff(self.restart_base, self.restart_cap)
        restart = False
        while True:
            record_kubelet_event(
                self.ops, pod, "Normal", "Created", f"Created container: {name}", container=name
            )
            record_kubelet_event(
                self.ops, pod, "Normal", "Started", f"Started container {name}", container=name
            )
            started = self._start(key, restart=restart)
            if started is None:
                return
            self.running.add(key)
            outcome = await self.runtime.run(started, stop, env)
            if stop.is_set():
                record_kubelet_event(
                    self.ops,
                    started,
                    "Normal",
                    "Killing",
                    f"Stopping container {name}",
                    container=name,
                )
                outcome = Outcome(outcome.exit_code, outcome.reason)
                break
            if not restarts(policy, outcome):
                break
            restarted = await self._back_off(key, outcome, backoff, stop)
            if restarted is None:
                break
            pod, restart = restarted, True
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

    async def _back_off(
        self, key: PodKey, outcome: Outcome, backoff: RestartBackoff, stop: trio.Event
    ) -> Obj | None:
        """The container exited and its restart policy restarts it: record the exited
        instance, wait out the back-off (CrashLoopBackOff) and pull again; the pod to start
        the next instance of, or None when the pod was deleted meanwhile."""
        pod = self.ops.store.get(PODS.key, *key)
        if pod is None:
            return None
        now = self.ops.now()
        delay = backoff.delay_for(trio.current_time())
        statuses = [
            exited_status(cs, outcome, now) for cs in pod["status"].get("containerStatuses") or []
        ]
        if delay > 0:
            statuses = [crashloop_status(cs, pod, delay) for cs in statuses]
        names = [c["name"] for c in pod["spec"]["containers"]]
        conditions = not_ready(pod["status"].get("conditions") or [], names, now)
        pod = self._update(key, containerStatuses=statuses, conditions=conditions) or pod
        container = pod["spec"]["containers"][0]
        if delay > 0:
            message = f"Back-off restarting failed container {names[0]} in pod {pod_ref(pod)}"
            record_kubelet_event(self.ops, pod, "Warning", "BackOff", message, container=names[0])
            with trio.move_on_after(delay):
                await stop.wait()
            if stop.is_set():
                return None
        backoff.restarted(trio.current_time())
        if not await self._pull(key, pod, container):
            return None
        return pod

    async def _pull(self, key: PodKey, pod: Obj, container: Obj) -> bool:
        waiting = functools.partial(self._waiting, key)
        return await pull_image(
            self.ops, pod, container, waiting=waiting, backoff=self.pull_backoff
        )

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

    def _start(self, key: PodKey, *, restart: bool = False) -> Obj | None:
        """Containers running, pod Ready; a `restart` counts one more and keeps the exited
        instance as `lastState`."""
        pod = self.ops.store.get(PODS.key, *key)
        if pod is None:
            return None
        now = self.ops.now()
        conditions = []
        for c in pod["status"].get("conditions") or []:
            if c["type"] in ("Ready", "ContainersReady"):
                c = _cond(c["type"], now)
            conditions.append(c)
        previous = {cs["name"]: cs for cs in pod["status"].get("containerStatuses") or []}
        statuses = []
        for c in pod["spec"]["containers"]:
            normalized = self._container_status(pod, c, {})["image"]
            extra: Obj = {}
            before = previous.get(c["name"])
            if restart and before is not None:
                state = before.get("state") or {}
                extra["lastState"] = state if "terminated" in state else before.get("lastState")
                extra["restartCount"] = before.get("restartCount", 0) + 1
            statuses.append(
                self._container_status(
                    pod,
                    c,
                    {"running": {"startedAt": now}},
                    ready=True,
                    imageID=image_id(normalized),
                    containerID=f"containerd://{secrets.token_hex(32)}",
                    started=True,
                    **extra,
                )
            )
        return self._update(key, phase="Running", conditions=conditions, containerStatuses=statuses)

    def _finish(
        self, key: PodKey, outcome: Outcome, *, killed: bool = False, lost: bool = False
    ) -> None:
        """The terminal status; `killed`: stopped by a deletion, `lost`: by a crash (above)."""
        pod = self.ops.store.get(PODS.key, *key)
        if pod is None:
            return
        now = self.ops.now()
        statuses = []
        for cs in pod["status"].get("containerStatuses") or []:
            running = (cs.get("state") or {}).get("running")
            if lost or (running is None and killed):
                # never started (waiting on image/config) or gone: a real kubelet reports 137
                terminated: Obj = {**LOST_CONTAINER}
            else:
                terminated = {"exitCode": outcome.exit_code, "reason": outcome.reason}
            terminated["startedAt"] = (running or {}).get("startedAt", now)
            terminated["finishedAt"] = now
            if cs.get("containerID"):
                terminated["containerID"] = cs["containerID"]
            statuses.append(
                {**cs, "state": {"terminated": terminated}, "ready": False, "started": False}
            )
        failed = outcome.exit_code != 0 or killed or lost
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
        if lost:
            extra = {"reason": SHUTDOWN_REASON, "message": MSG_SHUTDOWN}
            conditions = _disrupted(conditions, "TerminationByKubelet", MSG_SHUTDOWN, now)
        self._update(
            key,
            phase="Failed" if failed else "Succeeded",
            conditions=conditions,
            containerStatuses=statuses,
            **extra,
        )


def _terminal(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def _disrupted(conditions: list[Obj], reason: str, message: str, now: str) -> list[Obj]:
    """`conditions` with `DisruptionTarget=True` first, where the kubelet puts it."""
    cond = {
        "type": "DisruptionTarget",
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }
    return [cond, *(c for c in conditions if c["type"] != cond["type"])]


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
    restart_base: float = DEFAULT_BASE,
    restart_cap: float = DEFAULT_CAP,
    task_status: trio.TaskStatus[Kubelet] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    kubelet = Kubelet(
        ops, runtime, pull_backoff=pull_backoff, restart_base=restart_base, restart_cap=restart_cap
    )
    await kubelet.recover()
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
