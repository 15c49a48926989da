"""The scheduler's worker API of warm pools, played by the test as a worker would.

Real: `nexusd dev` on loopback with SQLite and payload files, the embedded cluster over HTTP
(its scripted kubelet never runs `nexusd worker`, so the pool's pods lease nothing and the
test is the only worker), the pool token read from the pool's Deployment as a worker pod gets
it. Nothing is faked.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests.conftest import StartNexus, template, wait_for_stage, write_manifests

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running

WARM = {"minWorkers": 0, "maxWorkers": 2, "concurrency": 4}


@pytest.fixture
async def nexus(start_nexus: StartNexus, tmp_path: Path) -> Running:
    manifests = write_manifests(
        tmp_path / "manifests",
        template("warm", warmPool=WARM),
        template("cold"),
    )
    return await start_nexus(
        **{
            "dev.manifests": str(manifests),
            "warm.lease_duration": "2s",
            "warm.reap_interval": "100ms",
            "warm.scale_interval": "100ms",
            "warm.max_attempts": 2,
        }
    )


async def pool_token(http: httpx.AsyncClient, nexus: Running, algorithm: str) -> str:
    """NEXUS__WORKER__TOKEN of the pool's Deployment, once the scaler has made it."""
    assert nexus.cluster is not None
    url = f"{nexus.cluster.url}/apis/apps/v1/namespaces/nexus/deployments/nexusd-pool-{algorithm}"
    with trio.fail_after(20):
        while (response := await http.get(url)).status_code == 404:
            await trio.sleep(0.05)
    container = response.json()["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value", "") for item in container["env"]}
    return env["NEXUS__WORKER__TOKEN"]


class Worker:
    """The worker side of the protocol over plain HTTP."""

    def __init__(self, http: httpx.AsyncClient, nexus: Running, token: str, name: str) -> None:
        self.http, self.base, self.name = http, f"{nexus.url}/worker/v1/pools/warm", name
        self.headers = {"Authorization": f"Bearer {token}"}

    async def lease(self, most: int = 1, wait: float = 5) -> list[dict[str, Any]]:
        body = {"worker": self.name, "max": most, "wait": wait}
        response = await self.http.post(f"{self.base}/lease", json=body, headers=self.headers)
        assert response.status_code == 200, response.text
        runs: list[dict[str, Any]] = response.json()["runs"]
        return runs

    async def report(self, **body: Any) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.base}/report", json={"worker": self.name, **body}, headers=self.headers
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture
async def worker(http: httpx.AsyncClient, nexus: Running) -> Worker:
    return Worker(http, nexus, await pool_token(http, nexus, "warm"), "warm-worker-1")


async def submit(http: httpx.AsyncClient, nexus: Running, algorithm: str, **body: Any) -> str:
    response = await http.post(
        f"{nexus.url}/algorithm/v1/run/{algorithm}",
        json={"algorithmParameters": {"name": "pool"}, **body},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["requestId"])


def done(run: dict[str, Any], **item: Any) -> dict[str, Any]:
    return {"requestId": run["requestId"], "attempt": run["attempt"], **item}


