"""Result integrity: a run's outcome and result are written by its own pod, and only until the
run ends.

Real: `nexusd dev` on loopback (SQLite, payload files, the embedded cluster over HTTP). With the
local kubelet the bundled `hello` algorithm runs as a real process and reports through the
receiver URL nexusd injected into its pod; with the scripted kubelet the tests play the pod,
using what its environment holds. In multi-shard dev the pod lives in a shard cluster, read
through that shard's kubeconfig. Nothing is faked.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import trio

from nexusd.devcluster import ANNOTATION_DURATION
from nexusd.kube.client import JOBS, PODS, KubeClient
from nexusd.kube.credentials import load_credentials
from tests.conftest import StartNexus, template, wait_for_stage, write_manifests

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running


async def submit(
    http: httpx.AsyncClient, nexus: Running, algorithm: str, parameters: dict[str, Any]
) -> str:
    response = await http.post(
        f"{nexus.url}/algorithm/v1/run/{algorithm}",
        json={"algorithmParameters": parameters},
        params={"dryRun": "false"},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["requestId"])


async def container_env(client: KubeClient, resource: Any, request_id: str) -> dict[str, str]:
    """The run's Job's (or pod's) container environment, once it exists."""
    with trio.fail_after(20):
        while True:
            items = (await client.list(resource, namespace="nexus"))["items"]
            for item in items:
                owner = (item["metadata"].get("ownerReferences") or [{}])[0].get("name")
                if request_id in (item["metadata"]["name"], owner):
                    spec = item["spec"] if resource is PODS else item["spec"]["template"]["spec"]
                    return {e["name"]: e.get("value", "") for e in spec["containers"][0]["env"]}
            await trio.sleep(0.05)


async def test_hello_reports_through_its_token_url_and_its_result_is_then_sealed(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    nexus = await start_nexus(**{"dev.kubelet": "local"})
    assert nexus.cluster is not None
    async with aclosing(
        KubeClient(credentials=load_credentials(nexus.cluster.kubeconfig_path))
    ) as kube:
        request_id = await submit(http, nexus, "hello", {"name": "sealed"})
        env = await container_env(kube, JOBS, request_id)
    assert env["NEXUS__CLIENT__RECEIVER"].startswith(f"{nexus.url}/t/")
    result = await wait_for_stage(http, nexus.url, "hello", request_id, "COMPLETED", "FAILED")
    assert result["status"] == "COMPLETED", result
    overwrite = await http.put(env["NEXUS__RESULT_UPLOAD_URL"], content=b'{"greeting": "forged"}')
    assert overwrite.status_code == 409
    assert overwrite.text == (
        f"Run hello/{request_id} has already ended COMPLETED; its result can no longer be uploaded"
    )
    download = await http.get(result["resultUri"])
    assert download.json() == {"greeting": "Hello, sealed!", "requestId": request_id}


async def test_uploads_replace_the_result_only_until_the_run_ends(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    slow = template("slow", annotations={ANNOTATION_DURATION: "60"})
    nexus = await start_nexus(**{"dev.manifests": str(write_manifests(tmp_path / "m", slow))})
    assert nexus.cluster is not None
    async with aclosing(
        KubeClient(credentials=load_credentials(nexus.cluster.kubeconfig_path))
    ) as kube:
        request_id = await submit(http, nexus, "slow", {})
        cancelled = await submit(http, nexus, "slow", {})
        env = await container_env(kube, PODS, request_id)
        cancelled_env = await container_env(kube, PODS, cancelled)
    upload, receiver = env["NEXUS__RESULT_UPLOAD_URL"], env["NEXUS__CLIENT__RECEIVER"]
    assert (await http.put(upload, content=b'{"draft": 1}')).status_code == 201
    assert (await http.put(upload, content=b'{"final": 2}')).status_code == 201  # still RUNNING
    report = {"resultUri": "", "errorCause": "", "errorDetails": ""}
    complete = f"{receiver}/algorithm/v1/complete/slow/requests/{request_id}"
    assert (await http.post(complete, json=report)).status_code == 202
    result = await wait_for_stage(http, nexus.url, "slow", request_id, "COMPLETED")
    late = await http.put(upload, content=b'{"late": 3}')
    assert late.status_code == 409
    assert (await http.get(result["resultUri"])).json() == {"final": 2}
    cancel = f"{nexus.url}/algorithm/v1/cancel/slow/requests/{cancelled}"
    assert (await http.post(cancel, json={"initiator": "jane", "reason": "x"})).status_code == 200
    refused = await http.put(cancelled_env["NEXUS__RESULT_UPLOAD_URL"], content=b"{}")
    assert refused.status_code == 409
    assert "already ended CANCELLED" in refused.text


async def test_each_shards_pods_report_to_the_dev_process(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    nexus = await start_nexus(**{"dev.shards": 2})
    request_id = await submit(http, nexus, "hello-shard-2", {})
    shard = tmp_path / "data" / "shards" / "shard-2.kubeconfig"
    async with aclosing(KubeClient(credentials=load_credentials(shard))) as kube:
        env = await container_env(kube, PODS, request_id)
    receiver = env["NEXUS__CLIENT__RECEIVER"]
    assert receiver.startswith(f"{nexus.url}/t/")
    complete = f"{receiver}/algorithm/v1/complete/hello-shard-2/requests/{request_id}"
    report = {"resultUri": "https://r.example.test/x", "errorCause": "", "errorDetails": ""}
    assert (await http.post(complete, json=report)).status_code == 202
    result = await wait_for_stage(http, nexus.url, "hello-shard-2", request_id, "COMPLETED")
    assert result["resultUri"] == "https://r.example.test/x"
