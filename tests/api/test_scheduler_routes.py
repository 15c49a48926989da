"""The scheduler's and receiver's HTTP routes, over loopback, with upstream's codes and shapes.

Real: `nexusd dev` on loopback with SQLite and payload files, and the embedded cluster over HTTP
with its scripted kubelet (pods exit with the code and after the duration their annotations
say). The tests play the algorithm by calling the receiver routes themselves.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from nexusd.devcluster import ANNOTATION_DURATION
from tests.conftest import StartNexus, template, wait_for_stage, write_manifests

if TYPE_CHECKING:
    from pathlib import Path

    from nexusd.modes.services import Running

RUN = "/algorithm/v1/run"


@pytest.fixture
async def nexus(start_nexus: StartNexus, tmp_path: Path) -> Running:
    manifests = write_manifests(
        tmp_path / "manifests",
        template("slow", annotations={ANNOTATION_DURATION: "60"}),
        template(
            "tree",
            runtimeEnvironment={"deadlineSeconds": 30, "maximumRetries": 2},
            errorHandlingBehaviour={"fatalExitCodes": [137], "transientExitCodes": [139]},
        ),
        {
            **template("orphan"),
            "spec": {
                **template("orphan")["spec"],
                "workgroupRef": {
                    "name": "missing",
                    "group": "science.sneaksanddata.com",
                    "kind": "NexusAlgorithmWorkgroup",
                },
            },
        },
    )
    return await start_nexus(**{"dev.manifests": str(manifests)})


async def submit(
    http: httpx.AsyncClient, nexus: Running, algorithm: str, body: dict[str, Any], **params: str
) -> str:
    response = await http.post(f"{nexus.url}{RUN}/{algorithm}", json=body, params=params)
    assert response.status_code == 202, response.text
    return str(response.json()["requestId"])


async def job_of(nexus: Running, http: httpx.AsyncClient, request_id: str) -> httpx.Response:
    assert nexus.cluster is not None
    return await http.get(f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs/{request_id}")


# --- create run: validation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "body", "message"),
    [
        (
            "nope",
            {"algorithmParameters": {}},
            "No valid configuration found for: nope. Please check that algorithm name is "
            "spelled correctly and try again. Contact an algorithm author if this problem "
            "persists.",
        ),
        (
            "orphan",
            {"algorithmParameters": {}},
            "Cannot assign requested workgroup missing to the algorithm orphan. Please check "
            "the deployed configuration.",
        ),
        ("hello", {}, "Algorithm payload is invalid: algorithmParameters is required"),
        (
            "hello",
            {"algorithmParameters": [1]},
            "Algorithm payload is invalid: algorithmParameters must be a JSON object",
        ),
        (
            "hello",
            {"algorithmParameters": {}, "payloadValidFor": "6 hours"},
            "Algorithm payload is invalid: payloadValidFor '6 hours' is not a duration",
        ),
        (
            "hello",
            {"algorithmParameters": {}, "payloadValidFor": "200h"},
            "exceeds the maximum 168h0m0s",
        ),
        (
            "hello",
            {"algorithmParameters": {}, "parentRequest": {"requestId": "x"}},
            "parentRequest.algorithmName is required",
        ),
        (
            "hello",
            {
                "algorithmParameters": {},
                "customConfiguration": {"computeResources": {"cpuLimit": "2 cores"}},
            },
            "cpuLimit",
        ),
    ],
)
async def test_bad_runs_get_400_text(
    nexus: Running, http: httpx.AsyncClient, algorithm: str, body: dict[str, Any], message: str
) -> None:
    response = await http.post(f"{nexus.url}{RUN}/{algorithm}", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert message in response.text


async def test_malformed_json_is_400(nexus: Running, http: httpx.AsyncClient) -> None:
    response = await http.post(f"{nexus.url}{RUN}/hello", content=b"{not json")
    assert response.status_code == 400
    assert response.text.startswith("Algorithm payload is invalid: body is not valid JSON")


async def test_oversized_body_is_413(start_nexus: StartNexus, http: httpx.AsyncClient) -> None:
    nexus = await start_nexus(**{"http.max_payload_size": "1Ki"})
    body = {"algorithmParameters": {"blob": "x" * 2048}}
    response = await http.post(f"{nexus.url}{RUN}/hello", json=body)
    assert response.status_code == 413
    assert "limit of 1024 bytes" in response.text


# --- create run: durability and the Job -------------------------------------------------


@pytest.mark.parametrize("inline_max", ["64Ki", "0"])
async def test_run_is_durable_and_readable_at_once(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path, inline_max: str
) -> None:
    manifests = write_manifests(
        tmp_path / "manifests", template("slow", annotations={ANNOTATION_DURATION: "60"})
    )
    nexus = await start_nexus(
        **{"dev.manifests": str(manifests), "payloads.inline_max": inline_max}
    )
    # the payload is kept byte for byte as sent, not decoded and encoded again
    parameters = b'{"x": 1,   "name": "durable", "pi": 3.14159265358979323846}'
    response = await http.post(
        f"{nexus.url}{RUN}/slow",
        content=b'{"algorithmParameters":  ' + parameters + b', "tag": "t1"}',
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    # readable from the moment of the 202 (SDKs poll right away)
    first = await http.get(f"{nexus.url}/algorithm/v1/results/slow/requests/{request_id}")
    assert first.status_code == 200
    assert first.json()["status"] in ("BUFFERED", "RUNNING")
    # small payloads are durable with the checkpoint itself, larger ones as files
    payload_file = tmp_path / "data" / "blobs" / "payloads" / "algorithm=slow" / request_id
    inline = await nexus.context.store.get_payload(algorithm="slow", request_id=request_id)
    if inline_max == "0":
        assert inline is None
        assert payload_file.read_bytes() == parameters
    else:
        assert inline == parameters
        assert not payload_file.exists()
    # the payload route redirects to a URL that serves it
    redirect = await http.get(f"{nexus.url}/algorithm/v1/payload/slow/requests/{request_id}")
    assert redirect.status_code == 302
    served = await http.get(redirect.headers["location"])
    assert served.content == parameters
    await wait_for_stage(http, nexus.url, "slow", request_id, "RUNNING")
    job = (await job_of(nexus, http, request_id)).json()
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][1] == f"--sas-uri={redirect.headers['location']}"
    assert container["args"][2] == f"--request-id={request_id}"


async def test_buffer_route_serves_the_job_manifest_as_text(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    request_id = await submit(http, nexus, "slow", {"algorithmParameters": {}})
    response = await http.get(f"{nexus.url}/algorithm/v1/buffer/slow/requests/{request_id}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    job = json.loads(response.text)
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == request_id
    assert job["spec"]["ttlSecondsAfterFinished"] == 300
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["NEXUS__ALGORITHM_NAME"] == "slow"
    assert env["NEXUS__SHARD_NAME"] == "dev"
    assert env["NEXUS__RESULT_UPLOAD_URL"] == "<redacted>"  # only the pod may upload (issue 12)


async def test_dry_run_completes_without_a_job(nexus: Running, http: httpx.AsyncClient) -> None:
    request_id = await submit(
        http,
        nexus,
        "hello",
        {"algorithmParameters": {}, "parentRequest": {"requestId": "p-1", "algorithmName": "x"}},
        dryRun="true",
    )
    result = await wait_for_stage(http, nexus.url, "hello", request_id, "COMPLETED")
    assert result["resultUri"] == ""
    metadata = (
        await http.get(f"{nexus.url}/algorithm/v1/metadata/hello/requests/{request_id}")
    ).json()
    assert metadata["job_uid"] == "dry-run"
    assert metadata["parent"] == {"requestId": "p-1", "algorithmName": "x"}
    assert (await job_of(nexus, http, request_id)).status_code == 404
    buffered = json.loads(
        (await http.get(f"{nexus.url}/algorithm/v1/buffer/hello/requests/{request_id}")).text
    )
    assert buffered["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "p-1", "uid": "p-1"}
    ]


async def test_child_run_is_owned_by_its_parent_job(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    parent = await submit(http, nexus, "slow", {"algorithmParameters": {}})
    await wait_for_stage(http, nexus.url, "slow", parent, "RUNNING")
    parent_job = (await job_of(nexus, http, parent)).json()
    child = await submit(
        http,
        nexus,
        "slow",
        {
            "algorithmParameters": {},
            "parentRequest": {"requestId": parent, "algorithmName": "slow"},
        },
    )
    await wait_for_stage(http, nexus.url, "slow", child, "RUNNING")
    child_job = (await job_of(nexus, http, child)).json()
    [owner] = child_job["metadata"]["ownerReferences"]
    assert owner["uid"] == parent_job["metadata"]["uid"]
    assert owner["name"] == parent
    env = {
        e["name"]: e.get("value")
        for e in child_job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["NEXUS__PARENT_REQUEST_ID"] == parent
    missing = await http.post(
        f"{nexus.url}{RUN}/slow",
        json={
            "algorithmParameters": {},
            "parentRequest": {"requestId": "gone", "algorithmName": "slow"},
        },
    )
    assert missing.status_code == 400
    assert "has no running Job" in missing.text


async def test_overrides_are_merged_into_the_job(nexus: Running, http: httpx.AsyncClient) -> None:
    overrides = {
        "container": {"versionTag": "2.0.0"},
        "computeResources": {"limits": {"cpu": "2000m", "memory": "2Gi"}},
        "runtimeEnvironment": {"deadlineSeconds": 99, "maximumRetries": 1},
    }
    request_id = await submit(
        http, nexus, "tree", {"algorithmParameters": {}, "customConfiguration": overrides}
    )
    job = json.loads(
        (await http.get(f"{nexus.url}/algorithm/v1/buffer/tree/requests/{request_id}")).text
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "example.test/tree:2.0.0"
    assert container["resources"]["limits"]["cpu"] == "2000m"
    assert job["spec"]["activeDeadlineSeconds"] == 99
    assert job["spec"]["backoffLimit"] == 1
    metadata = (
        await http.get(f"{nexus.url}/algorithm/v1/metadata/tree/requests/{request_id}")
    ).json()
    assert metadata["configuration_overrides"] == overrides


# --- reads --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("results/hello/requests/unknown", "Failed to read results for unknown"),
        ("metadata/hello/requests/unknown", "Failed to read metadata for unknown"),
        ("buffer/hello/requests/unknown", "Failed to read buffered metadata for unknown"),
        ("payload/hello/requests/unknown", "Failed to find a run for unknown"),
    ],
)
async def test_unknown_run_reads_are_400_text(
    nexus: Running, http: httpx.AsyncClient, route: str, message: str
) -> None:
    response = await http.get(f"{nexus.url}/algorithm/v1/{route}")
    assert (response.status_code, response.text) == (400, message)
    assert response.headers["content-type"].startswith("text/plain")


async def test_tags_list_runs_and_can_be_moved(nexus: Running, http: httpx.AsyncClient) -> None:
    ids = [
        await submit(http, nexus, "slow", {"algorithmParameters": {}, "tag": "batch-42"})
        for _ in range(3)
    ]
    listed = (await http.get(f"{nexus.url}/algorithm/v1/results/tags/batch-42")).json()
    assert sorted(item["requestId"] for item in listed) == sorted(ids)
    assert all(
        set(item) == {"requestId", "algorithmName", "status", "resultUri", "runErrorMessage"}
        for item in listed
    )
    assert (await http.get(f"{nexus.url}/algorithm/v1/results/tags/none")).json() == []
    moved = await http.post(
        f"{nexus.url}/algorithm/v1/metadata/tags/slow/requests/{ids[0]}", json={"newTag": "old"}
    )
    assert (moved.status_code, moved.json()) == (200, {})
    left = (await http.get(f"{nexus.url}/algorithm/v1/results/tags/batch-42")).json()
    assert len(left) == 2
    unknown = await http.post(
        f"{nexus.url}/algorithm/v1/metadata/tags/slow/requests/nope", json={"newTag": "x"}
    )
    assert (unknown.status_code, unknown.text) == (404, "Checkpoint nope/slow not found")


async def test_metadata_has_no_nulls(nexus: Running, http: httpx.AsyncClient) -> None:
    request_id = await submit(http, nexus, "slow", {"algorithmParameters": {}})
    text = (await http.get(f"{nexus.url}/algorithm/v1/metadata/slow/requests/{request_id}")).text
    assert "null" not in text
    document = json.loads(text)
    assert document["sent_at"] == "0001-01-01T00:00:00Z" or document["sent_at"].endswith("Z")
    assert document["payload_valid_for"] == "24h0m0s"


# --- receiver -------------------------------------------------------------------------


async def test_completion_is_idempotent_and_checkable(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    request_id = await submit(http, nexus, "slow", {"algorithmParameters": {}})
    await wait_for_stage(http, nexus.url, "slow", request_id, "RUNNING")
    job = (await job_of(nexus, http, request_id)).json()  # report as the pod would
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    receiver = env["NEXUS__CLIENT__RECEIVER"]
    complete = f"{receiver}/algorithm/v1/complete/slow/requests/{request_id}"
    check = f"{receiver}/algorithm/v1/check/slow/requests/{request_id}"
    assert (await http.get(check)).json() == {"is_processed": False}
    done = await http.post(
        complete,
        json={"resultUri": "https://example.test/r.json", "errorCause": "", "errorDetails": ""},
    )
    assert (done.status_code, done.json()) == (202, {})
    late = await http.post(
        complete, json={"resultUri": "", "errorCause": "boom", "errorDetails": ""}
    )
    assert late.status_code == 409  # a different report for a finished run: not recorded
    result = await wait_for_stage(http, nexus.url, "slow", request_id, "COMPLETED")
    assert result["resultUri"] == "https://example.test/r.json"
    assert (await http.get(check)).json() == {"is_processed": True}
    # another run's URL with this run's token
    assert (await http.post(complete.replace(request_id, "nope"), json={})).status_code == 403
    bad = await http.post(complete, content=b"[")
    assert bad.status_code == 400
    assert bad.text.startswith("Submitted result is invalid")


# --- cancel ---------------------------------------------------------------------------


async def test_cancel_deletes_the_job_and_records_who(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    request_id = await submit(http, nexus, "slow", {"algorithmParameters": {}})
    await wait_for_stage(http, nexus.url, "slow", request_id, "RUNNING")
    cancel = f"{nexus.url}/algorithm/v1/cancel/slow/requests/{request_id}"
    response = await http.post(
        cancel,
        json={"initiator": "jane", "reason": "wrong input", "cancellationPolicy": "Foreground"},
    )
    assert (response.status_code, response.text) == (200, "")
    assert response.headers["content-type"].startswith("text/plain")
    result = await wait_for_stage(http, nexus.url, "slow", request_id, "CANCELLED")
    assert result["runErrorMessage"] == "Cancelled by 'jane'"
    metadata = (
        await http.get(f"{nexus.url}/algorithm/v1/metadata/slow/requests/{request_id}")
    ).json()
    assert metadata["algorithm_failure_details"] == "Run cancelled, reason: 'wrong input'"
    with trio.fail_after(10):
        while (await job_of(nexus, http, request_id)).status_code != 404:
            await trio.sleep(0.05)


async def test_cancel_errors(nexus: Running, http: httpx.AsyncClient) -> None:
    base = f"{nexus.url}/algorithm/v1/cancel/slow/requests"
    unknown = await http.post(f"{base}/nope", json={"initiator": "a", "reason": "b"})
    assert (unknown.status_code, unknown.text) == (
        404,
        "Provided request with identifier 'nope' not found",
    )
    request_id = await submit(http, nexus, "slow", {"algorithmParameters": {}})
    bad = await http.post(f"{base}/{request_id}", json={"cancellationPolicy": "Now"})
    assert bad.status_code == 400
    assert bad.text == (
        "Invalid cancellation request: invalid CancellationPolicy: 'Now', accepted values: "
        "Orphan, Foreground or Background"
    )


# --- health ---------------------------------------------------------------------------


async def test_health_and_readiness(nexus: Running, http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{nexus.url}/healthz")).text == "ok"
    ready = await http.get(f"{nexus.url}/readyz")
    assert ready.status_code == 200
    details = ready.json()["details"]
    assert {"queue:dev", "submitter:dev", "store", "throttle:dev", "kube:dev"} <= set(details)
    assert details["kube:dev"]["requests"]["list nexusalgorithmtemplates 200"] >= 1
    await nexus.stop(grace=1)
    assert not nexus.context.readiness.accepting
    # the listener is closed: new connections are refused, not left waiting in the backlog
    with pytest.raises(httpx.ConnectError):
        await http.get(f"{nexus.url}/readyz")


async def test_a_run_no_node_can_ever_fit_is_400_unless_its_workgroup_autoscales(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    autoscaled = {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmWorkgroup",
        "metadata": {"name": "elastic"},
        "spec": {"description": "grows", "cluster": "dev", "capabilities": {"autoscaled": True}},
    }
    elastic = template("elastic-algo")
    elastic["spec"]["workgroupRef"]["name"] = "elastic"
    manifests = write_manifests(tmp_path / "m", template("small"), autoscaled, elastic)
    nexus = await start_nexus(**{"dev.manifests": str(manifests)})
    # the embedded cluster's node offers 32 CPUs; the CPU request is 10% of the limit
    huge = {"customConfiguration": {"computeResources": {"cpuLimit": "1000"}}}
    response = await http.post(
        f"{nexus.url}{RUN}/small", json={"algorithmParameters": {}, "tag": "huge", **huge}
    )
    assert response.status_code == 400
    assert response.text.startswith("Algorithm payload is invalid: the run's pod requests cpu 100")
    assert "no node of cluster dev" in response.text
    tagged = await http.get(f"{nexus.url}/algorithm/v1/results/tags/huge")
    assert tagged.json() == []  # nothing was stored
    await submit(http, nexus, "small", {"algorithmParameters": {}})  # fits: accepted
    await submit(http, nexus, "elastic-algo", {"algorithmParameters": {}, **huge})
