"""An embedded cluster with nexusd's CRDs installed: the Kubernetes side of process tests."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from nexusd.devcluster import DevCluster, DevClusterConfig, run_dev_cluster
from nexusd.kube.applying import apply, parse_documents
from nexusd.kube.client import KubeClient
from nexusd.kube.credentials import load_credentials
from nexusd.modes.dev import crd_directory

if TYPE_CHECKING:
    from pathlib import Path

    import trio

#: The workgroup the test templates use (tests.conftest.template), on shard "dev".
WORKGROUP: dict[str, Any] = {
    "apiVersion": "science.sneaksanddata.com/v1",
    "kind": "NexusAlgorithmWorkgroup",
    "metadata": {"name": "default"},
    "spec": {"description": "embedded cluster", "cluster": "dev"},
}


def crd_documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(crd_directory().glob("*.yaml"))
        for document in parse_documents(path.read_text(), source=str(path))
    ]


async def install(kube: KubeClient, *documents: dict[str, Any]) -> None:
    """Apply nexusd's CRDs, then `documents`, in namespace nexus."""
    for document in [*crd_documents(), *documents]:
        await apply(kube, document, namespace="nexus")


async def start_cluster(
    nursery: trio.Nursery, state_dir: Path, *documents: dict[str, Any], **config: Any
) -> tuple[DevCluster, KubeClient]:
    """An embedded cluster with the CRDs and `documents` installed, and a client for it (the
    caller closes the client)."""
    cluster: DevCluster = await nursery.start(
        functools.partial(run_dev_cluster, config=DevClusterConfig(state_dir=state_dir, **config))
    )
    kube = KubeClient(credentials=load_credentials(cluster.kubeconfig_path))
    await install(kube, *documents)
    return cluster, kube
