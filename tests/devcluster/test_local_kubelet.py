"""The local-process kubelet: a Job's container runs as a real `python -c` subprocess, its
output is served by the pods/log endpoint, and deleting the pod kills it. Real processes and
real time; each program is tiny."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from .conftest import JOBS, PODS, start_cluster, wait_for, wait_job_condition

if TYPE_CHECKING:
    import pathlib

    import trio

    from nexusd.devcluster import DevCluster


def python_job(name: str, code: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": "ignored:1",
        "command": ["python"],
        "args": ["-c", code],
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


async def test_local_process_lifecycle(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    cluster: DevCluster = await start_cluster(
        nursery, tmp_path, kubelet="local", termination_grace=0.5
    )
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        code = "import os, sys; print('hello', os.environ['GREETING']); sys.exit(0)"
        await http.post(JOBS, json=python_job("hello", code, {"GREETING": "world"}))
        await http.post(JOBS, json=python_job("exit5", "import sys; sys.exit(5)"))
        await http.post(JOBS, json=python_job("sleepy", "import time; time.sleep(60)"))
        await wait_job_condition(http, "hello", "Complete", within=20)
        failed = await wait_job_condition(http, "exit5", "Failed", within=20)
        assert failed["status"]["failed"] == 1

        pods = (await http.get(PODS, params={"labelSelector": "job-name=hello"})).json()["items"]
        log = await http.get(f"{PODS}/{pods[0]['metadata']['name']}/log")
        assert log.status_code == 200
        assert log.text == "hello world\n"
        pods = (await http.get(PODS, params={"labelSelector": "job-name=exit5"})).json()["items"]
        terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (5, "Error")

        async def running_pod() -> str | None:
            items = (await http.get(PODS, params={"labelSelector": "job-name=sleepy"})).json()[
                "items"
            ]
            if items and items[0]["status"].get("phase") == "Running":
                return str(items[0]["metadata"]["name"])
            return None

        name = await wait_for(running_pod, within=20)
        await http.delete(f"{PODS}/{name}")

        async def pod_gone() -> bool:
            return (await http.get(f"{PODS}/{name}")).status_code == 404

        await wait_for(pod_gone, within=10)
        await http.request("DELETE", f"{JOBS}/sleepy", json={"propagationPolicy": "Background"})


async def test_the_downward_api_gives_a_container_its_pod_fields(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    cluster: DevCluster = await start_cluster(nursery, tmp_path, kubelet="local")
    job = python_job("downward", "import os; print(os.environ['POD'], os.environ['JOB'])")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": "JOB",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['job-name']"}},
        },
    ]
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        await http.post(JOBS, json=job)
        await wait_job_condition(http, "downward", "Complete", within=20)
        pods = (await http.get(PODS, params={"labelSelector": "job-name=downward"})).json()
        name = pods["items"][0]["metadata"]["name"]
        log = await http.get(f"{PODS}/{name}/log")
        assert log.text == f"{name} downward\n"
