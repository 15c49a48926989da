"""The batch extension `POST /algorithm/batch/{alg}` of the unversioned API, over loopback.

The body is a JSON array of run bodies; the answer is JSON `{"accepted", "refused", "runs"}`
with, in order, `{"requestId"}` or `{"status", "error"}` per run: 202 when any run was
accepted, else 400 (or 429 when every refusal is a full queue). A body that is not a
non-empty array of at most `http.max_batch_runs` runs is refused whole, as text/plain.

Real: `nexusd dev` on loopback with SQLite and payload files, and the embedded cluster over HTTP
with its scripted kubelet. Nothing is faked.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
import trio

from nexusd.devcluster import ANNOTATION_DURATION
from tests.conftest import StartNexus, template, wait_for_stage, write_manifests

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running

BATCH = "/algorithm/batch"
MAX_RUNS = 3


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    return write_manifests(
        tmp_path / "manifests", template("slow", annotations={ANNOTATION_DURATION: "60"})
    )


@pytest.fixture
async def nexus(start_nexus: StartNexus, manifests: Path) -> Running:
    return await start_nexus(**{"dev.manifests": str(manifests), "http.max_batch_runs": MAX_RUNS})


def run(tag: str, **fields: Any) -> dict[str, Any]:
    return {"algorithmParameters": {"tag": tag}, "tag": tag, **fields}


async def post_batch(
    http: httpx.AsyncClient, nexus: Running, body: Any, algorithm: str = "slow", **params: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await http.post(
        f"{nexus.url}{BATCH}/{algorithm}",
        content=content,
        params=params,
        headers={"Content-Type": "application/json"},
    )


async def tagged(http: httpx.AsyncClient, nexus: Running, tag: str) -> list[str]:
    response = await http.get(f"{nexus.url}/algorithm/v1/results/tags/{tag}")
    return [item["requestId"] for item in response.json()]


async def job_of(http: httpx.AsyncClient, nexus: Running, request_id: str) -> httpx.Response:
    assert nexus.cluster is not None
    return await http.get(f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs/{request_id}")


async def test_a_batch_of_good_runs_is_accepted_and_each_gets_its_job(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    tags = [f"good-{n}" for n in range(MAX_RUNS)]
    response = await post_batch(http, nexus, [run(tag) for tag in tags])
    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert (answer["accepted"], answer["refused"]) == (MAX_RUNS, 0)
    ids = [item["requestId"] for item in answer["runs"]]
    assert all(set(item) == {"requestId"} for item in answer["runs"])
    assert len(set(ids)) == MAX_RUNS
    # readable from the moment of the 202, each with its own tag, in the order sent
    for request_id, tag in zip(ids, tags, strict=True):
        first = await http.get(f"{nexus.url}/algorithm/v1/results/slow/requests/{request_id}")
        assert first.status_code == 200
        assert first.json()["status"] in ("BUFFERED", "RUNNING")
        assert await tagged(http, nexus, tag) == [request_id]
    uids = set()
    for request_id, tag in zip(ids, tags, strict=True):
        await wait_for_stage(http, nexus.url, "slow", request_id, "RUNNING")
        job = (await job_of(http, nexus, request_id)).json()
        assert job["metadata"]["name"] == request_id
        uids.add(job["metadata"]["uid"])
        redirect = await http.get(f"{nexus.url}/algorithm/v1/payload/slow/requests/{request_id}")
        assert json.loads((await http.get(redirect.headers["location"])).content) == {"tag": tag}
    assert len(uids) == MAX_RUNS


async def test_bad_items_are_refused_one_by_one_and_good_ones_accepted(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    items = [
        run("mixed-0"),
        {"tag": "mixed-1"},  # no algorithmParameters
        run("mixed-2", customConfiguration={"runtimeEnvironment": {"deadlineSeconds": 0}}),
    ]
    response = await post_batch(http, nexus, items)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["refused"]) == (1, 2)
    good, missing, deadline = answer["runs"]
    assert set(good) == {"requestId"}
    assert missing == {
        "status": 400,
        "error": "Algorithm payload is invalid: algorithmParameters is required",
    }
    assert deadline["status"] == 400
    assert (
        "customConfiguration.runtimeEnvironment.deadlineSeconds: 0 must be a positive integer"
        in deadline["error"]
    )
    assert await tagged(http, nexus, "mixed-0") == [good["requestId"]]
    assert await tagged(http, nexus, "mixed-1") == []
    assert await tagged(http, nexus, "mixed-2") == []
    await wait_for_stage(http, nexus.url, "slow", good["requestId"], "RUNNING")


async def test_a_batch_of_bad_items_is_400_with_each_error(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    items = [
        5,
        run("bad-1", customConfiguration={"computeResources": {"cpuLimit": "1e400"}}),
        run(
            "bad-2",
            customConfiguration={
                "runtimeEnvironment": {
                    "environmentVariables": [{"name": "NEXUS__SHARD_NAME", "value": "x"}]
                }
            },
        ),
    ]
    response = await post_batch(http, nexus, items)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert (answer["accepted"], answer["refused"]) == (0, 3)
    assert [item["status"] for item in answer["runs"]] == [400, 400, 400]
    errors = [item["error"] for item in answer["runs"]]
    assert errors[0] == "Algorithm payload is invalid: a run must be a JSON object"
    assert "customConfiguration.computeResources.cpuLimit: '1e400'" in errors[1]
    assert "environmentVariables[0].name: NEXUS__SHARD_NAME is set by nexusd" in errors[2]
    assert await tagged(http, nexus, "bad-1") == []
    assert await tagged(http, nexus, "bad-2") == []


@pytest.mark.parametrize(
    ("body", "params", "status", "message"),
    [
        pytest.param(
            b"[]",
            {},
            400,
            "Algorithm payload is invalid: a batch needs at least one run",
            id="empty",
        ),
        pytest.param(
            b'{"algorithmParameters": {}}',
            {},
            400,
            "Algorithm payload is invalid: body must be a JSON array of runs",
            id="an-object",
        ),
        pytest.param(b'"runs"', {}, 400, "body must be a JSON array of runs", id="a-string"),
        pytest.param(
            b"[{", {}, 400, "Algorithm payload is invalid: run 0: body is not valid JSON", id="cut"
        ),
        pytest.param(
            b"", {}, 400, "Algorithm payload is invalid: body is not valid JSON", id="no-body"
        ),
        pytest.param(
            b"[\xff]",
            {},
            400,
            "Algorithm payload is invalid: body is not valid JSON: not UTF-8",
            id="bin",
        ),
        pytest.param(
            b'[{"algorithmParameters": {}}, ' + b"[" * 5000 + b"]" * 5000 + b"]",
            {},
            400,
            "Algorithm payload is invalid: run 1 nests too deeply to be parsed",
            id="a-5000-deep-item",
        ),
        pytest.param(
            json.dumps([run(f"many-{n}") for n in range(MAX_RUNS + 1)]).encode(),
            {},
            413,
            f"A batch holds at most {MAX_RUNS} runs (http.max_batch_runs); this one has "
            f"{MAX_RUNS + 1}. Please split it.",
            id="too-many",
        ),
        pytest.param(
            json.dumps([run("yes-0")]).encode(),
            {"dryRun": "yes"},
            400,
            "Query parameter dryRun must be true or false, not 'yes'",
            id="dryRun-yes",
        ),
    ],
)
async def test_a_batch_that_is_not_a_list_of_runs_is_refused_whole(
    nexus: Running,
    http: httpx.AsyncClient,
    body: bytes,
    params: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = await post_batch(http, nexus, body, **params)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/plain")
    assert message in response.text
    for tag in ("many-0", "yes-0"):
        assert await tagged(http, nexus, tag) == []


async def test_a_batch_for_an_unknown_algorithm_is_400(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    response = await post_batch(http, nexus, [run("nope-0")], algorithm="nope")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("No valid configuration found for: nope.")
    assert await tagged(http, nexus, "nope-0") == []


async def test_a_too_deep_item_is_that_items_error(nexus: Running, http: httpx.AsyncClient) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    body = b'[{"algorithmParameters": {}}, {"algorithmParameters": ' + deep + b"}]"
    response = await post_batch(http, nexus, body)
    assert response.status_code == 202, response.text
    bad = response.json()["runs"][1]
    assert bad["status"] == 400
    assert "algorithmParameters" in bad["error"]


async def test_nan_in_an_item_is_that_items_error(nexus: Running, http: httpx.AsyncClient) -> None:
    body = b'[{"algorithmParameters": {}}, {"algorithmParameters": {"x": NaN}}]'
    response = await post_batch(http, nexus, body)
    assert response.status_code == 202, response.text
    bad = response.json()["runs"][1]
    assert bad == {
        "status": 400,
        "error": "Algorithm payload is invalid: algorithmParameters is not valid JSON: NaN is "
        "not a JSON value",
    }


async def test_a_lone_surrogate_in_an_item_is_that_items_error(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    body = b'[{"algorithmParameters": {}}, {"algorithmParameters": {}, "tag": "\\ud800"}]'
    response = await post_batch(http, nexus, body)
    assert response.status_code == 202, response.text
    assert response.json()["runs"][1]["status"] == 400


async def test_a_full_queue_refuses_items_with_429_and_retry_after(
    start_nexus: StartNexus, manifests: Path, http: httpx.AsyncClient
) -> None:
    # one worker, one token every thousand seconds: the cluster takes one Job, then no more
    capacity = 2
    nexus = await start_nexus(
        **{
            "dev.manifests": str(manifests),
            "submission.workers": 1,
            "submission.rate": 0.001,
            "submission.burst": 1,
            "submission.queue_capacity": capacity,
        }
    )
    tags = [f"full-{n}" for n in range(4)]
    response = await post_batch(http, nexus, [run(tag) for tag in tags])
    assert response.status_code == 202, response.text
    assert response.headers["retry-after"] == "1"
    answer = response.json()
    assert (answer["accepted"], answer["refused"]) == (capacity, 2)
    refusal = {
        "status": 429,
        "error": "The submission queue for cluster dev is full. Please retry later.",
    }
    assert answer["runs"][capacity:] == [refusal, refusal]
    accepted = [item["requestId"] for item in answer["runs"][:capacity]]
    for tag, request_id in zip(tags, accepted, strict=False):
        assert await tagged(http, nexus, tag) == [request_id]
    for tag in tags[capacity:]:
        assert await tagged(http, nexus, tag) == []
    # Once the worker holds a run waiting for a token and the queue is full again, a batch
    # gets nothing but 429s: the answer is 429 itself.
    with trio.fail_after(10):
        while True:
            response = await post_batch(http, nexus, [run("later-0"), run("later-1")])
            if response.status_code == 429:
                break
            assert response.status_code == 202, response.text
            await trio.sleep(0.05)
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"accepted": 0, "refused": 2, "runs": [refusal, refusal]}
    for request_id in accepted:
        await wait_for_stage(http, nexus.url, "slow", request_id, "BUFFERED", "RUNNING")


async def test_a_dry_run_batch_completes_at_once_without_jobs(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    response = await post_batch(http, nexus, [run("dry-0"), run("dry-1"), {}], dryRun="true")
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["refused"]) == (2, 1)
    ids = [item["requestId"] for item in answer["runs"][:2]]
    for request_id in ids:
        result = await http.get(f"{nexus.url}/algorithm/v1/results/slow/requests/{request_id}")
        assert result.json()["status"] == "COMPLETED"  # at once, not eventually
        metadata = await http.get(f"{nexus.url}/algorithm/v1/metadata/slow/requests/{request_id}")
        assert metadata.json()["job_uid"] == "dry-run"
        buffered = await http.get(f"{nexus.url}/algorithm/v1/buffer/slow/requests/{request_id}")
        assert json.loads(buffered.text)["metadata"]["name"] == request_id
    await trio.sleep(0.5)  # a submitter that wrongly took them would have created Jobs by now
    for request_id in ids:
        assert (await job_of(http, nexus, request_id)).status_code == 404


@pytest.mark.parametrize("prefix", ["/algorithm/v1", "/algorithm"])
async def test_single_runs_work_on_the_v1_and_the_unversioned_api(
    nexus: Running, http: httpx.AsyncClient, prefix: str
) -> None:
    response = await http.post(f"{nexus.url}{prefix}/run/slow", json=run(f"single{len(prefix)}"))
    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == "application/json"
    request_id = response.json()["requestId"]
    for read in ("/algorithm/v1", "/algorithm"):
        result = await http.get(f"{nexus.url}{read}/results/slow/requests/{request_id}")
        assert result.status_code == 200
        assert result.json()["requestId"] == request_id
    await wait_for_stage(http, nexus.url, "slow", request_id, "RUNNING")
    assert (await job_of(http, nexus, request_id)).status_code == 200
    bad = await http.post(f"{nexus.url}{prefix}/run/slow", json={"tag": "x"})
    assert bad.status_code == 400
    assert bad.text == "Algorithm payload is invalid: algorithmParameters is required"


async def test_batch_is_only_on_the_unversioned_api(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    response = await http.post(f"{nexus.url}/algorithm/v1/batch/slow", json=[run("v1-0")])
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert await tagged(http, nexus, "v1-0") == []
