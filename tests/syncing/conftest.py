"""The sync engine against real embedded clusters: one controller cluster and shard clusters,
each a `nexusd.devcluster` HTTP server reached through `KubeClient`, like real ones, with
nexusd's CRDs installed (their schema covers the status fields the engine writes: a field
missing there would be pruned, and every resync would rewrite it).

Nothing is faked. A cluster or a sync run is started in its own cancel scope, so a test can
stop it (a shard going down, the controller restarting) while the others go on.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from nexusd.core.errors import KubeConflict, KubeNotFound, KubeUnavailable
from nexusd.devcluster import DevCluster, DevClusterConfig, run_dev_cluster
from nexusd.kube.applying import apply
from nexusd.kube.client import (
    CONFIGMAPS,
    EVENTS,
    SECRETS,
    TEMPLATES,
    WORKGROUPS,
    KubeClient,
    Resource,
)
from nexusd.kube.credentials import load_credentials
from nexusd.syncing import SyncSettings, SyncStatus, run_configuration_sync
from tests.servers.clusters import crd_documents

if TYPE_CHECKING:
    from pathlib import Path

NAMESPACE = "nexus"
ALIAS = "test-controller"
#: Fast retries, re-lists and sweeps, so each test waits for seconds at most.
FAST = SyncSettings(
    alias=ALIAS,
    namespace=NAMESPACE,
    shards_rescan=0.1,
    backoff_base=0.01,
    backoff_max=0.3,
    resync=2.0,
    sweep_interval=1.0,
)
RESOURCES = {r.kind: r for r in (TEMPLATES, WORKGROUPS, SECRETS, CONFIGMAPS)}


@attrs.define
class Cluster:
    """A running embedded cluster, its client, and the scope that stops it."""

    dev: DevCluster
    kube: KubeClient
    """The test's own client."""
    sync_kube: KubeClient
    """The client the sync engine is given (a cluster being stopped must not close it)."""
    scope: trio.CancelScope

    def stop(self) -> None:
        self.scope.cancel()

    def status_writes(self, plural: str = "nexusalgorithmtemplates") -> int:
        return sum(
            n
            for (verb, resource, _), n in self.dev.request_counts.items()
            if verb == "update" and resource == f"{plural}/status"
        )

    def lists(self, plural: str) -> int:
        return sum(
            n
            for (verb, resource, _), n in self.dev.request_counts.items()
            if verb == "list" and resource == plural
        )

    async def get(self, resource: Resource, name: str) -> dict[str, Any] | None:
        try:
            return await self.kube.get(resource, namespace=NAMESPACE, name=name)
        except (KubeNotFound, KubeUnavailable):  # both mean "not there" to a test
            return None

    async def put(self, document: dict[str, Any]) -> dict[str, Any]:
        """Create `document`, or replace the object's spec/data, keeping its metadata."""
        resource = RESOURCES[document["kind"]]
        try:
            return await self.kube.create(resource, namespace=NAMESPACE, body=document)
        except KubeConflict:
            name = document["metadata"]["name"]
            current = await self.kube.get(resource, namespace=NAMESPACE, name=name)
            metadata = {**current["metadata"], **document["metadata"]}
            body = {**current, **document, "metadata": metadata}
            return await self.kube.replace(resource, namespace=NAMESPACE, name=name, body=body)

    async def events(self, reason: str) -> list[dict[str, Any]]:
        listed = await self.kube.list(EVENTS, namespace=NAMESPACE)
        return [e for e in listed["items"] if e.get("reason") == reason]


