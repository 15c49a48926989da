"""The embedded Kubernetes cluster (`nexusd.devcluster`): API server, controllers, kubelet.

nexusd, kubectl and the tests reach it only over HTTP through the kubeconfig it writes, exactly
as they would reach a real cluster. Start it with `run_dev_cluster` inside a nursery.
"""

from .cluster import DevCluster, DevClusterConfig, run_dev_cluster
from .nodes import NodeGroup
from .runtimes import ANNOTATION_DURATION, ANNOTATION_EXIT_CODE, ANNOTATION_OOM, NODE_NAME

__all__ = [
    "ANNOTATION_DURATION",
    "ANNOTATION_EXIT_CODE",
    "ANNOTATION_OOM",
    "NODE_NAME",
    "DevCluster",
    "DevClusterConfig",
    "NodeGroup",
    "run_dev_cluster",
]
