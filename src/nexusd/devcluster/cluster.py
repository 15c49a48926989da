"""The entry point: `run_dev_cluster` runs API server, controllers and kubelet in one nursery.

Controllers: garbage collector, Job, ReplicaSet and Deployment controllers, scheduler.

    async with trio.open_nursery() as nursery:
        cluster = await nursery.start(functools.partial(run_dev_cluster, config=config))
        # cluster.kubeconfig_path now points at a live server

`task_status.started(handle)` is called only once the HTTP listener is bound and the
controllers follow the store, so the caller can connect at once.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from .apiserver import ApiServer
from .deployments import run_deployment_controller
from .faults import FaultPlan, Faults
from .garbage import run_garbage_collector
from .jobcontroller import run_job_controller
from .kubeconfig import write_kubeconfig
from .kubelet import Kubelet, run_kubelet
from .nodes import DEFAULT_NODE_GROUPS, NodeGroup, register_nodes
from .operations import Operations
from .persistence import SqliteJournal
from .replicasets import run_replicaset_controller
from .resources import Registry
from .restarts import DEFAULT_BASE, DEFAULT_CAP
from .runtimes import LocalProcessRuntime, Runtime, ScriptedRuntime
from .scheduling import Scheduler, run_scheduler
from .storage import Store

if TYPE_CHECKING:
    import collections
    import pathlib

JOURNAL_FILE = "objects.sqlite3"


@attrs.frozen
class DevClusterConfig:
    state_dir: pathlib.Path
    """kubeconfig, pod work directories and container logs live here."""
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    namespace: str = "nexus"
    """Default namespace of the kubeconfig context."""
    kubelet: Literal["scripted", "local"] = "scripted"
    """`scripted` plays outcomes from pod annotations; `local` runs commands as processes."""
    default_exit_code: int = 0
    """Scripted kubelet: exit code when the pod has no exit-code annotation."""
    default_duration: float = 0.0
    """Scripted kubelet: seconds a pod stays Running when it has no duration annotation."""
    backoff_base: float = 10.0
    """Job controller: first retry delay in seconds (doubles per failure, like k8s's 10 s)."""
    termination_grace: float = 5.0
    """Local kubelet: cap on seconds between SIGTERM and SIGKILL when a pod is deleted."""
    history: int = 10_000
    """Watch history length (changes); older resourceVersions get 410 Expired."""
    node_groups: tuple[NodeGroup, ...] = DEFAULT_NODE_GROUPS
    """Simulated nodes (labels, taints, capacity); default one untainted `devcluster-node-0`."""
    job_sync_delay: float = 0.05
    """Job controller: seconds it batches a Job's pod changes before syncing (k8s: ~1 s)."""
    image_pull_backoff: float = 0.0
    """Kubelet: seconds between ErrImagePull and ImagePullBackOff."""
    restart_backoff_base: float = DEFAULT_BASE
    """Kubelet: CrashLoopBackOff delay in seconds before the second restart of an exited
    container (the first is immediate), doubling per restart (k8s: 10 s; `restarts.py`)."""
    restart_backoff_cap: float = DEFAULT_CAP
    """Kubelet: longest CrashLoopBackOff delay in seconds (k8s: 300 s); a container that ran
    for twice this long before exiting restarts at once again."""
    persist: bool = False
    """Keep every object in `state_dir/objects.sqlite3`, so that a cluster started again on the
    same `state_dir` (after a crash, too) goes on where the last one stopped: its Jobs keep
    running and the pods its kubelet lost are replaced (`kubelet.py`). Durable against a crash
    of the process, not of the machine (`persistence.py`). Off: the cluster is memory only."""
    faults: FaultPlan = attrs.field(factory=FaultPlan)
    """API server fault injection at start (429s, 5xx, latency, cut watches); change it at
    run time with `DevCluster.faults.set(...)` or `PUT /devcluster/v1/faults`."""


@attrs.define
class DevCluster:
    """The handle `run_dev_cluster` hands to its caller."""

    url: str
    kubeconfig_path: pathlib.Path
    namespace: str
    config: DevClusterConfig
    ops: Operations
    kubelet: Kubelet
    scheduler: Scheduler
    server: ApiServer

    @property
    def faults(self) -> Faults:
        """The API server's live fault plan: `.set(FaultPlan(...))`, `.set(x=...)`, `.clear()`."""
        return self.server.faults

    @property
    def request_counts(self) -> collections.Counter[tuple[str, str, int]]:
        """HTTP requests answered, by (verb, resource[/subresource], status code)."""
        return self.server.request_counts

    def statistics(self) -> dict[tuple[str, str, int], int]:
        return dict(self.server.request_counts)

    def writes(self) -> int:
        """HTTP create/update/patch/delete requests answered so far."""
        verbs = {"create", "update", "patch", "delete", "deletecollection"}
        return sum(n for (verb, _, _), n in self.server.request_counts.items() if verb in verbs)


def _runtime(config: DevClusterConfig) -> Runtime:
    if config.kubelet == "local":
        return LocalProcessRuntime(config.state_dir, config.termination_grace)
    return ScriptedRuntime(config.default_exit_code, config.default_duration)


async def run_dev_cluster(
    *, config: DevClusterConfig, task_status: trio.TaskStatus[DevCluster] = trio.TASK_STATUS_IGNORED
) -> NoReturn:
    journal = None
    if config.persist:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        journal = SqliteJournal(config.state_dir / JOURNAL_FILE)
    try:
        await _run(config, Store(history=config.history, journal=journal), task_status)
    finally:
        if journal is not None:
            journal.close()


async def _run(
    config: DevClusterConfig, store: Store, task_status: trio.TaskStatus[DevCluster]
) -> NoReturn:
    ops = Operations(store=store, registry=Registry())
    runtime = _runtime(config)
    server = ApiServer(ops, log_path=runtime.log_path, faults=config.faults)
    hconfig = HypercornConfig()
    hconfig.bind = [f"{config.host}:{config.port}"]
    hconfig.accesslog = None
    hconfig.errorlog = None
    hconfig.keep_alive_timeout = 75
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(run_garbage_collector, ops=ops))
        register_nodes(ops, config.node_groups)
        await nursery.start(
            functools.partial(
                run_job_controller,
                ops=ops,
                backoff_base=config.backoff_base,
                sync_delay=config.job_sync_delay,
            )
        )
        await nursery.start(functools.partial(run_replicaset_controller, ops=ops))
        await nursery.start(functools.partial(run_deployment_controller, ops=ops))
        scheduler = await nursery.start(
            functools.partial(run_scheduler, ops=ops, groups=config.node_groups)
        )
        kubelet = await nursery.start(
            functools.partial(
                run_kubelet,
                ops=ops,
                runtime=runtime,
                pull_backoff=config.image_pull_backoff,
                restart_base=config.restart_backoff_base,
                restart_cap=config.restart_backoff_cap,
            )
        )
        app: Any = server  # hypercorn's ASGI typing is stricter than a plain dict-based app
        binds = await nursery.start(functools.partial(serve, app, hconfig))
        url = binds[0]
        server.server_address = url.split("://", 1)[1]
        path = write_kubeconfig(
            config.state_dir / "kubeconfig", server=url, namespace=config.namespace
        )
        task_status.started(
            DevCluster(
                url=url,
                kubeconfig_path=path,
                namespace=config.namespace,
                config=config,
                ops=ops,
                kubelet=kubelet,
                scheduler=scheduler,
                server=server,
            )
        )
        await trio.sleep_forever()
    raise AssertionError("unreachable")