async def test_a_leased_run_completes_without_a_job(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    request_id = await submit(http, nexus, "warm")
    [run] = await worker.lease()
    assert (run["requestId"], run["attempt"]) == (request_id, 1)
    assert run["args"] == [
        "main.py",
        f"--sas-uri={run['payloadUri']}",
        f"--request-id={request_id}",
    ]
    assert base64.b64decode(run["payload"]) == b'{"name":"pool"}'
    assert run["env"]["NEXUS__ALGORITHM_NAME"] == "warm"
    assert run["resultUploadUri"] == run["env"]["NEXUS__RESULT_UPLOAD_URL"]
    assert "/t/" in run["env"]["NEXUS__CLIENT__RECEIVER"]
    status = await http.get(f"{nexus.url}/algorithm/v1/results/warm/requests/{request_id}")
    assert status.json()["status"] == "RUNNING"
    # The worker uploads its result through the run's own signed URL, then reports.
    uploaded = await http.put(run["resultUploadUri"], content=b'{"answer": 42}')
    assert uploaded.status_code in (200, 201), uploaded.text
    answer = await worker.report(done=[done(run, status="completed", uploaded=True)])
    assert answer["done"] == [{"requestId": request_id, "outcome": "recorded", "message": ""}]
    result = await wait_for_stage(http, nexus.url, "warm", request_id, "COMPLETED")
    fetched = await http.get(result["resultUri"])
    assert fetched.json() == {"answer": 42}
    assert nexus.cluster is not None
    jobs = await http.get(f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs")
    assert jobs.json()["items"] == []


async def test_a_lease_waits_for_a_run(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    leased: list[dict[str, Any]] = []

    async def lease() -> None:
        leased.extend(await worker.lease(most=4, wait=10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lease)
        await trio.sleep(
            0.2
        )  # let the long poll park first; the answer below does not depend on it
        request_id = await submit(http, nexus, "warm")
    assert [run["requestId"] for run in leased] == [request_id]


async def test_an_empty_lease_ends_after_its_wait(worker: Worker) -> None:
    with trio.fail_after(3):
        assert await worker.lease(wait=0.3) == []


async def test_an_expired_lease_is_the_next_attempt_and_the_old_one_is_refused(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    request_id = await submit(http, nexus, "warm")
    [first] = await worker.lease()
    # No renewal: the lease expires (2 s) and the reaper gives the run back as attempt 2.
    with trio.fail_after(10):
        [second] = await worker.lease(wait=10)
    assert (second["requestId"], second["attempt"]) == (request_id, 2)
    old = first["env"]["NEXUS__CLIENT__RECEIVER"]
    assert second["env"]["NEXUS__CLIENT__RECEIVER"] != old
    answer = await worker.report(done=[done(first, status="completed")])
    assert answer["done"][0]["outcome"] == "refused"
    assert "lease lost" in answer["done"][0]["message"]
    # The old attempt's receiver URL is refused too: 409, nothing recorded.
    late = await http.post(
        f"{old}/algorithm/v1/complete/warm/requests/{request_id}",
        json={"resultUri": "", "errorCause": "", "errorDetails": ""},
    )
    assert late.status_code == 409, late.text
    assert "Attempt 1" in late.text
    status = await http.get(f"{nexus.url}/algorithm/v1/results/warm/requests/{request_id}")
    assert status.json()["status"] == "RUNNING"
    # The new attempt's URL completes it.
    new = second["env"]["NEXUS__CLIENT__RECEIVER"]
    reported = await http.post(
        f"{new}/algorithm/v1/complete/warm/requests/{request_id}",
        json={"resultUri": "", "errorCause": "", "errorDetails": ""},
    )
    assert reported.status_code == 202, reported.text
    await wait_for_stage(http, nexus.url, "warm", request_id, "COMPLETED")


async def test_a_run_that_loses_every_lease_fails(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    request_id = await submit(http, nexus, "warm")
    await worker.lease()
    with trio.fail_after(10):
        await worker.lease(wait=10)  # attempt 2, also left to expire (max_attempts = 2)
    result = await wait_for_stage(http, nexus.url, "warm", request_id, "FAILED")
    assert "lost too many times" in result["runErrorMessage"]


async def test_renewal_keeps_a_lease(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    request_id = await submit(http, nexus, "warm")
    [run] = await worker.lease()
    for _ in range(4):  # 4 s of work, renewed every second, with a 2 s lease
        answer = await worker.report(holding=[done(run)], wait=1)
        assert (answer["cancelled"], answer["lost"]) == ([], [])
    answer = await worker.report(done=[done(run, status="completed")])
    assert answer["done"][0]["outcome"] == "recorded"
    await wait_for_stage(http, nexus.url, "warm", request_id, "COMPLETED")


async def test_cancel_reaches_the_worker_holding_the_run(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    request_id = await submit(http, nexus, "warm")
    [run] = await worker.lease()
    answers: list[dict[str, Any]] = []

    async def renew() -> None:
        answers.append(await worker.report(holding=[done(run)], wait=15))

    with trio.fail_after(5):  # well before the 15 s wait: the cancel ends the long poll
        async with trio.open_nursery() as nursery:
            nursery.start_soon(renew)
            await trio.sleep(0.2)
            cancelled = await http.post(
                f"{nexus.url}/algorithm/v1/cancel/warm/requests/{request_id}",
                json={"initiator": "test", "reason": "no longer needed"},
            )
            assert cancelled.status_code == 200, cancelled.text
    assert answers[0]["cancelled"] == [request_id]
    await wait_for_stage(http, nexus.url, "warm", request_id, "CANCELLED")


async def test_a_released_run_goes_to_the_next_lease(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    request_id = await submit(http, nexus, "warm")
    [run] = await worker.lease()
    await worker.report(release=[done(run)])
    [again] = await worker.lease(wait=5)
    assert (again["requestId"], again["attempt"]) == (request_id, 2)


async def test_a_command_that_exits_without_reporting_fails_its_run(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    request_id = await submit(http, nexus, "warm")
    [run] = await worker.lease()
    answer = await worker.report(done=[done(run, status="exited", exitCode=3)])
    assert answer["done"][0]["outcome"] == "recorded"
    result = await wait_for_stage(http, nexus.url, "warm", request_id, "FAILED")
    assert "without reporting" in result["runErrorMessage"]


async def test_a_run_with_overrides_is_a_job(http: httpx.AsyncClient, nexus: Running) -> None:
    overrides = {"customConfiguration": {"runtimeEnvironment": {"deadlineSeconds": 60}}}
    request_id = await submit(http, nexus, "warm", **overrides)
    assert nexus.cluster is not None
    url = f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs/{request_id}"
    with trio.fail_after(10):
        while (await http.get(url)).status_code == 404:
            await trio.sleep(0.05)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max": 1}, "worker must be a name"),
        ({"worker": "w", "max": -1}, "max must be an integer >= 0"),
        ({"worker": "w", "wait": "soon"}, "wait must be a number >= 0"),
    ],
)
async def test_a_bad_lease_request_is_a_400_naming_the_field(
    http: httpx.AsyncClient, nexus: Running, worker: Worker, body: dict[str, Any], message: str
) -> None:
    response = await http.post(f"{worker.base}/lease", json=body, headers=worker.headers)
    assert response.status_code == 400
    assert message in response.text


async def test_a_bad_report_is_refused_whole(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    request_id = await submit(http, nexus, "warm")
    [run] = await worker.lease()
    body = {"worker": "w", "done": [done(run, status="completed"), {"requestId": "x"}]}
    response = await http.post(f"{worker.base}/report", json=body, headers=worker.headers)
    assert response.status_code == 400
    assert "done[].attempt of x" in response.text
    status = await http.get(f"{nexus.url}/algorithm/v1/results/warm/requests/{request_id}")
    assert status.json()["status"] == "RUNNING"


async def test_the_worker_api_needs_the_pool_token(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    body = {"worker": "w", "max": 1}
    response = await http.post(f"{worker.base}/lease", json=body)
    assert response.status_code == 403
    assert "pool token of warm" in response.text
    other = await pool_token(http, nexus, "warm")
    cold = await http.post(
        f"{nexus.url}/worker/v1/pools/cold/lease",
        json=body,
        headers={"Authorization": f"Bearer {other}"},
    )
    assert cold.status_code == 403  # the warm pool's token is no other algorithm's


async def test_an_algorithm_without_a_pool_is_a_404(
    http: httpx.AsyncClient, nexus: Running
) -> None:
    assert nexus.context.pools is not None
    assert nexus.context.pools.tokens is not None
    token = nexus.context.pools.tokens.pool_token("cold")
    response = await http.post(
        f"{nexus.url}/worker/v1/pools/cold/lease",
        json={"worker": "w"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 404
    assert "no warm pool" in response.text


async def test_the_pools_gauges_show_waiting_and_leased_runs(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    def gauge(text: str, name: str) -> float:
        line = next(
            line for line in text.splitlines() if line.startswith(f'{name}{{algorithm="warm"}}')
        )
        return float(line.rsplit(" ", 1)[1])

    await submit(http, nexus, "warm")
    await submit(http, nexus, "warm")
    waiting = (await http.get(f"{nexus.url}/metrics")).text
    assert gauge(waiting, "nexusd_pool_queued") == 2
    assert gauge(waiting, "nexusd_pool_oldest_age_seconds") > 0
    await worker.lease()
    leased = (await http.get(f"{nexus.url}/metrics")).text
    assert (gauge(leased, "nexusd_pool_queued"), gauge(leased, "nexusd_pool_leased")) == (1, 1)


async def test_a_report_sent_again_is_recorded_once(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    request_id = await submit(http, nexus, "warm")
    [run] = await worker.lease()
    item = done(run, status="failed", errorCause="ValueError", errorDetails="bad input")
    first = await worker.report(done=[item])
    again = await worker.report(done=[item])  # as after a lost answer
    assert (
        first["done"]
        == again["done"]
        == [{"requestId": request_id, "outcome": "recorded", "message": ""}]
    )
    result = await wait_for_stage(http, nexus.url, "warm", request_id, "FAILED")
    assert result["runErrorMessage"] == "ValueError"


async def test_waiting_runs_scale_the_pools_deployment_up(
    http: httpx.AsyncClient, nexus: Running, worker: Worker
) -> None:
    assert nexus.cluster is not None
    url = f"{nexus.cluster.url}/apis/apps/v1/namespaces/nexus/deployments/nexusd-pool-warm"
    assert (await http.get(url)).json()["spec"]["replicas"] == 0  # minWorkers, nothing waits
    for _ in range(5):  # more than one worker's concurrency (4): two workers (maxWorkers)
        await submit(http, nexus, "warm")
    with trio.fail_after(10):  # read from the store every warm.scale_interval (100 ms)
        while (await http.get(url)).json()["spec"]["replicas"] != 2:
            await trio.sleep(0.05)
