"""The served API versions over loopback: `v1.2`, `v1` and the unversioned latest answer the
same requests with the same status, content type and body, each stamped with its version in
the `Nexus-Api-Version` header; the experimental routes are only on latest; any other
version is a 404 naming the served ones.

Real: `nexusd dev` on loopback with SQLite and payload files, and the embedded cluster over HTTP
with its scripted kubelet. Nothing is faked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from nexusd.api.versions import HEADER, VERSIONS
from nexusd.devcluster import ANNOTATION_DURATION
from tests.conftest import StartNexus, template, wait_for_stage, write_manifests

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running

TAG = "versions/tag"


@pytest.fixture
async def nexus(start_nexus: StartNexus, tmp_path: Path) -> Running:
    manifests = write_manifests(
        tmp_path / "manifests", template("slow", annotations={ANNOTATION_DURATION: "60"})
    )
    return await start_nexus(**{"dev.manifests": str(manifests)})


@pytest.fixture
async def dry_run(nexus: Running, http: httpx.AsyncClient) -> str:
    """A dry run: COMPLETED at once, so nothing changes it while the versions are compared."""
    response = await http.post(
        f"{nexus.url}/algorithm/v1/run/slow",
        params={"dryRun": "true"},
        json={"algorithmParameters": {"x": 1}, "tag": TAG},
    )
    assert response.status_code == 202, response.text
    request_id = str(response.json()["requestId"])
    await wait_for_stage(http, nexus.url, "slow", request_id, "COMPLETED")
    return request_id


#: (method, path after the version prefix, JSON body or raw bytes, status): `{id}` is the dry
#: run.
CASES: dict[str, tuple[str, str, Any, int]] = {
    "result": ("GET", "/results/slow/requests/{id}", None, 200),
    "metadata": ("GET", "/metadata/slow/requests/{id}", None, 200),
    "tagged": ("GET", f"/results/tags/{TAG}", None, 200),
    "buffer": ("GET", "/buffer/slow/requests/{id}", None, 200),
    "payload": ("GET", "/payload/slow/requests/{id}", None, 302),
    "unknown result": ("GET", "/results/slow/requests/nope", None, 400),
    "unknown metadata": ("GET", "/metadata/slow/requests/nope", None, 400),
    "unknown buffer": ("GET", "/buffer/slow/requests/nope", None, 400),
    "bad run body": ("POST", "/run/slow", b'{"algorithmParameters": ', 400),
    "unknown algorithm": ("POST", "/run/nope", {"algorithmParameters": {}}, 400),
    "bad dryRun": ("POST", "/run/slow?dryRun=maybe", {"algorithmParameters": {}}, 400),
    "cancel unknown": ("POST", "/cancel/slow/requests/nope", {}, 404),
    "cancel bad policy": ("POST", "/cancel/slow/requests/{id}", {"cancellationPolicy": "x"}, 400),
    "re-tag unknown": ("POST", "/metadata/tags/slow/requests/nope", {"newTag": "t"}, 404),
    "re-tag without tag": ("POST", "/metadata/tags/slow/requests/{id}", {}, 400),
    "wrong method": ("GET", "/run/slow", None, 405),
}


#: The receiver's routes, sent to the running run's receiver URL (which carries its completion
#: token): `{id}` is that run.
RECEIVER_CASES: dict[str, tuple[str, str, Any, int]] = {
    "check": ("GET", "/check/slow/requests/{id}", None, 200),
    "complete bad body": ("POST", "/complete/slow/requests/{id}", b"[]", 400),
    "complete bad field": ("POST", "/complete/slow/requests/{id}", {"resultUri": 5}, 400),
}


async def receiver_url(nexus: Running, http: httpx.AsyncClient, request_id: str) -> str:
    """The receiver base URL the run's pod was given (NEXUS__CLIENT__RECEIVER of its Job)."""
    assert nexus.cluster is not None
    job = await http.get(f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs/{request_id}")
    assert job.status_code == 200, job.text
    (container,) = job.json()["spec"]["template"]["spec"]["containers"]
    return next(e["value"] for e in container["env"] if e["name"] == "NEXUS__CLIENT__RECEIVER")


@pytest.fixture
async def running(nexus: Running, http: httpx.AsyncClient) -> tuple[str, str]:
    """A run whose pod runs for a minute: its id and the receiver URL its pod was given."""
    response = await http.post(
        f"{nexus.url}/algorithm/v1/run/slow", json={"algorithmParameters": {}}
    )
    request_id = str(response.json()["requestId"])
    await wait_for_stage(http, nexus.url, "slow", request_id, "RUNNING")
    return request_id, await receiver_url(nexus, http, request_id)


async def send(
    http: httpx.AsyncClient, url: str, method: str, path: str, body: Any
) -> httpx.Response:
    if body is None:
        return await http.request(method, url + path)
    if isinstance(body, bytes):
        return await http.request(method, url + path, content=body)
    return await http.request(method, url + path, json=body)


async def answers_alike(
    http: httpx.AsyncClient, url: str, case: tuple[str, str, Any, int], request_id: str
) -> None:
    method, path, body, status = case
    answers = {}
    for version in VERSIONS:
        response = await send(http, url, method, version.prefix + path.format(id=request_id), body)
        if status != 405:  # werkzeug's, before any route (and version)
            assert response.headers[HEADER] == version.name
        answers[version.name] = (
            response.status_code,
            response.headers["Content-Type"],
            response.headers.get("Location"),
            response.content,
        )
    assert len(set(answers.values())) == 1, answers
    assert answers["v1"][0] == status, answers["v1"]


@pytest.mark.parametrize("case", list(CASES))
async def test_every_version_answers_alike(
    nexus: Running, http: httpx.AsyncClient, dry_run: str, case: str
) -> None:
    await answers_alike(http, nexus.url, CASES[case], dry_run)


@pytest.mark.parametrize("case", list(RECEIVER_CASES))
async def test_every_version_of_the_receiver_answers_alike(
    http: httpx.AsyncClient, running: tuple[str, str], case: str
) -> None:
    request_id, receiver = running
    await answers_alike(http, receiver, RECEIVER_CASES[case], request_id)


async def test_a_run_is_accepted_alike_under_every_version(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    for version in VERSIONS:
        response = await http.post(
            f"{nexus.url}{version.prefix}/run/slow", json={"algorithmParameters": {}}
        )
        assert response.status_code == 202, response.text
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers[HEADER] == version.name
        assert list(response.json()) == ["requestId"]  # nothing else in the body (§0.1)


async def test_the_old_receiver_client_completes_under_v1_2(
    nexus: Running, http: httpx.AsyncClient, running: tuple[str, str]
) -> None:
    request_id, receiver = running
    completed = await http.post(
        f"{receiver}/algorithm/v1.2/complete/slow/requests/{request_id}",
        json={"resultUri": "https://results.test/r.json", "errorCause": "", "errorDetails": ""},
    )
    assert (completed.status_code, completed.json()) == (202, {})
    result = await wait_for_stage(http, nexus.url, "slow", request_id, "COMPLETED")
    assert result["resultUri"] == "https://results.test/r.json"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/algorithm/v1.0/run/hello"),
        ("GET", "/algorithm/v1.0/results/hello/requests/x"),
        ("POST", "/algorithm/v1.0/complete/hello/requests/x"),
        ("GET", "/algorithm/v9/results/tags/t"),
        ("GET", "/algorithm/v2"),
        ("DELETE", "/algorithm/v1.3.1/"),
    ],
)
async def test_an_unsupported_version_is_a_404_naming_the_served_ones(
    nexus: Running, http: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await http.request(method, nexus.url + path, json={"algorithmParameters": {}})
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    version = path.split("/")[2]
    assert response.text.startswith(f"API version {version} is not served.")
    for served in VERSIONS:
        assert f"{served.prefix} ({served.name})" in response.text


async def test_version_like_segments_do_not_shadow_latest_routes(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    tagged = await http.get(f"{nexus.url}/algorithm/results/tags/v1.0")
    assert (tagged.status_code, tagged.json()) == (200, [])
    assert tagged.headers[HEADER] == "latest"
    unknown = await http.get(f"{nexus.url}/algorithm/v1/results/v9/requests/v1.0")
    assert (unknown.status_code, unknown.headers[HEADER]) == (400, "v1")


async def test_the_experimental_routes_are_only_on_latest(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    batch = [{"algorithmParameters": {}}]
    for version in VERSIONS:
        response = await http.post(f"{nexus.url}{version.prefix}/batch/slow", json=batch)
        expected = 202 if version.experimental else 404
        assert response.status_code == expected, (version, response.text)
