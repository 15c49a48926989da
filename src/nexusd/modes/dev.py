"""`nexusd dev`: scheduler + receiver + maintainer + the embedded Kubernetes cluster in one process.

No cluster, database or object store needed: SQLite and payload files live in the data
directory, the embedded cluster runs each pod's command as a local process, and nexusd reaches
that cluster only through the kubeconfig it writes, exactly as it reaches a real one. At start it
installs the CRDs, the bundled `hello` algorithm and any `--manifests` files.
"""

from __future__ import annotations

import importlib.resources
import logging
import string
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from nexusd.devcluster import DevClusterConfig, NodeGroup, run_dev_cluster
from nexusd.devcluster.nodes import DEFAULT_NODE_GROUPS
from nexusd.kube.applying import apply, parse_documents, read_directory
from nexusd.modes.building import (
    external_url,
    hold_identity,
    open_foundation,
    open_shards,
    own_directory,
)
from nexusd.modes.maintainer import start_maintenance
from nexusd.modes.services import Running, start_services

if TYPE_CHECKING:
    from nexusd.settings import Settings

logger = logging.getLogger(__name__)

DEV_SHARD = "dev"


def crd_directory() -> Path:
    """The CRDs shipped in the wheel, or the repository's `crds/` in a source checkout."""
    packaged = Path(str(importlib.resources.files("nexusd"))) / "crds"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "crds"


def bundled_documents(*, namespace: str, receiver_url: str) -> list[dict[str, Any]]:
    crds = [
        document
        for path in sorted(crd_directory().glob("*.yaml"))
        for document in parse_documents(path.read_text(), source=str(path))
    ]
    hello = string.Template(
        (importlib.resources.files("nexusd.algorithms") / "hello.yaml").read_text()
    ).substitute(NAMESPACE=namespace, RECEIVER_URL=receiver_url, SHARD=DEV_SHARD)
    return crds + parse_documents(hello, source="nexusd/algorithms/hello.yaml")


def banner(url: str, kubeconfig: Path) -> str:
    return f"""
nexusd dev is ready on {url}

  Launch a run of the bundled `hello` algorithm:
    curl -s -X POST {url}/algorithm/v1/run/hello -H 'Content-Type: application/json' \\
      -d '{{"algorithmParameters": {{"name": "nexus"}}}}'
  Then read its result (use the requestId from the answer):
    curl -s {url}/algorithm/v1/results/hello/requests/<requestId>

  Look at the embedded cluster: kubectl --kubeconfig {kubeconfig} get jobs,pods -A
"""


async def run(
    settings: Settings, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
) -> None:
    extra = read_directory(settings.dev.manifests) if settings.dev.manifests else []
    data_dir = settings.data.dir
    namespace = settings.kube.runtime_namespace
    await trio.to_thread.run_sync(lambda: data_dir.mkdir(parents=True, exist_ok=True))
    local = settings.dev.kubelet == "local"
    cluster_config = DevClusterConfig(
        state_dir=data_dir / "cluster",
        namespace=namespace,
        kubelet="local" if local else "scripted",
        # The cluster's objects outlive a crash of this process, so its runs' Jobs do.
        persist=True,
        # Pods are processes on this machine: as many at once as it can run.
        node_groups=(NodeGroup.for_host(),) if local else DEFAULT_NODE_GROUPS,
    )
    async with (
        own_directory(data_dir, "dev"),
        open_foundation(settings) as foundation,
        trio.open_nursery() as outer,
    ):
        await hold_identity(foundation.store, settings, "dev")
        cluster = await outer.start(
            lambda task_status: run_dev_cluster(config=cluster_config, task_status=task_status)
        )
        url = external_url(settings, foundation.sock)
        async with (
            open_shards(settings, kubeconfig=cluster.kubeconfig_path, name=DEV_SHARD) as shards,
            trio.open_nursery() as nursery,
        ):
            shard = shards[DEV_SHARD]
            for document in bundled_documents(namespace=namespace, receiver_url=url) + extra:
                await apply(shard.client, document, namespace=namespace)
            running = await start_services(
                nursery, foundation, shards=shards, scheduler=True, receiver=True
            )
            maintainer = await start_maintenance(
                nursery,
                settings=settings,
                clock=foundation.clock,
                store=foundation.store,
                payloads=foundation.payloads,
                shards=shards,
            )
            running.context.statistics["reconciler"] = maintainer.reconciler.statistics
            running.cluster = cluster
            print(banner(url, cluster.kubeconfig_path), file=sys.stderr, flush=True)
            task_status.started(running)
        outer.cancel_scope.cancel()
