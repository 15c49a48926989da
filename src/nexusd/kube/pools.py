"""A warm template's pool of workers: one `apps/v1` Deployment per template (issue 13, §5).

The workers' pod is the pod the template's Jobs get (`nexusd.kube.manifests.pod_spec`): same
image, resources, env, env sources, volumes, service account, affinity and tolerations, so an
algorithm behaves alike in a Job and in a pool. What differs:

- the container runs `nexusd worker`, which leases runs from the scheduler: `nexusd worker --
  <template command>` starts the template's command once per run with the template's args
  (their `%s` are filled per run by the worker, as a Job's are by the scheduler), and
  `nexusd worker --handler module:function` calls the template's handler in-process;
- nothing of one run is in the pod (payload URL, request id, result upload URL, receiver
  token): each lease carries them;
- `restartPolicy: Always`: a worker that exits (recycled after `runsPerWorker` runs) is
  restarted in place;
- the `NEXUS__WORKER__*` variables say where the scheduler is and which pool this is.

The Deployment carries a hash of its pod template (`POD_TEMPLATE_HASH`), so the scaler
(`nexusd.pipeline.scaling`) sees a changed template by comparing one annotation, and replaces
the Deployment (which rolls its pods). The scheduler's version is a label of the Deployment
but not of its pods: schedulers of two versions during an upgrade must not roll the pools
back and forth.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Final

from nexusd.kube.client import Resource
from nexusd.kube.manifests import (
    LABEL_NEXUS_COMPONENT,
    LABEL_NEXUS_VERSION,
    LABEL_TEMPLATE_NAME,
    job_env,
    pod_spec,
)
from nexusd.kube.overrides import validate_template_spec
from nexusd.kube.warmpool import WarmPool, warm_pool_problems

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "COMPONENT_WARM_WORKER",
    "DEPLOYMENTS",
    "POD_TEMPLATE_HASH",
    "POOL_SELECTOR",
    "WarmPool",
    "build_pool_deployment",
    "deployment_name",
    "pod_template_hash",
    "warm_pool_problems",
]

DEPLOYMENTS: Final = Resource("apps", "v1", "deployments", "Deployment")
COMPONENT_WARM_WORKER: Final = "warm-worker"
#: Every pool Deployment (and pool pod) of nexusd, in a label selector.
POOL_SELECTOR: Final = f"{LABEL_NEXUS_COMPONENT}={COMPONENT_WARM_WORKER}"
#: Annotation of a pool Deployment: the hash of its pod template.
POD_TEMPLATE_HASH: Final = "science.sneaksanddata.com/pod-template-hash"
#: The worker's container (a pod has one; a Job's is named after its run).
WORKER_CONTAINER: Final = "worker"
#: The command of every worker (the template's image must provide it).
WORKER_COMMAND: Final = ("nexusd", "worker")

ENV_WORKER_SCHEDULER: Final = "NEXUS__WORKER__SCHEDULER"
ENV_WORKER_ALGORITHM: Final = "NEXUS__WORKER__ALGORITHM"
ENV_WORKER_TOKEN: Final = "NEXUS__WORKER__TOKEN"
ENV_WORKER_NAME: Final = "NEXUS__WORKER__NAME"
ENV_WORKER_CONCURRENCY: Final = "NEXUS__WORKER__CONCURRENCY"
ENV_WORKER_RUNS: Final = "NEXUS__WORKER__RUNS"


def deployment_name(algorithm: str) -> str:
    """`nexusd-pool-<algorithm>` (template names are DNS subdomains, as Deployment names)."""
    return f"nexusd-pool-{algorithm}"


def build_pool_deployment(
    *,
    algorithm: str,
    spec: Mapping[str, Any],
    workgroup: Mapping[str, Any],
    namespace: str,
    scheduler_url: str,
    pool_token: str,
    nexus_version: str,
) -> dict[str, Any]:
    """The Deployment of a warm template's workers, at `minWorkers` replicas (the scaler sets
    the replicas it wants before writing it).

    Raises ValueError when `spec` cannot make a pod or has no valid warm pool.
    """
    problems = validate_template_spec(spec)
    if problems:
        raise ValueError("; ".join(problems))
    pool = WarmPool.from_spec(spec)
    if pool is None:
        raise ValueError(f"the template of {algorithm} has no spec.warmPool")
    runtime = spec.get("runtimeEnvironment") or {}
    selector = {LABEL_TEMPLATE_NAME: algorithm, LABEL_NEXUS_COMPONENT: COMPONENT_WARM_WORKER}
    template_metadata: dict[str, Any] = {"labels": dict(selector)}
    if runtime.get("annotations"):
        template_metadata["annotations"] = dict(runtime["annotations"])
    if pool.handler:  # the args are the command's: the handler gets its run's as a WarmRun
        command, args = [*WORKER_COMMAND, "--handler", pool.handler], []
    else:
        command = [*WORKER_COMMAND, "--", *spec["command"].split(" ")]
        args = list(spec.get("args") or [])
    env = job_env(
        runtime.get("environmentVariables") or [],
        algorithm=algorithm,
        shard=str(workgroup.get("cluster", "")),
        parent=None,
        result_upload_url=None,
    )
    env.extend(_worker_env(algorithm, pool, scheduler_url=scheduler_url, token=pool_token))
    template = {
        "metadata": template_metadata,
        "spec": pod_spec(
            spec=spec,
            workgroup=workgroup,
            container_name=WORKER_CONTAINER,
            command=command,
            args=args,
            env=env,
            restart_policy="Always",
        ),
    }
    metadata = {
        "name": deployment_name(algorithm),
        "namespace": namespace,
        "labels": {**selector, LABEL_NEXUS_VERSION: nexus_version},
        "annotations": {POD_TEMPLATE_HASH: pod_template_hash(template)},
    }
    return {
        "apiVersion": DEPLOYMENTS.api_version,
        "kind": DEPLOYMENTS.kind,
        "metadata": metadata,
        "spec": {
            "replicas": pool.min_workers,
            "selector": {"matchLabels": selector},
            "template": template,
        },
    }


def _worker_env(
    algorithm: str, pool: WarmPool, *, scheduler_url: str, token: str
) -> list[dict[str, Any]]:
    """The `nexusd worker` settings (its `worker` section) the pod is started with."""
    return [
        {"name": ENV_WORKER_SCHEDULER, "value": scheduler_url},
        {"name": ENV_WORKER_ALGORITHM, "value": algorithm},
        {"name": ENV_WORKER_TOKEN, "value": token},
        {"name": ENV_WORKER_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": ENV_WORKER_CONCURRENCY, "value": str(pool.concurrency)},
        {"name": ENV_WORKER_RUNS, "value": str(pool.runs_per_worker)},
    ]


def pod_template_hash(template: Mapping[str, Any]) -> str:
    """A short, stable digest of a pod template (keys sorted: dict order is no change)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
