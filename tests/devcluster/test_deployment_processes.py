"""Deployment pods on the local-process kubelet (what `nexusd dev` runs warm workers with):
each container is a real `python -c` subprocess, restarted in place when it exits and killed
when its pod goes. Real processes and real time; CrashLoopBackOff base shortened to 0.2 s."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import httpx

from .conftest import PODS, start_cluster, wait_for
from .workloads_http import DEPLOYMENTS, deployment, pods

if TYPE_CHECKING:
    import pathlib

    import trio

    from nexusd.devcluster import DevCluster


def python_deployment(name: str, code: str) -> dict[str, Any]:
    manifest = deployment(name, 1)
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    container |= {"command": ["python"], "args": ["-c", code]}
    return manifest


async def start(nursery: trio.Nursery, tmp_path: pathlib.Path) -> DevCluster:
    return await start_cluster(
        nursery, tmp_path, kubelet="local", termination_grace=0.5, restart_backoff_base=0.2
    )


async def test_deleting_the_deployment_kills_its_worker_process(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    cluster = await start(nursery, tmp_path)
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        await http.post(DEPLOYMENTS, json=python_deployment("sleepy", code))

        async def pid() -> int | None:
            for pod in await pods(http, "sleepy"):
                log = await http.get(f"{PODS}/{pod['metadata']['name']}/log")
                if log.text.strip().isdigit():
                    return int(log.text)
            return None

        worker = await wait_for(pid, within=20)
        os.kill(worker, 0)  # alive
        assert (await http.delete(f"{DEPLOYMENTS}/sleepy")).status_code == 200

        async def gone() -> bool:
            return not await pods(http, "sleepy", alive=False)

        await wait_for(gone, within=20)
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            pass
        else:
            raise AssertionError(f"worker process {worker} outlived its pod")


async def test_an_exited_worker_process_is_started_again_in_the_same_pod(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    cluster = await start(nursery, tmp_path)
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        code = "print('served 1 run', flush=True)"
        await http.post(DEPLOYMENTS, json=python_deployment("recycled", code))

        async def restarted_twice() -> dict[str, Any] | None:
            for pod in await pods(http, "recycled"):
                if pod["status"]["containerStatuses"][0]["restartCount"] >= 2:
                    return pod
            return None

        pod = await wait_for(restarted_twice, within=20)
        log = (await http.get(f"{PODS}/{pod['metadata']['name']}/log")).text
        assert log.count("served 1 run\n") >= 2
        last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
        assert (last["exitCode"], last["reason"]) == (0, "Completed")
        assert [p["metadata"]["name"] for p in await pods(http, "recycled")] == [
            pod["metadata"]["name"]
        ]
        await http.delete(f"{DEPLOYMENTS}/recycled")
