"""Real clients against the embedded cluster through the kubeconfig it writes: the official
`kubernetes` Python client (sync, in a worker thread) and, when installed, kubectl."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import TYPE_CHECKING

import kubernetes
import pytest
import trio

from .conftest import JOBS, job_manifest, wait_job_condition

if TYPE_CHECKING:
    import httpx

    from nexusd.devcluster import DevCluster


async def test_kubeconfig_with_kubernetes_client(
    http: httpx.AsyncClient, cluster: DevCluster
) -> None:
    await http.post(JOBS, json=job_manifest("via-client"))
    await wait_job_condition(http, "via-client", "Complete")

    def use_client() -> tuple[list[str], list[str]]:
        api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
        try:
            jobs = kubernetes.client.BatchV1Api(api).list_namespaced_job(cluster.namespace)
            pods = kubernetes.client.CoreV1Api(api).list_namespaced_pod(
                cluster.namespace, label_selector="job-name=via-client"
            )
            return (
                [j.status.conditions[-1].type for j in jobs.items],
                [p.status.phase for p in pods.items],
            )
        finally:
            api.close()

    conditions, phases = await trio.to_thread.run_sync(use_client)
    assert conditions == ["Complete"]
    assert phases == ["Succeeded"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
async def test_kubectl_get(http: httpx.AsyncClient, cluster: DevCluster) -> None:
    await http.post(JOBS, json=job_manifest("via-kubectl"))
    await wait_job_condition(http, "via-kubectl", "Complete")
    argv = [
        "kubectl",
        "--kubeconfig",
        str(cluster.kubeconfig_path),
        "get",
        "jobs,pods",
        "-o",
        "json",
    ]
    result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    kinds = sorted(i["kind"] for i in json.loads(result.stdout)["items"])
    assert kinds == ["Job", "Pod"]
    table = await trio.run_process(
        ["kubectl", "--kubeconfig", str(cluster.kubeconfig_path), "get", "jobs"],
        capture_stdout=True,
        stderr=subprocess.STDOUT,
    )
    assert b"via-kubectl" in table.stdout
