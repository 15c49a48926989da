"""A persisted embedded cluster stopped and started again on the same state_dir, reached over
real HTTP through its kubeconfig. Stops are real: a cancelled nursery, or a `kill -9` of a
child process running the cluster (`crashable_cluster.py`) whose local kubelet runs a real
`python -c` container. Pod outcomes of the scripted kubelet come from the cluster config."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import httpx
import trio
import yaml

from nexusd.devcluster import ANNOTATION_EXIT_CODE, orphans
from nexusd.devcluster.nodes import DEFAULT_NODE_GROUPS, NodeGroup

from .conftest import JOBS, NS, PODS, job_manifest, start_cluster, wait_for, wait_job_condition
from .test_apiserver import CRD, TEMPLATES, cm, read_watch
from .test_local_kubelet import python_job

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ROOT = pathlib.Path(__file__).parents[2]
CMS = f"/api/v1/namespaces/{NS}/configmaps"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
IGNORE_DISRUPTIONS = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
}


def client_for(kubeconfig: pathlib.Path) -> httpx.AsyncClient:
    doc = yaml.safe_load(kubeconfig.read_text())
    token = doc["users"][0]["user"]["token"]
    return httpx.AsyncClient(
        base_url=doc["clusters"][0]["cluster"]["server"],
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


@contextlib.asynccontextmanager
async def running(state_dir: pathlib.Path, **config: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A persisted cluster on `state_dir`, stopped by cancelling its nursery on exit."""
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery, state_dir, persist=True, **config)
        async with client_for(cluster.kubeconfig_path) as http:
            yield http
        nursery.cancel_scope.cancel()


async def pods_of(http: httpx.AsyncClient, job: str) -> list[dict[str, Any]]:
    r = await http.get(PODS, params={"labelSelector": f"job-name={job}"})
    items: list[dict[str, Any]] = r.json()["items"]
    return sorted(items, key=lambda p: int(p["metadata"]["resourceVersion"]))


