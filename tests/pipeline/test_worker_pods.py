"""The maintainer's worker-pod rules (pipeline/worker_pods.py) on the real path.

Real: the embedded cluster over HTTP (scripted kubelet: OOMKilled, exit codes, durations, image
pull errors, unschedulable pods; `restartPolicy: Always` restarts in place), the maintainer's
informers into a `WorkerPodView` and its reacting loop, and a real SQLite store holding warm
runs leased with `store.lease`. The pool pods are bare Pods carrying the pool labels (what the
pool Deployment's pods carry; the Deployment controller is not needed for these rules). The
only thing not real is time past a grace: the maintainer's clock is the wall clock shifted
forward by the test, as a maintainer looking 121 s later would see the same pods. The last
tests are unit tests of the memory store with hand-built pod objects, said where they are.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from nexusd.core.clock import SystemClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, SubmissionEntry
from nexusd.devcluster import DevClusterConfig, run_dev_cluster
from nexusd.devcluster.runtimes import (
    ANNOTATION_DURATION,
    ANNOTATION_EVICT,
    ANNOTATION_EXIT_CODE,
    ANNOTATION_OOM,
    ANNOTATION_PULL_ERROR,
)
from nexusd.kube.client import EVENTS, PODS, KubeClient, WatchEvent
from nexusd.kube.credentials import load_credentials
from nexusd.kube.manifests import LABEL_NEXUS_COMPONENT, LABEL_TEMPLATE_NAME
from nexusd.kube.pools import COMPONENT_WARM_WORKER, POOL_SELECTOR
from nexusd.kube.watching import run_informer
from nexusd.modes import maintainer
from nexusd.pipeline.reaping import LOST_CAUSE
from nexusd.pipeline.rules import default_rules
from nexusd.pipeline.worker_pod_view import WorkerPodView
from nexusd.pipeline.worker_pods import WorkerPods
from nexusd.settings import load_settings
from nexusd.stores.memory import MemoryCheckpointStore
from nexusd.stores.sqlite import open_sqlite_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from nexusd.stores.checkpoints import CheckpointStore

pytestmark = pytest.mark.timeout(30)

NS = "nexus"
ALGORITHM = "algo"
RULES = {rule.name: rule for rule in default_rules().rules}
Obj = dict[str, Any]


@attrs.define
class ShiftedClock:
    """The wall clock, `offset` seconds ahead (a maintainer looking later)."""

    offset: float = 0.0

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.offset)


@attrs.define
class Harness:
    kube: KubeClient
    store: CheckpointStore
    view: WorkerPodView
    pods: WorkerPods
    clock: ShiftedClock

    async def pod(self, name: str, *, algorithm: str = ALGORITHM, **options: Any) -> None:
        body = worker_pod(name, algorithm=algorithm, **options)
        await self.kube.create(PODS, namespace=NS, body=body)

    async def run(self, request_id: str, *, algorithm: str = ALGORITHM) -> Checkpoint:
        found = await self.store.get(algorithm=algorithm, request_id=request_id)
        assert found is not None
        return found

    async def until(self, request_id: str, stage: Stage, *, within: float = 10.0) -> Checkpoint:
        async def probe() -> Checkpoint | None:
            run = await self.run(request_id)
            return run if run.lifecycle_stage is stage else None

        found: Checkpoint = await poll(probe, within=within)
        return found


def worker_pod(
    name: str,
    *,
    algorithm: str = ALGORITHM,
    annotations: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
) -> Obj:
    spec: Obj = {
        "restartPolicy": "Always",
        "containers": [
            {
                "name": "worker",
                "image": "registry.example/algo:1.0",
                "command": ["nexusd", "worker", "--", "python", "main.py"],
                "resources": {"limits": {"memory": "1Gi"}},
            }
        ],
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    labels = {LABEL_TEMPLATE_NAME: algorithm, LABEL_NEXUS_COMPONENT: COMPONENT_WARM_WORKER}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
        "spec": spec,
    }


async def poll(probe: Callable[[], Awaitable[Any]], *, within: float = 10.0) -> Any:
    """Poll `probe` until it returns something truthy, within a hard deadline."""
    with trio.fail_after(within):
        while True:
            value = await probe()
            if value:
                return value
            await trio.sleep(0.02)


async def warm_run(
    store: CheckpointStore, request_id: str, *, algorithm: str = ALGORITHM, holder: str = ""
) -> None:
    """A BUFFERED warm run, leased to `holder` when given (RUNNING, attempt 1)."""
    now = dt.datetime.now(dt.UTC)
    await store.create(
        checkpoint=Checkpoint(
            algorithm=algorithm,
            id=request_id,
            lifecycle_stage=Stage.BUFFERED,
            received_at=now,
            last_modified=now,
            cluster="dev",
            warm=True,
            applied_configuration={"workgroupRef": {"name": "wg-pool"}},
        ),
        submission=SubmissionEntry(algorithm=algorithm, id=request_id, cluster="dev", template={}),
    )
    if holder:
        expires = now + dt.timedelta(hours=1)
        leased = await store.lease(runs=[(algorithm, request_id)], holder=holder, expires=expires)
        assert [lease.request_id for lease in leased] == [request_id]


def waiting_reason(pod: Obj | None) -> str:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or [{}]
    return str(((statuses[0].get("state") or {}).get("waiting") or {}).get("reason") or "")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    config = DevClusterConfig(state_dir=tmp_path / "cluster", namespace=NS, job_sync_delay=0.0)
    clock = ShiftedClock()
    async with (
        open_sqlite_store(path=tmp_path / "checkpoints.sqlite3", clock=SystemClock()) as store,
        trio.open_nursery() as nursery,
    ):
        cluster = await nursery.start(functools.partial(run_dev_cluster, config=config))
        kube = KubeClient(credentials=load_credentials(cluster.kubeconfig_path))
        view = WorkerPodView(shard="dev")
        for resources, selector in (([PODS], POOL_SELECTOR), ([EVENTS], None)):
            await nursery.start(
                functools.partial(
                    run_informer,
                    client=kube,
                    resources=resources,
                    namespace=NS,
                    sink=view,
                    label_selector=selector,
                    resync_seconds=60,
                )
            )
        pods = WorkerPods(
            store=store, view=view, rules=default_rules(), clock=clock, max_attempts=3, delay=0.0
        )
        await nursery.start(pods.run)
        yield Harness(kube=kube, store=store, view=view, pods=pods, clock=clock)
        nursery.cancel_scope.cancel()
        await kube.aclose()


async def test_an_oom_killed_worker_fails_the_runs_it_held_not_those_of_its_restart(
    harness: Harness,
) -> None:
    name = "nexusd-pool-algo-5d8f-oom01"
    await warm_run(harness.store, "held", holder=name)
    await warm_run(harness.store, "elsewhere", holder="nexusd-pool-algo-5d8f-other")
    # each instance runs 3 s: the test leases a run to the second within its first 2 s
    await harness.pod(name, annotations={ANNOTATION_OOM: "true", ANNOTATION_DURATION: "3"})

    failed = await harness.until("held", Stage.FAILED)
    rule = RULES["oom-killed"]
    assert failed.algorithm_failure_cause == rule.cause
    assert failed.algorithm_failure_details == (
        "Algorithm was killed for using more than its memory limit of 1Gi; resubmit it with "
        "more memory (customConfiguration.computeResources). Container worker of pod "
        f"{name}: OOMKilled, exit code 137."
    )
    assert (await harness.run("elsewhere")).lifecycle_stage is Stage.RUNNING

    # the kubelet restarted the container (the OOMKill is now its lastState): a run the new
    # instance leases is its own, and the old termination must not fail it
    async def restarted() -> dt.datetime | None:
        pod = harness.view.pods.get(name) or {}
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("restartCount") and "running" in (status.get("state") or {}):
                finished = status["lastState"]["terminated"]["finishedAt"]
                return dt.datetime.fromisoformat(finished)
        return None

    finished: dt.datetime = await poll(restarted)
    await poll(lambda: _after(finished + dt.timedelta(seconds=1)))  # past that whole second
    await warm_run(harness.store, "next", holder=name)
    assert await harness.pods.once() == 0
    assert (await harness.run("next")).lifecycle_stage is Stage.RUNNING
    # ... until that instance is OOMKilled too
    assert (await harness.until("next", Stage.FAILED)).algorithm_failure_cause == rule.cause


async def _after(when: dt.datetime) -> bool:
    await trio.lowlevel.checkpoint()
    return dt.datetime.now(dt.UTC) >= when


async def test_a_worker_that_exits_otherwise_gives_its_runs_back_at_once(
    harness: Harness,
) -> None:
    name = "nexusd-pool-algo-5d8f-exit3"
    await warm_run(harness.store, "crashed", holder=name)
    await harness.pod(name, annotations={ANNOTATION_EXIT_CODE: "3", ANNOTATION_DURATION: "0.3"})

    requeued = await harness.until("crashed", Stage.BUFFERED)
    assert (requeued.attempt, requeued.lease_holder, requeued.lease_expires) == (2, "", None)
    assert requeued.algorithm_failure_cause == ""
    assert harness.pods.statistics().requeued == 1
    # the orphan scan of the schedulers finds it
    waiting = await harness.store.waiting(
        algorithm=ALGORITHM, modified_before=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    )
    assert [run.id for run in waiting] == ["crashed"]


async def test_a_deleted_worker_pod_gives_its_runs_back(harness: Harness) -> None:
    name = "nexusd-pool-algo-5d8f-gone1"
    await harness.pod(name, annotations={ANNOTATION_DURATION: "3600"})
    await poll(lambda: _ready(harness, name))
    await warm_run(harness.store, "a", holder=name)
    await warm_run(harness.store, "b", holder=name)
    assert await harness.pods.once() == 0  # a healthy worker: nothing changes
    assert {(await harness.run(r)).lifecycle_stage for r in ("a", "b")} == {Stage.RUNNING}

    await harness.kube.delete(PODS, namespace=NS, name=name, grace_period_seconds=0)
    for request_id in ("a", "b"):
        run = await harness.until(request_id, Stage.BUFFERED)
        assert (run.attempt, run.lease_holder) == (2, "")


async def test_an_evicted_worker_pod_gives_its_runs_back(harness: Harness) -> None:
    name = "nexusd-pool-algo-5d8f-evict"
    await warm_run(harness.store, "evicted", holder=name)
    eviction = {ANNOTATION_EVICT: "TerminationByKubelet", ANNOTATION_DURATION: "0.2"}
    await harness.pod(name, annotations=eviction)
    run = await harness.until("evicted", Stage.BUFFERED)
    assert (run.attempt, run.lease_holder) == (2, "")
    assert (harness.view.pods[name]["status"] or {}).get("reason") == "Evicted"


async def _ready(harness: Harness, name: str) -> bool:
    await trio.lowlevel.checkpoint()
    conditions = ((harness.view.pods.get(name) or {}).get("status") or {}).get("conditions")
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions or [])


async def test_a_pool_whose_images_cannot_be_pulled_fails_its_waiting_runs_after_the_grace(
    harness: Harness,
) -> None:
    pulls = {ANNOTATION_PULL_ERROR: "manifest unknown"}
    names = ["nexusd-pool-algo-5d8f-pull1", "nexusd-pool-algo-5d8f-pull2"]
    for name in names:
        await harness.pod(name, annotations=pulls)
    for request_id in ("w1", "w2", "w3"):
        await warm_run(harness.store, request_id)

    async def stuck() -> bool:
        await trio.lowlevel.checkpoint()
        return all(
            waiting_reason(harness.view.pods.get(name)) == "ImagePullBackOff"
            and harness.view.events(name)
            for name in names
        )

    await poll(stuck)
    assert await harness.pods.once() == 0  # still inside the grace: nothing changes
    assert {(await harness.run(r)).lifecycle_stage for r in ("w1", "w2", "w3")} == {Stage.BUFFERED}

    harness.clock.offset = RULES["image-pull-failed"].grace + 1
    assert await harness.pods.once() == 0
    rule = RULES["image-pull-failed"]
    for request_id in ("w1", "w2", "w3"):
        run = await harness.run(request_id)
        assert run.lifecycle_stage is Stage.SCHEDULING_FAILED
        assert run.algorithm_failure_cause == rule.cause
        details = run.algorithm_failure_details
        assert details.startswith(
            "Warm pool nexusd-pool-algo cannot start a worker (all 2 of its pods stuck); "
            f"pod {names[0]}: "
        )
        assert 'Failed to pull image "registry.example/algo:1.0": manifest unknown' in details


async def test_a_pool_with_a_ready_pod_is_not_stuck(harness: Harness) -> None:
    await harness.pod("nexusd-pool-algo-5d8f-pull1", annotations={ANNOTATION_PULL_ERROR: "x"})
    healthy = "nexusd-pool-algo-5d8f-fine1"
    await harness.pod(healthy, annotations={ANNOTATION_DURATION: "3600"})
    await warm_run(harness.store, "queued")
    await warm_run(harness.store, "working", holder=healthy)
    await poll(lambda: _ready(harness, healthy))
    harness.clock.offset = 10_000
    assert await harness.pods.once() == 0
    assert (await harness.run("queued")).lifecycle_stage is Stage.BUFFERED
    assert (await harness.run("working")).lifecycle_stage is Stage.RUNNING
    assert harness.pods.statistics().failed == 0


async def test_an_unschedulable_pool_fails_its_waiting_runs_after_the_grace(
    harness: Harness,
) -> None:
    name = "nexusd-pool-algo-5d8f-nonode"
    await harness.pod(name, node_selector={"example.test/no-such-label": "x"})
    await warm_run(harness.store, "stuck")
    await warm_run(harness.store, "other", algorithm="another-algo")  # not this pool's

    async def unschedulable() -> bool:
        await trio.lowlevel.checkpoint()
        conditions = ((harness.view.pods.get(name) or {}).get("status") or {}).get("conditions")
        return any(c.get("reason") == "Unschedulable" for c in conditions or [])

    await poll(unschedulable)
    harness.clock.offset = RULES["insufficient-resources"].grace + 1  # not this rule's
    await harness.pods.once()
    assert (await harness.run("stuck")).lifecycle_stage is Stage.BUFFERED

    harness.clock.offset = RULES["unschedulable"].grace + 1
    assert await harness.pods.once() == 0
    run = await harness.run("stuck")
    assert run.lifecycle_stage is Stage.SCHEDULING_FAILED
    assert run.algorithm_failure_cause == (
        "Algorithm submission was buffered, but failed to launch on the target cluster: no "
        "node of workgroup wg-pool can run it."
    )
    assert run.algorithm_failure_details.startswith(
        "Warm pool nexusd-pool-algo cannot start a worker (its only pod stuck); "
        f"Pod {name} could not be scheduled for "
    )
    other = await harness.store.get(algorithm="another-algo", request_id="other")
    assert other is not None
    assert other.lifecycle_stage is Stage.BUFFERED


# -- unit tests: the memory store, pod objects built by hand, no cluster ---------------------


def _pod(name: str, *statuses: Obj, phase: str = "Running") -> Obj:
    pod = worker_pod(name)
    pod["status"] = {"phase": phase, "containerStatuses": list(statuses)}
    return pod


def _stamp(when: dt.datetime) -> str:
    return when.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_an_old_termination_seen_at_start_spares_runs_leased_after_it() -> None:
    """A maintainer that starts after a worker was OOMKilled and restarted long ago."""
    clock = SystemClock()
    store = MemoryCheckpointStore(clock=clock)
    view = WorkerPodView(shard="dev")
    pods = WorkerPods(store=store, view=view, rules=default_rules(), clock=clock, max_attempts=3)
    name = "nexusd-pool-algo-5d8f-old01"
    await warm_run(store, "new", holder=name)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    status = {
        "name": "worker",
        "restartCount": 1,
        "state": {"running": {"startedAt": _stamp(long_ago)}},
        "lastState": {
            "terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": _stamp(long_ago)}
        },
    }
    view.replace_all(PODS, [_pod(name, status)])
    assert await pods.once() == 0
    run = await store.get(algorithm=ALGORITHM, request_id="new")
    assert run is not None
    assert run.lifecycle_stage is Stage.RUNNING


async def test_a_run_that_keeps_losing_its_worker_fails_at_max_attempts() -> None:
    clock = SystemClock()
    store = MemoryCheckpointStore(clock=clock)
    view = WorkerPodView(shard="dev")
    pods = WorkerPods(store=store, view=view, rules=default_rules(), clock=clock, max_attempts=2)
    await warm_run(store, "unlucky")
    for attempt, name in enumerate(("nexusd-pool-algo-5d8f-try01", "nexusd-pool-algo-5d8f-try02")):
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        await store.lease(runs=[(ALGORITHM, "unlucky")], holder=name, expires=expires)
        view.replace_all(PODS, [_pod(name)])
        view.apply(PODS, WatchEvent(type="DELETED", object=_pod(name)))
        assert await pods.once() == 0
        run = await store.get(algorithm=ALGORITHM, request_id="unlucky")
        assert run is not None
        assert run.attempt == attempt + 2
    run = await store.get(algorithm=ALGORITHM, request_id="unlucky")
    assert run is not None
    assert run.lifecycle_stage is Stage.FAILED
    assert run.algorithm_failure_cause == LOST_CAUSE
    assert "nexusd-pool-algo-5d8f-try02 was lost in attempt 2 (the pod was deleted)" in (
        run.algorithm_failure_details
    )


async def test_maintainer_once_gives_back_the_runs_of_a_crashed_worker(tmp_path: Path) -> None:
    """`nexusd maintainer --once` (modes/maintainer.run_once): its own informers, SQLite store
    and pass, against the embedded cluster."""
    config = DevClusterConfig(state_dir=tmp_path / "cluster", namespace=NS)
    name = "nexusd-pool-algo-5d8f-once1"
    async with trio.open_nursery() as nursery:
        cluster = await nursery.start(functools.partial(run_dev_cluster, config=config))
        settings = load_settings(
            environ={},
            overrides={
                "kube.kubeconfig": str(cluster.kubeconfig_path),
                "kube.shard_name": "dev",
                "kube.runtime_namespace": NS,
                "data.dir": str(tmp_path / "data"),
                "store.path": str(tmp_path / "checkpoints.sqlite3"),
                "node.host_name": "maintainer-once",
            },
        )
        store_path = tmp_path / "checkpoints.sqlite3"
        async with open_sqlite_store(path=store_path, clock=SystemClock()) as store:
            await warm_run(store, "crashed", holder=name)
            await warm_run(store, "healthy", holder="nexusd-pool-algo-5d8f-once2")
        kube = KubeClient(credentials=load_credentials(cluster.kubeconfig_path))
        await kube.create(
            PODS,
            namespace=NS,
            body=worker_pod(
                name, annotations={ANNOTATION_EXIT_CODE: "1", ANNOTATION_DURATION: "0"}
            ),
        )
        await kube.create(
            PODS,
            namespace=NS,
            body=worker_pod(
                "nexusd-pool-algo-5d8f-once2", annotations={ANNOTATION_DURATION: "3600"}
            ),
        )

        async def exited() -> bool:
            pod = await kube.get(PODS, namespace=NS, name=name)
            statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
            return any(
                "terminated" in (statuses[0].get(key) or {}) for key in ("state", "lastState")
            )

        await poll(exited)
        report = await maintainer.run_once(settings)
        assert report.errors == 0
        assert "worker pods" in report.cpu
        async with open_sqlite_store(path=store_path, clock=SystemClock()) as store:
            crashed = await store.get(algorithm=ALGORITHM, request_id="crashed")
            healthy = await store.get(algorithm=ALGORITHM, request_id="healthy")
        assert crashed is not None
        assert healthy is not None
        assert (crashed.lifecycle_stage, crashed.attempt) == (Stage.BUFFERED, 2)
        assert (healthy.lifecycle_stage, healthy.attempt) == (Stage.RUNNING, 1)
        await kube.aclose()
        nursery.cancel_scope.cancel()


async def test_a_pod_missing_from_a_relist_counts_as_gone() -> None:
    """A pod deleted while the watch was down is only missing from the next list."""
    clock = SystemClock()
    store = MemoryCheckpointStore(clock=clock)
    view = WorkerPodView(shard="dev")
    pods = WorkerPods(store=store, view=view, rules=default_rules(), clock=clock, max_attempts=3)
    name = "nexusd-pool-algo-5d8f-relist"
    await warm_run(store, "held", holder=name)
    view.replace_all(PODS, [_pod(name)])
    assert await pods.once() == 0
    view.replace_all(PODS, [])
    assert await pods.once() == 0
    run = await store.get(algorithm=ALGORITHM, request_id="held")
    assert run is not None
    assert (run.lifecycle_stage, run.attempt) == (Stage.BUFFERED, 2)
