"""The whole path of a run in `nexusd dev`, as a newcomer drives it.

Real: HTTP on loopback, SQLite, payload files, the embedded cluster over HTTP, and the bundled
`hello` algorithm running as a real local process that fetches its payload, uploads its result
and reports to the receiver. Nothing is faked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.conftest import StartNexus, wait_for_stage

if TYPE_CHECKING:
    import httpx


async def run_hello(http: httpx.AsyncClient, url: str, parameters: dict[str, object]) -> str:
    response = await http.post(
        f"{url}/algorithm/v1/run/hello",
        params={"dryRun": "false"},
        json={"algorithmParameters": parameters, "requestApiVersion": "1.2"},
        headers={"Authorization": "Bearer token-is-ignored"},
    )
    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["requestId"]
    assert isinstance(body["requestId"], str)
    return str(body["requestId"])


async def test_hello_completes_with_a_downloadable_result(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    nexus = await start_nexus(**{"dev.kubelet": "local"})
    request_id = await run_hello(http, nexus.url, {"name": "nexus"})
    result = await wait_for_stage(http, nexus.url, "hello", request_id, "COMPLETED", "FAILED")
    assert result["status"] == "COMPLETED", result
    assert result["runErrorMessage"] == ""
    download = await http.get(result["resultUri"])
    assert download.status_code == 200
    assert download.json() == {"greeting": "Hello, nexus!", "requestId": request_id}
    metadata = (
        await http.get(f"{nexus.url}/algorithm/v1/metadata/hello/requests/{request_id}")
    ).json()
    assert metadata["lifecycle_stage"] == "COMPLETED"
    assert metadata["job_uid"]
    assert metadata["api_version"] == "1.2"


async def test_reported_error_cause_ends_failed(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    nexus = await start_nexus(**{"dev.kubelet": "local"})
    request_id = await run_hello(http, nexus.url, {"fail": "report"})
    result = await wait_for_stage(http, nexus.url, "hello", request_id, "COMPLETED", "FAILED")
    assert result == {
        "requestId": request_id,
        "status": "FAILED",
        "resultUri": "",
        "runErrorMessage": "<class 'ValueError'>: failing as asked)",
    }
    metadata = (
        await http.get(f"{nexus.url}/algorithm/v1/metadata/hello/requests/{request_id}")
    ).json()
    assert metadata["algorithm_failure_details"] == "the payload asked hello to fail"


async def test_crash_without_report_ends_failed_with_the_cause(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    nexus = await start_nexus(**{"dev.kubelet": "local"})
    request_id = await run_hello(http, nexus.url, {"fail": "crash"})
    result = await wait_for_stage(http, nexus.url, "hello", request_id, "COMPLETED", "FAILED")
    assert result["status"] == "FAILED"
    assert result["runErrorMessage"].startswith(
        "Algorithm encountered a fatal error during execution"
    )
    metadata = (
        await http.get(f"{nexus.url}/algorithm/v1/metadata/hello/requests/{request_id}")
    ).json()
    # the Job's PodFailurePolicy condition names the exit code
    assert "exit code 1" in metadata["algorithm_failure_details"]


async def test_hello_warm_is_served_by_its_pool_without_a_job(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    nexus = await start_nexus(**{"dev.kubelet": "local"})
    submitted = await http.post(
        f"{nexus.url}/algorithm/v1/run/hello-warm", json={"algorithmParameters": {"name": "pool"}}
    )
    assert submitted.status_code == 202, submitted.text
    request_id = submitted.json()["requestId"]
    result = await wait_for_stage(http, nexus.url, "hello-warm", request_id, "COMPLETED", "FAILED")
    assert result["status"] == "COMPLETED", result
    download = await http.get(result["resultUri"])
    assert download.json() == {"greeting": "Hello, pool!", "requestId": request_id}
    failing = await http.post(
        f"{nexus.url}/algorithm/v1/run/hello-warm", json={"algorithmParameters": {"fail": "report"}}
    )
    failed = await wait_for_stage(
        http, nexus.url, "hello-warm", failing.json()["requestId"], "COMPLETED", "FAILED"
    )
    assert failed["runErrorMessage"] == "AskedToFail"
    assert nexus.cluster is not None
    jobs = await http.get(f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs")
    assert jobs.json()["items"] == []
    pods = await http.get(f"{nexus.cluster.url}/api/v1/namespaces/nexus/pods")
    names = [pod["metadata"]["name"] for pod in pods.json()["items"]]
    assert [name.startswith("nexusd-pool-hello-warm-") for name in names] == [True]