async def wait_pod_phase(http: httpx.AsyncClient, job: str, phase: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return next((p for p in await pods_of(http, job) if p["status"]["phase"] == phase), None)

    pod: dict[str, Any] = await wait_for(probe)
    return pod


def assert_lost(pod: dict[str, Any]) -> None:
    """The status a restarted kubelet gives a pod its crashed predecessor was running."""
    status = pod["status"]
    assert status["phase"] == "Failed"
    assert (status["reason"], status["message"]) == (
        "Terminated",
        "Pod was terminated in response to imminent node shutdown.",
    )
    target = status["conditions"][0]
    assert target["type"] == "DisruptionTarget"
    assert (target["status"], target["reason"]) == ("True", "TerminationByKubelet")
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 137
    assert terminated["reason"] == "ContainerStatusUnknown"
    assert terminated["message"] == (
        "The container could not be located when the pod was terminated"
    )


async def test_objects_and_resource_versions_survive_a_restart(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path) as http:
        kept = (await http.post(CMS, json=cm("kept"))).json()
        assert (await http.post(CRDS, json=CRD)).status_code == 201
        await http.post(CMS, json=cm("gone"))
        await http.delete(f"{CMS}/gone")
        last = int((await http.get(CMS)).json()["metadata"]["resourceVersion"])
    async with running(tmp_path) as http:
        assert (await http.get(f"{CMS}/kept")).json() == kept
        assert (await http.get(f"{CMS}/gone")).status_code == 404
        assert (await http.get(TEMPLATES)).status_code == 200  # the CRD is served again
        # The first write after the restart (the node re-registering) follows the deletion's RV.
        node = (await http.get("/api/v1/nodes/devcluster-node-0")).json()
        assert int(node["metadata"]["resourceVersion"]) == last + 1
        assert node["metadata"]["uid"]
        created = (await http.post(CMS, json=cm("new"))).json()
        assert int(created["metadata"]["resourceVersion"]) > last + 1
        old_rv = kept["metadata"]["resourceVersion"]
        events = await read_watch(http, CMS, {"resourceVersion": old_rv, "timeoutSeconds": "1"})
        assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [
            ("ERROR", 410, "Expired")
        ]
    async with running(tmp_path, node_groups=(NodeGroup(name="other"),)) as http:
        nodes = (await http.get("/api/v1/nodes")).json()["items"]
        assert [n["metadata"]["name"] for n in nodes] == ["other-0"]


async def test_counted_pods_are_not_counted_again(tmp_path: pathlib.Path) -> None:
    failing = job_manifest("retry", backoffLimit=2, annotations={ANNOTATION_EXIT_CODE: "3"})
    async with running(tmp_path, backoff_base=60.0) as http:
        await http.post(JOBS, json=failing)

        async def one_failure_counted() -> bool:
            job = (await http.get(f"{JOBS}/retry")).json()
            return bool(job["status"].get("failed") == 1)

        await wait_for(one_failure_counted)  # then 60 s of back-off: stop in the middle
    async with running(tmp_path, backoff_base=0.0) as http:
        job = await wait_job_condition(http, "retry", "Failed")
        assert job["status"]["failed"] == 3
        assert len(await pods_of(http, "retry")) == 3


async def test_pods_of_a_stopped_kubelet_are_replaced(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path, default_duration=60.0) as http:
        await http.post(JOBS, json=job_manifest("keep", podFailurePolicy=IGNORE_DISRUPTIONS))
        await http.post(JOBS, json=job_manifest("strict"))
        later = job_manifest("later", podFailurePolicy=IGNORE_DISRUPTIONS)
        later["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "b"}
        await http.post(JOBS, json=later)
        await wait_pod_phase(http, "keep", "Running")
        await wait_pod_phase(http, "strict", "Running")

        async def unschedulable() -> bool:
            pods = await pods_of(http, "later")
            conditions = pods[0]["status"].get("conditions") or [] if pods else []
            return any(c["reason"] == "Unschedulable" for c in conditions)

        await wait_for(unschedulable)
    groups = (*DEFAULT_NODE_GROUPS, NodeGroup(name="pool-b", labels={"pool": "b"}))
    async with running(tmp_path, node_groups=groups) as http:
        job = await wait_job_condition(http, "keep", "Complete")
        assert job["status"]["succeeded"] == 1
        assert "failed" not in job["status"]  # the lost pod is ignored, backoffLimit 0 untouched
        lost, replacement = await pods_of(http, "keep")
        assert_lost(lost)
        assert replacement["status"]["phase"] == "Succeeded"
        job = await wait_job_condition(http, "strict", "Failed")
        assert job["status"]["conditions"][-1]["reason"] == "BackoffLimitExceeded"
        assert_lost((await pods_of(http, "strict"))[0])
        await wait_job_condition(http, "later", "Complete")  # never started: simply started


async def first_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    with trio.fail_after(30):
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some()
            assert chunk, "the cluster process ended before serving"
            data += chunk
    return data.decode()


async def test_a_killed_cluster_kills_its_orphans_and_replaces_their_pods(
    tmp_path: pathlib.Path,
) -> None:
    state = tmp_path / "cluster"
    marker = tmp_path / "first-pid"
    code = (
        "import os, pathlib, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "first = not marker.exists()\n"
        "if first:\n"
        "    marker.with_suffix('.tmp').write_text(str(os.getpid()))\n"
        "    os.replace(marker.with_suffix('.tmp'), marker)\n"
        "time.sleep(60 if first else 0.5)\n"
    )
    job = python_job("algo", code)
    job["spec"]["podFailurePolicy"] = IGNORE_DISRUPTIONS
    argv = [sys.executable, "-m", "tests.devcluster.crashable_cluster", str(state), "local"]
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None
    try:
        kubeconfig = pathlib.Path((await first_line(process.stdout)).strip())
        async with client_for(kubeconfig) as http:
            await http.post(JOBS, json=job)
            await wait_for(lambda: trio.to_thread.run_sync(marker.exists), within=20)
            await wait_pod_phase(http, "algo", "Running")
    finally:
        process.kill()
        await process.wait()
        await process.stdout.aclose()
    pid = int(marker.read_text())
    started = orphans.start_time(pid)
    assert started is not None  # it outlived the cluster that started it
    try:
        async with running(state, kubelet="local") as http:
            assert orphans.start_time(pid) is None  # killed before the cluster serves
            done = await wait_job_condition(http, "algo", "Complete", within=20)
            assert "failed" not in done["status"]
            lost, replacement = await pods_of(http, "algo")
            assert_lost(lost)
            assert replacement["status"]["phase"] == "Succeeded"
    finally:
        if orphans.start_time(pid) == started:  # the test failed: do not leave it behind
            os.killpg(pid, signal.SIGKILL)
