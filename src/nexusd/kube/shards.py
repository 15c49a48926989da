"""Shards: the clusters runs are submitted to, by the name workgroups use (`spec.cluster`).

Upstream names a shard after its kubeconfig file (the part before the first dot) and calls the
in-cluster one `standalone`; nexusd keeps that convention.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from pathlib import Path

    from nexusd.kube.client import KubeClient

IN_CLUSTER_SHARD = "standalone"


@attrs.frozen
class Shard:
    name: str
    client: KubeClient
    namespace: str


def shard_name_for(kubeconfig: Path | None) -> str:
    """Upstream's rule: `shard-0.kubeconfig` -> `shard-0`; in-cluster -> `standalone`."""
    if kubeconfig is None:
        return IN_CLUSTER_SHARD
    return kubeconfig.name.split(".", 1)[0]