async def _run_cluster(
    state_dir: Path, port: int, *, task_status: trio.TaskStatus[Cluster]
) -> None:
    """Run a cluster until its scope is cancelled (the clients outlive it: see `start_cluster`)."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            config = DevClusterConfig(state_dir=state_dir, port=port)
            dev: DevCluster = await nursery.start(functools.partial(run_dev_cluster, config=config))
            credentials = load_credentials(dev.kubeconfig_path)
            kube = KubeClient(credentials=credentials, timeout=5.0)
            for document in crd_documents():
                await apply(kube, document, namespace=NAMESPACE)
            sync_kube = KubeClient(credentials=credentials, timeout=5.0)
            task_status.started(Cluster(dev=dev, kube=kube, sync_kube=sync_kube, scope=scope))


StartCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def start_cluster(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[StartCluster]:
    """Start an embedded cluster named `name` (optionally on a given port)."""
    started: list[Cluster] = []

    async def start(name: str, port: int = 0) -> Cluster:
        cluster: Cluster = await nursery.start(_run_cluster, tmp_path / name, port)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        await cluster.kube.aclose()
        await cluster.sync_kube.aclose()


@attrs.define
class Sync:
    status: SyncStatus
    scope: trio.CancelScope

    def stop(self) -> None:
        self.scope.cancel()


async def _run_sync(
    controller: KubeClient,
    settings: SyncSettings,
    shards: dict[str, KubeClient],
    *,
    task_status: trio.TaskStatus[Sync],
) -> None:
    status = SyncStatus()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    run_configuration_sync,
                    controller=controller,
                    settings=settings,
                    status=status,
                    extra_shards=shards,
                )
            )
            task_status.started(Sync(status=status, scope=scope))


StartSync = Callable[..., Awaitable[Sync]]


@pytest.fixture
def start_sync(nursery: trio.Nursery) -> StartSync:
    """Start `run_configuration_sync` against `controller` with the given shard clients."""

    async def start(
        controller: Cluster, shards: dict[str, KubeClient] | None = None, **settings: Any
    ) -> Sync:
        sync: Sync = await nursery.start(
            _run_sync, controller.sync_kube, attrs.evolve(FAST, **settings), shards or {}
        )
        return sync

    return start


async def eventually(check: Callable[[], Awaitable[Any]], *, within: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy (or raise TooSlowError)."""
    with trio.fail_after(within):
        while not (result := await check()):
            await trio.sleep(0.02)
        return result


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def secret(name: str, data: dict[str, str], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, **metadata},
        "type": "Opaque",
        "data": data,
    }


def configmap(name: str, data: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": data,
        **extra,
    }


def template(
    name: str,
    *,
    env_secrets: tuple[str, ...] = (),
    env_configmaps: tuple[str, ...] = (),
    key_secrets: tuple[str, ...] = (),
    mounted_secrets: tuple[str, ...] = (),
    mounted_configmaps: tuple[str, ...] = (),
    tag: str = "v1",
) -> dict[str, Any]:
    """A template referencing the given objects in each of the ways a spec can."""
    environment: dict[str, Any] = {
        "mappedEnvironmentVariables": [{"secretRef": {"name": n}} for n in env_secrets]
        + [{"configMapRef": {"name": n}} for n in env_configmaps],
        "environmentVariables": [
            {"name": f"KEY_{n}", "valueFrom": {"secretKeyRef": {"name": n, "key": "k"}}}
            for n in key_secrets
        ],
        "secretFileMounts": {n: {"mountPath": f"/secrets/{n}"} for n in mounted_secrets},
        "configurationFileMounts": {n: {"mountPath": f"/config/{n}"} for n in mounted_configmaps},
    }
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmTemplate",
        "metadata": {"name": name, "labels": {"team": "science"}},
        "spec": {
            "command": "python",
            "args": ["run.py"],
            "container": {"image": "algo", "registry": "example.io", "versionTag": tag},
            "computeResources": {"cpuLimit": "1", "memoryLimit": "1Gi"},
            "workgroupRef": {
                "name": "default",
                "group": "science.sneaksanddata.com",
                "kind": "NexusAlgorithmWorkgroup",
            },
            "runtimeEnvironment": environment,
        },
    }


def workgroup(name: str, description: str = "the default group") -> dict[str, Any]:
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmWorkgroup",
        "metadata": {"name": name},
        "spec": {"description": description, "cluster": "a"},
    }


def ready(obj: dict[str, Any] | None) -> bool | None:
    """The Ready condition's status as a bool (None: no condition yet)."""
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready":
            return bool(condition["status"] == "True")
    return None
