"""Bad input to `POST /algorithm/v1/run/{alg}` and the receiver's `complete`, as a new user
would send it: every problem is a 4xx text/plain answer naming the field (400; 413 for a body
over the limit), never a 5xx and never a 202 for a run that can only fail later; and after a
400 nothing was stored.

Real: `nexusd dev` on loopback with SQLite and payload files, and the embedded cluster over HTTP
with its scripted kubelet. Nothing is faked. The property test drives one `nexusd dev` from
Hypothesis, which runs in a worker thread and sends each example's requests through this
test's trio loop (`trio.from_thread.run`), so the whole property shares one server.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import apsw
import attrs
import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings

from nexusd.core.errors import KubeNotFound
from nexusd.devcluster import ANNOTATION_DURATION
from nexusd.kube.client import JOBS, KubeClient
from nexusd.kube.credentials import load_credentials
from tests.conftest import StartNexus, template, wait_for_stage, write_manifests

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running

RUN = "/algorithm/v1/run"
TAG = "bad-input-case"
INVALID = "Algorithm payload is invalid: "
ENV = "customConfiguration.runtimeEnvironment.environmentVariables"


@pytest.fixture
async def nexus(start_nexus: StartNexus, tmp_path: Path) -> Running:
    manifests = write_manifests(
        tmp_path / "manifests",
        template(
            "slow",
            runtimeEnvironment={
                "maximumRetries": 0,
                "annotations": {ANNOTATION_DURATION: "60"},
                "environmentVariables": [{"name": "MODE", "value": "template"}],
            },
        ),
        template("quick"),  # its pods exit 0 at once
    )
    return await start_nexus(**{"dev.manifests": str(manifests)})


def stored_runs(tmp_path: Path) -> int:
    """Checkpoints in the SQLite file of the `start_nexus` fixture, read by a second client.

    Through apsw, the store's own copy of SQLite: the stdlib's sqlite3 is a second copy in the
    same process, and closing its file releases the POSIX locks the store's copy holds on the
    same file (SQLite's "multiple copies of SQLite" hazard: the WAL index was re-initialised
    under the store, which died of SIGBUS)."""
    path = tmp_path / "data" / "checkpoints.sqlite3"
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        count: int = connection.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    finally:
        connection.close()
    return count


def run_body(**fields: Any) -> bytes:
    """A run body carrying the case's tag (so "nothing stored" can be read back by tag)."""
    return json.dumps({"algorithmParameters": {}, "tag": TAG, **fields}).encode()


def overrides(**sections: Any) -> bytes:
    return run_body(customConfiguration=sections)


def env(*items: Any) -> bytes:
    return overrides(runtimeEnvironment={"environmentVariables": list(items)})


def nested(depth: int, kind: str = "{") -> bytes:
    """A JSON value `depth` levels deep, without recursion."""
    if kind == "{":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"]" * depth


def _raw_body(field: str, raw: bytes) -> bytes:
    if field == "algorithmParameters":
        return b'{"tag": "' + TAG.encode() + b'", "algorithmParameters": ' + raw + b"}"
    head = b'{"algorithmParameters": {}, "tag": "' + TAG.encode() + b'", "'
    return head + field.encode() + b'": ' + raw + b"}"


def _surrogate(field: str) -> bytes:
    """A body whose string `field` is the JSON escape of a lone UTF-16 surrogate."""
    return _raw_body(field, b'"\\ud800"')


# (body, query, status, fragments of the answer)
BAD_RUNS = [
    # --- the known cases of issue 9 --------------------------------------------------------
    pytest.param(
        overrides(computeResources={"cpuLimit": "1e400"}),
        {},
        400,
        ["customConfiguration.computeResources.cpuLimit: '1e400'", "not a usable CPU quantity"],
        id="cpuLimit-string-1e400",
    ),
    pytest.param(
        _raw_body("customConfiguration", b'{"computeResources": {"cpuLimit": 1e400}}'),
        {},
        400,
        ["customConfiguration.computeResources.cpuLimit", "not a usable CPU quantity"],
        id="cpuLimit-number-1e400",
    ),
    pytest.param(
        overrides(computeResources={"limits": {"cpu": "1e400", "memory": "1Gi"}}),
        {},
        400,
        ["customConfiguration.computeResources.limits.cpu: '1e400'"],
        id="limits.cpu-1e400",
    ),
    pytest.param(
        overrides(computeResources={"memoryLimit": "9" * 100_000}),
        {},
        400,
        ["customConfiguration.computeResources.memoryLimit: '999", "not a usable memory"],
        id="memoryLimit-100k-digits",
    ),
    pytest.param(
        run_body(payloadValidFor="99999999999999999999h"),
        {},
        400,
        ["payloadValidFor '99999999999999999999h'"],
        id="payloadValidFor-overflow",
    ),
    pytest.param(
        _raw_body("algorithmParameters", nested(5000)),
        {},
        400,
        [INVALID + "algorithmParameters nests too deeply to be parsed"],
        id="algorithmParameters-5000-deep-objects",
    ),
    pytest.param(
        _raw_body("algorithmParameters", b'{"a": ' + nested(5000, "[") + b"}"),
        {},
        400,
        [INVALID + "algorithmParameters nests too deeply to be parsed"],
        id="algorithmParameters-5000-deep-lists",
    ),
    pytest.param(
        _raw_body("customConfiguration", b'{"container": ' + nested(5000) + b"}"),
        {},
        400,
        [INVALID + "customConfiguration nests too deeply to be parsed"],
        id="customConfiguration-5000-deep",
    ),
    pytest.param(
        _raw_body("customConfiguration", nested(40)),
        {},
        400,
        ["customConfiguration: nested more than 32 levels deep"],
        id="customConfiguration-40-deep",
    ),
    pytest.param(
        _raw_body("tag", nested(5000, "[")),
        {},
        400,
        [INVALID + "tag nests too deeply to be parsed"],
        id="tag-5000-deep",
    ),
    pytest.param(
        _raw_body("algorithmParameters", b'{"x": NaN}'),
        {},
        400,
        [INVALID + "algorithmParameters is not valid JSON: NaN is not a JSON value"],
        id="NaN-in-algorithmParameters",
    ),
    pytest.param(
        _raw_body("tag", b"Infinity"),
        {},
        400,
        [INVALID + "tag is not valid JSON: Infinity is not a JSON value"],
        id="Infinity-as-tag",
    ),
    pytest.param(
        _raw_body("customConfiguration", b'{"runtimeEnvironment": {"deadlineSeconds": -Infinity}}'),
        {},
        400,
        [INVALID + "customConfiguration is not valid JSON: -Infinity is not a JSON value"],
        id="-Infinity-in-customConfiguration",
    ),
    pytest.param(
        _raw_body("algorithmParameters", b'{"x": [1, {"y": [NaN]}]}'),
        {},
        400,
        ["NaN is not a JSON value"],
        id="NaN-deep-in-algorithmParameters",
    ),
    pytest.param(
        overrides(runtimeEnvironment={"deadlineSeconds": 0}),
        {},
        400,
        ["customConfiguration.runtimeEnvironment.deadlineSeconds: 0 must be a positive integer"],
        id="deadlineSeconds-0",
    ),
    pytest.param(
        overrides(runtimeEnvironment={"deadlineSeconds": "60"}),
        {},
        400,
        ["customConfiguration.runtimeEnvironment.deadlineSeconds: '60' must be"],
        id="deadlineSeconds-string",
    ),
    pytest.param(
        overrides(runtimeEnvironment={"deadlineSeconds": 60.0}),
        {},
        400,
        ["deadlineSeconds: 60.0 must be", "written without a fraction: 60"],
        id="deadlineSeconds-60.0",
    ),
    pytest.param(
        _raw_body("customConfiguration", b'{"runtimeEnvironment": {"deadlineSeconds": 1e400}}'),
        {},
        400,
        ["customConfiguration.runtimeEnvironment.deadlineSeconds: inf must be"],
        id="deadlineSeconds-1e400",
    ),
    pytest.param(
        overrides(runtimeEnvironment={"maximumRetries": -1}),
        {},
        400,
        ["customConfiguration.runtimeEnvironment.maximumRetries: -1 must be an integer from 0"],
        id="maximumRetries-negative",
    ),
    pytest.param(run_body(), {"dryRun": "yes"}, 400, ["dryRun", "'yes'"], id="dryRun-yes"),
    pytest.param(run_body(), {"dryRun": "on"}, 400, ["dryRun", "'on'"], id="dryRun-on"),
    # --- environment variable overrides --------------------------------------------------
    pytest.param(
        env({"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
        {},
        400,
        [f"{ENV}[0].valueFrom: a run cannot read the namespace's Secrets or ConfigMaps"],
        id="env-valueFrom",
    ),
    pytest.param(
        env({"name": "OK", "value": "1"}, {"name": "NEXUS__SHARD_NAME", "value": "other"}),
        {},
        400,
        [f"{ENV}[1].name: NEXUS__SHARD_NAME is set by nexusd on every Job"],
        id="env-reserved-NEXUS__SHARD_NAME",
    ),
    pytest.param(
        env({"name": "NEXUS__RESULT_UPLOAD_URL", "value": "https://evil.test"}),
        {},
        400,
        [f"{ENV}[0].name: NEXUS__RESULT_UPLOAD_URL is set by nexusd"],
        id="env-reserved-NEXUS__RESULT_UPLOAD_URL",
    ),
    pytest.param(
        env({"name": "1BAD", "value": "x"}),
        {},
        400,
        [f"{ENV}[0].name: '1BAD' is not an environment variable name"],
        id="env-name-starts-with-digit",
    ),
    pytest.param(
        env({"name": "A=B", "value": "x"}),
        {},
        400,
        [f"{ENV}[0].name: 'A=B' is not an environment variable name"],
        id="env-name-with-equals",
    ),
    pytest.param(
        env({"name": "ÄPFEL", "value": "x"}),
        {},
        400,
        [f"{ENV}[0].name: 'ÄPFEL' is not an environment variable name"],
        id="env-name-non-ascii",
    ),
    pytest.param(
        env({"value": "x"}), {}, 400, [f"{ENV}[0].name is required"], id="env-name-missing"
    ),
    pytest.param(
        env({"name": 7, "value": "x"}), {}, 400, [f"{ENV}[0].name: must be a string"], id="env-7"
    ),
    pytest.param(
        env({"name": "A", "value": 1}), {}, 400, [f"{ENV}[0].value: must be a string"], id="val-1"
    ),
    pytest.param(
        env({"name": "A", "value": "a\x00b"}),
        {},
        400,
        [f"{ENV}[0].value: must not contain NUL characters"],
        id="env-value-NUL",
    ),
    pytest.param(
        env({"name": "A", "value": "1"}, {"name": "A", "value": "2"}),
        {},
        400,
        [f"{ENV}[1].name: 'A' is already given at [0]"],
        id="env-duplicate",
    ),
    pytest.param(
        overrides(runtimeEnvironment={"environmentVariables": {"A": "1"}}),
        {},
        400,
        [f"{ENV}: must be a list of"],
        id="env-as-map",
    ),
    pytest.param(env("A=1"), {}, 400, [f"{ENV}[0]: must be an object"], id="env-item-string"),
    # --- bodies that are not a run -------------------------------------------------------
    pytest.param(b"{not json", {}, 400, [INVALID + "body is not valid JSON"], id="not-json"),
    pytest.param(b"", {}, 400, [INVALID + "body is not valid JSON"], id="empty"),
    pytest.param(b"   \n", {}, 400, [INVALID + "body is not valid JSON"], id="whitespace"),
    pytest.param(
        b'{"algorithmParameters": {"x": "\xff\xfe"}}',
        {},
        400,
        [INVALID + "body is not valid JSON: not UTF-8"],
        id="not-utf8",
    ),
    pytest.param(
        '{"algorithmParameters": {}}'.encode("utf-16"),
        {},
        400,
        [INVALID + "body is not valid JSON: not UTF-8"],
        id="utf16",
    ),
    pytest.param(
        b'[{"algorithmParameters": {}}]',
        {},
        400,
        [INVALID + "body must be a JSON object"],
        id="arr",
    ),
    pytest.param(b'"run"', {}, 400, [INVALID + "body must be a JSON object"], id="json-string"),
    pytest.param(b"null", {}, 400, [INVALID + "body must be a JSON object"], id="json-null"),
    pytest.param(b"42", {}, 400, [INVALID + "body must be a JSON object"], id="json-number"),
    pytest.param(
        run_body() + b" {}", {}, 400, [INVALID + "body is not valid JSON: extra data"], id="extra"
    ),
    pytest.param(
        json.dumps({"tag": TAG}).encode(),
        {},
        400,
        [INVALID + "algorithmParameters is required"],
        id="no-algorithmParameters",
    ),
    pytest.param(
        _raw_body("algorithmParameters", b"null"),
        {},
        400,
        [INVALID + "algorithmParameters is required"],
        id="algorithmParameters-null",
    ),
    pytest.param(
        _raw_body("algorithmParameters", b'"x"'),
        {},
        400,
        [INVALID + "algorithmParameters must be a JSON object"],
        id="algorithmParameters-string",
    ),
    # --- wrong types of the other fields -------------------------------------------------
    pytest.param(
        run_body(customConfiguration="big"),
        {},
        400,
        [INVALID + "customConfiguration must be a JSON object"],
        id="customConfiguration-string",
    ),
    pytest.param(
        overrides(computeResources=["1", "2Gi"]),
        {},
        400,
        ["customConfiguration.computeResources: must be an object"],
        id="computeResources-list",
    ),
    pytest.param(
        overrides(computeResources={"limits": {"cpu": "2 cores"}}),
        {},
        400,
        ["customConfiguration.computeResources.limits.cpu: '2 cores' is not a Kubernetes quantity"],
        id="limits.cpu-words",
    ),
    pytest.param(
        overrides(computeResources={"requests": {"gpu": "1"}}),
        {},
        400,
        ["customConfiguration.computeResources.requests.gpu: not a container resource"],
        id="requests-unknown-resource",
    ),
    pytest.param(
        overrides(computeResources={"memoryLimit": "0"}),
        {},
        400,
        ["customConfiguration.computeResources.memoryLimit: '0'", "a limit of 0 is no limit"],
        id="memoryLimit-0",
    ),
    pytest.param(
        overrides(container={"versionTag": "1.0 beta"}),
        {},
        400,
        ["customConfiguration.container.versionTag: '1.0 beta' must be up to 128 letters"],
        id="versionTag-whitespace",
    ),
    pytest.param(
        overrides(container={"image": 5}),
        {},
        400,
        ["customConfiguration.container.image: must be a string"],
        id="image-number",
    ),
    pytest.param(
        overrides(workgroupRef={"name": ["default"]}),
        {},
        400,
        ["customConfiguration.workgroupRef.name: must be a string"],
        id="workgroupRef.name-list",
    ),
    pytest.param(
        run_body(requestApiVersion=1.2),
        {},
        400,
        [INVALID + "requestApiVersion must be a string"],
        id="requestApiVersion-number",
    ),
    pytest.param(
        _raw_body("tag", b'{"name": "x"}'),
        {},
        400,
        [INVALID + "tag must be a string"],
        id="tag-obj",
    ),
    pytest.param(
        run_body(parentRequest="parent-1"),
        {},
        400,
        [INVALID + "parentRequest must be a JSON object"],
        id="parentRequest-string",
    ),
    pytest.param(
        run_body(parentRequest={"algorithmName": "slow"}),
        {},
        400,
        [INVALID + "parentRequest.requestId is required"],
        id="parentRequest-without-id",
    ),
    pytest.param(
        run_body(parentRequest={"requestId": "not-running", "algorithmName": "slow"}),
        {},
        400,
        ["Parent request slow/not-running has no running Job"],
        id="parentRequest-not-running",
    ),
    pytest.param(
        run_body(payloadValidFor="6 hours"),
        {},
        400,
        [INVALID + "payloadValidFor '6 hours' is not a duration"],
        id="payloadValidFor-words",
    ),
    pytest.param(
        run_body(payloadValidFor=3600),
        {},
        400,
        [INVALID + "payloadValidFor must be a string"],
        id="payloadValidFor-number",
    ),
    pytest.param(
        run_body(payloadValidFor="-1h"),
        {},
        400,
        [INVALID + "payloadValidFor '-1h' must be positive"],
        id="payloadValidFor-negative",
    ),
    # --- defects found here (reported to the lead) ---------------------------------------
    pytest.param(
        _raw_body("algorithmParameters", b'{"x": NaN}'),
        {},
        400,
        ["algorithmParameters"],
        id="NaN-message-names-its-field",
    ),
    pytest.param(
        _raw_body("algorithmParameters", b'{"x": ' + b"9" * 5000 + b"}"),
        {},
        400,
        ["algorithmParameters"],
        id="5000-digit-integer-message-names-its-field",
    ),
    pytest.param(
        run_body(payloadValidFor="1" * 1_000_000 + "h"),
        {},
        400,
        ["payloadValidFor is longer than 4096 characters"],
        id="payloadValidFor-1MB-is-not-echoed",
    ),
    pytest.param(
        _surrogate("tag"),
        {},
        400,
        ["tag"],
        id="tag-surrogate",
    ),
    pytest.param(
        _surrogate("requestApiVersion"),
        {},
        400,
        ["requestApiVersion"],
        id="requestApiVersion-surrogate",
    ),
    pytest.param(
        _raw_body("customConfiguration", b'{"container": {"versionTag": "\\ud800"}}'),
        {},
        400,
        ["customConfiguration holds an unpaired UTF-16 surrogate escape"],
        id="versionTag-surrogate",
    ),
    pytest.param(
        _raw_body(
            "customConfiguration",
            b'{"runtimeEnvironment": {"environmentVariables": '
            b'[{"name": "A", "value": "\\udfff"}]}}',
        ),
        {},
        400,
        ["customConfiguration holds an unpaired UTF-16 surrogate escape"],
        id="env-value-surrogate",
    ),
    pytest.param(
        _raw_body("parentRequest", b'{"requestId": "p", "algorithmName": "\\ud800"}'),
        {},
        400,
        ["parentRequest holds an unpaired UTF-16 surrogate escape"],
        id="parentRequest.algorithmName-surrogate",
    ),
    pytest.param(
        run_body(parentRequest={"requestId": "x/..", "algorithmName": "slow"}),
        {},
        400,
        ["parentRequest.requestId"],
        id="parentRequest.requestId-dot-segment",
    ),
    pytest.param(
        run_body(parentRequest={"requestId": "?limit=1", "algorithmName": "slow"}),
        {},
        400,
        ["parentRequest.requestId"],
        id="parentRequest.requestId-query",
    ),
    pytest.param(
        overrides(container={"image": "MyModel"}),
        {},
        400,
        ["customConfiguration.container.image"],
        id="image-uppercase",
    ),
    pytest.param(
        overrides(container={"versionTag": "v1!"}),
        {},
        400,
        ["customConfiguration.container.versionTag"],
        id="versionTag-invalid-character",
    ),
    pytest.param(
        overrides(computeResources={"requests": {"cpu": "4"}, "limits": {"cpu": "1"}}),
        {},
        400,
        ["computeResources: the cpu request 4 is above its limit 1"],
        id="requests-above-limits",
    ),
    pytest.param(
        env({"name": "BLOB", "value": "x" * 2_000_000}),
        {},
        413,
        ["The run's Job would be", "bytes, more than the 1400000"],
        id="job-over-the-etcd-limit",
    ),
    pytest.param(
        run_body(tag="t" * 100_000),
        {},
        400,
        ["tag"],
        id="tag-too-long-to-look-up",
    ),
]


@pytest.mark.parametrize(("body", "query", "status", "fragments"), BAD_RUNS)
async def test_bad_run_is_refused_naming_the_field(
    nexus: Running,
    http: httpx.AsyncClient,
    tmp_path: Path,
    body: bytes,
    query: dict[str, str],
    status: int,
    fragments: list[str],
) -> None:
    response = await http.post(
        f"{nexus.url}{RUN}/slow",
        content=body,
        params=query,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("text/plain")
    for fragment in fragments:
        assert fragment in response.text
    assert len(response.text) < 2000  # the client's value is shown shortened, not echoed
    tagged = await http.get(f"{nexus.url}/algorithm/v1/results/tags/{TAG}")
    assert tagged.json() == []
    assert stored_runs(tmp_path) == 0


async def test_unknown_algorithm_is_400_and_stores_nothing(
    nexus: Running, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    response = await http.post(f"{nexus.url}{RUN}/no-such-algorithm", content=run_body())
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("No valid configuration found for: no-such-algorithm.")
    assert (await http.get(f"{nexus.url}/algorithm/v1/results/tags/{TAG}")).json() == []
    assert stored_runs(tmp_path) == 0


async def test_a_body_over_the_limit_is_413_and_stores_nothing(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    nexus = await start_nexus(**{"http.max_payload_size": "1Mi"})
    response = await http.post(f"{nexus.url}{RUN}/hello", content=run_body(x="y" * 2**21))
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/plain")
    assert "limit of 1048576 bytes" in response.text
    assert stored_runs(tmp_path) == 0


async def test_a_huge_string_parameter_under_the_limit_is_data(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    """Strings in `algorithmParameters` are the algorithm's business: 8 MiB is accepted."""
    blob = "x" * 2**23
    response = await http.post(f"{nexus.url}{RUN}/slow", json={"algorithmParameters": {"b": blob}})
    assert response.status_code == 202, response.text[:500]
    request_id = response.json()["requestId"]
    redirect = await http.get(f"{nexus.url}/algorithm/v1/payload/slow/requests/{request_id}")
    served = await http.get(redirect.headers["location"])
    assert json.loads(served.content) == {"b": blob}
    await wait_for_stage(http, nexus.url, "slow", request_id, "RUNNING")


@pytest.mark.parametrize(
    ("query", "dry"),
    [
        ({"dryRun": "true"}, True),
        ({"dryRun": "1"}, True),
        ({"dryRun": "True"}, True),
        ({"dryRun": "false"}, False),
        ({"dryRun": "0"}, False),
        ({"dryRun": ""}, False),
        ({}, False),
    ],
)
async def test_dry_run_spellings(
    nexus: Running, http: httpx.AsyncClient, query: dict[str, str], dry: bool
) -> None:
    response = await http.post(
        f"{nexus.url}{RUN}/slow", json={"algorithmParameters": {}}, params=query
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    metadata = await http.get(f"{nexus.url}/algorithm/v1/metadata/slow/requests/{request_id}")
    assert nexus.cluster is not None
    job_url = f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs/{request_id}"
    if dry:
        first = await http.get(f"{nexus.url}/algorithm/v1/results/slow/requests/{request_id}")
        assert first.json()["status"] == "COMPLETED"
        assert metadata.json()["job_uid"] == "dry-run"
        assert (await http.get(job_url)).status_code == 404
    else:
        await wait_for_stage(http, nexus.url, "slow", request_id, "RUNNING")
        assert (await http.get(job_url)).status_code == 200


def _container_env(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    env_list: list[dict[str, Any]] = manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    return env_list


async def test_a_valid_env_override_is_applied_to_the_job(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    variables = [
        {"name": "MODE", "value": "run"},  # replaces the template's, where it stands
        {"name": "my.setting-1", "value": "42"},
        {"name": "EMPTY"},  # no value: the empty string, as Kubernetes reads it
        {"name": "UNICODE", "value": "grüße ✓"},
    ]
    body = {
        "algorithmParameters": {},
        "customConfiguration": {"runtimeEnvironment": {"environmentVariables": variables}},
    }
    response = await http.post(f"{nexus.url}{RUN}/slow", json=body)
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    buffered = await http.get(f"{nexus.url}/algorithm/v1/buffer/slow/requests/{request_id}")
    assert buffered.headers["content-type"].startswith("text/plain")
    values = {item["name"]: item.get("value") for item in _container_env(json.loads(buffered.text))}
    assert values["MODE"] == "run"
    assert values["my.setting-1"] == "42"
    assert values["EMPTY"] == ""
    assert values["UNICODE"] == "grüße ✓"
    assert values["NEXUS__SHARD_NAME"] == "dev"  # nexusd's own are still there
    names = [item["name"] for item in _container_env(json.loads(buffered.text))]
    assert names.count("MODE") == 1
    # and the Job the cluster runs has them
    await wait_for_stage(http, nexus.url, "slow", request_id, "RUNNING")
    assert nexus.cluster is not None
    job = await http.get(f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs/{request_id}")
    created = {item["name"]: item.get("value", "") for item in _container_env(job.json())}
    assert created["MODE"] == "run"
    assert created["my.setting-1"] == "42"


async def test_a_memory_limit_in_exponent_form_runs(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    body = {
        "algorithmParameters": {},
        "customConfiguration": {"computeResources": {"memoryLimit": "1e9"}},
    }
    response = await http.post(f"{nexus.url}{RUN}/slow", json=body)
    assert response.status_code == 202
    await wait_for_stage(http, nexus.url, "slow", response.json()["requestId"], "RUNNING")
    await trio.sleep(1)  # the embedded scheduler has placed the pod by now
    assert (await http.get(f"{nexus.url}/readyz")).status_code == 200


# --- the receiver's complete -------------------------------------------------------------


async def test_bad_completion_bodies_are_400_and_change_nothing(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    response = await http.post(f"{nexus.url}{RUN}/slow", json={"algorithmParameters": {}})
    request_id = response.json()["requestId"]
    await wait_for_stage(http, nexus.url, "slow", request_id, "RUNNING")
    assert nexus.cluster is not None  # report as the pod would: to its receiver URL
    job = await http.get(f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs/{request_id}")
    env = {
        e["name"]: e["value"]
        for e in job.json()["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    receiver = env["NEXUS__CLIENT__RECEIVER"]
    complete = f"{receiver}/algorithm/v1/complete/slow/requests/{request_id}"
    for body, message in [
        (nested(5000), "Submitted result is invalid: a nests too deeply to be parsed"),
        (nested(5000, "["), "Submitted result is invalid: body nests too deeply to be parsed"),
        (
            b'{"resultUri": "", "errorCause": "", "errorDetails": ' + nested(5000) + b"}",
            "Submitted result is invalid: errorDetails nests too deeply to be parsed",
        ),
        (
            b'{"resultUri": "", "errorCause": NaN}',
            "Submitted result is invalid: errorCause is not valid JSON: NaN is not a JSON value",
        ),
        (b"", "Submitted result is invalid: body is not valid JSON"),
        (b"\xff", "Submitted result is invalid: body is not valid JSON: not UTF-8"),
        (b"[]", "Submitted result is invalid: body must be a JSON object"),
        (b'{"resultUri": 5}', "Submitted result is invalid: resultUri must be a string"),
    ]:
        answer = await http.post(complete, content=body)
        assert answer.status_code == 400, (body[:60], answer.text[:300])
        assert answer.headers["content-type"].startswith("text/plain")
        assert message in answer.text, (body[:60], answer.text[:300])
        # nothing was recorded: the run still waits for its report
        check = await http.get(f"{receiver}/algorithm/v1/check/slow/requests/{request_id}")
        assert check.json() == {"is_processed": False}
    done = await http.post(complete, json={"resultUri": "", "errorCause": "", "errorDetails": ""})
    assert done.status_code == 202
    await wait_for_stage(http, nexus.url, "slow", request_id, "COMPLETED")


async def test_a_completion_with_a_lone_surrogate_is_400(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    response = await http.post(f"{nexus.url}{RUN}/slow", json={"algorithmParameters": {}})
    request_id = response.json()["requestId"]
    answer = await http.post(
        f"{nexus.url}/algorithm/v1/complete/slow/requests/{request_id}",
        content=b'{"resultUri": "", "errorCause": "\\ud800", "errorDetails": ""}',
    )
    assert answer.status_code == 400
    assert "errorCause" in answer.text


async def test_a_tag_with_a_slash_can_be_looked_up(nexus: Running, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{nexus.url}{RUN}/slow", json={"algorithmParameters": {}, "tag": "team/batch-1"}
    )
    assert response.status_code == 202
    tagged = await http.get(f"{nexus.url}/algorithm/v1/results/tags/team%2Fbatch-1")
    assert tagged.status_code == 200
    assert [item["requestId"] for item in tagged.json()] == [response.json()["requestId"]]


# --- property: any body is accepted into a run that starts, or refused with a 4xx -----------


@attrs.frozen
class Raw:
    """JSON text put into a body as is: what `json.dumps` would never write."""

    text: str


@attrs.frozen
class Deep:
    depth: int
    kind: str


def encode(value: Any) -> str:
    """JSON text of generated values, with `Raw` and `Deep` written as they say. Not
    recursive in `Deep` (thousands of levels), recursive in the small generated structure."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Deep):
        return nested(value.depth, value.kind).decode()
    if isinstance(value, dict):
        members = (f"{json.dumps(key)}: {encode(item)}" for key, item in value.items())
        return "{" + ", ".join(members) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(encode(item) for item in value) + "]"
    return json.dumps(value)  # NaN and ±Infinity for float nan/inf: bad input on purpose


# The odd values include every defect the table above was written for (lone surrogates,
# names that are paths, invalid image references, requests above limits, Jobs over 1.5 MiB,
# quantities in exponent form): the property must keep finding none of them.
_raw_tokens = st.sampled_from(
    [
        "1e400",
        "-1e400",
        "1e-400",
        "NaN",
        "Infinity",
        "-Infinity",
        "9" * 5000,
        "-0",
        "1E+2",
        '"\\ud800"',
        '"\\udfff x"',
        '"\\ud83d\\ude00"',
    ]
).map(Raw)
_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
#: valid JSON of any shape (unicode, large numbers), a few levels deep
_json = st.recursive(
    _json_leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
#: anything: wrong types, NaN and ±Infinity, numbers beyond any range, thousands of levels
_wild = st.recursive(
    _json_leaves | st.integers() | st.floats() | _raw_tokens,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
) | st.builds(Deep, st.integers(1, 6000), st.sampled_from(["{", "["]))


def mostly(
    valid: st.SearchStrategy[Any], *odd: st.SearchStrategy[Any], wild: bool = True
) -> st.SearchStrategy[Any]:
    """`valid` six times in seven, else one of `odd` (or a wild value, unless `wild=False`)."""
    other = st.one_of(*odd, _wild) if wild else st.one_of(*odd)
    return st.integers(0, 6).flatmap(lambda n: other if n == 0 else valid)


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


_cpu = mostly(
    st.sampled_from(["100m", "500m", "1", "2", "0.5", "250m", ".5", "+1", "0.25", "1e0", "900u"]),
    st.sampled_from(["0", "", "-1", "1e400", "2 cores", "1000", "1_000", "0x10", "1e3m"]),
    st.integers(min_value=-10, max_value=10**6),
)
_memory = mostly(
    st.sampled_from(["250Mi", "1Gi", "512M", "64Mi", "100Ki", "0.5Gi", "1000000k", "1e9", "1E8"]),
    st.sampled_from(["0", "", "-1Gi", "1e400", "1 GB", "300Gi", "1.5.5"]),
    st.integers(min_value=-10, max_value=10**12),
)
_resources = _optional(
    cpuLimit=_cpu,
    memoryLimit=_memory,
    limits=mostly(
        _optional(cpu=_cpu, memory=_memory),
        st.dictionaries(st.text(max_size=8) | st.just("nvidia.com/gpu"), _cpu, max_size=2),
    ),
    requests=mostly(_optional(cpu=_cpu, memory=_memory)),
)
_image_parts = _optional(
    image=mostly(
        st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,4})?", fullmatch=True),
        st.sampled_from(["a b", " x", "\tx", "MyModel", "ÜBER", ":", "a//b"]),
    ),
    registry=mostly(
        st.sampled_from(["example.test", "localhost:5000", "registry.test/team"]),
        st.sampled_from(["a b", "a/b:c@", "-x"]),
    ),
    versionTag=mostly(
        st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True),
        st.sampled_from(["1.0 beta", "", "v1!", "-1"]),
    ),
)
_env_names = mostly(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,10}", fullmatch=True),
    st.sampled_from(["NEXUS__SHARD_NAME", "NEXUS__ALGORITHM_NAME", "1X", "A=B", "", ".."]),
    st.text(max_size=6),
)
_env_items = mostly(
    st.fixed_dictionaries(
        {"name": _env_names},
        optional={"value": mostly(st.text(max_size=16), st.just("x" * 1_600_000))},
    ),
    st.fixed_dictionaries(
        {"name": _env_names, "valueFrom": st.just({"secretKeyRef": {"name": "s", "key": "k"}})}
    ),
)
_runtime = _optional(
    deadlineSeconds=mostly(
        st.integers(min_value=1, max_value=2**31 - 1),
        st.integers(min_value=-2, max_value=2**40),
        st.sampled_from([1.0, 0, "60"]),
    ),
    maximumRetries=mostly(
        st.integers(min_value=0, max_value=10), st.integers(min_value=-2, max_value=2**40)
    ),
    environmentVariables=mostly(st.lists(_env_items, max_size=3)),
)
_custom = st.fixed_dictionaries(
    {
        "container": mostly(_image_parts),
        "computeResources": mostly(_resources),
        "runtimeEnvironment": mostly(_runtime),
    },
    optional={
        "workgroupRef": mostly(_optional(name=st.text(max_size=8), group=st.text(max_size=8))),
        "mountDatadogSocket": _wild,  # not a field a run can override: ignored
    },
)
_durations = mostly(
    st.sampled_from(["6h", "90m", "1h30m", "24h", "168h", "300ms", "1.5h", "2h45m10s"]),
    st.sampled_from(["169h", "0s", "-1h", "6 hours", "h", "1d", "99999999999999999999h"]),
    st.from_regex(r"[0-9]{1,22}(ns|us|ms|s|m|h)", fullmatch=True),
)
_parents = mostly(
    _optional(
        requestId=mostly(
            st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True),
            st.sampled_from(["x/..", "?limit=1", "A", "a" * 300]),
        ),
        algorithmName=mostly(st.text(max_size=10)),
    )
)
_fields = st.fixed_dictionaries(
    {
        "algorithmParameters": mostly(st.dictionaries(st.text(max_size=8), _json, max_size=4)),
        "customConfiguration": mostly(_custom),
    },
    optional={
        "requestApiVersion": mostly(st.just("1.2") | st.text(max_size=6)),
        "tag": mostly(st.text(max_size=20), st.sampled_from(["team/a", "t" * 2000, "\x00"])),
        "parentRequest": _parents,
        "payloadValidFor": _durations,
        "unknownField": _wild,  # ignored, as upstream's decoder does
    },
)
_bodies = mostly(
    _fields.map(lambda fields: encode(fields).encode()),
    _wild.map(lambda value: encode(value).encode()),  # anything at all, mostly not an object
    st.binary(max_size=40),  # not JSON, maybe not UTF-8
    _fields.map(lambda fields: encode(fields).encode()[:-1]),  # cut short
    wild=False,
)
_queries = st.lists(
    mostly(
        st.tuples(st.just("dryRun"), st.sampled_from(["true", "false", "1", "0", "", "True"])),
        st.tuples(st.just("dryRun"), st.text(max_size=4)),
        st.tuples(st.text(max_size=6), st.text(max_size=6)),
        wild=False,
    ),
    max_size=2,
)


@attrs.define
class Tally:
    """What the property saw: accepted runs (id -> body), refusals by status."""

    accepted: dict[str, bytes] = attrs.Factory(dict)
    refused: dict[int, int] = attrs.Factory(dict)


async def settled(
    http: httpx.AsyncClient, kube: KubeClient, url: str, request_id: str
) -> dict[str, Any]:
    """The run's result once it is terminal or its Job has a succeeded pod (the `quick`
    template's pods exit 0 at once), whichever comes first."""
    with trio.fail_after(60):
        while True:
            response = await http.get(f"{url}/algorithm/v1/results/quick/requests/{request_id}")
            result: dict[str, Any] = response.json()
            if result["status"] not in ("BUFFERED", "RUNNING"):
                return result
            with contextlib.suppress(KubeNotFound):
                job = await kube.get(JOBS, namespace="nexus", name=request_id)
                if job.get("status", {}).get("succeeded"):
                    return result
            await trio.sleep(0.05)


async def _one_example(
    http: httpx.AsyncClient, url: str, body: bytes, query: list[tuple[str, str]], tally: Tally
) -> None:
    response = await http.post(
        f"{url}{RUN}/quick",
        content=body,
        params=tuple(query),
        headers={"Content-Type": "application/json"},
    )
    status = response.status_code
    assert status == 202 or 400 <= status < 500, (status, response.text[:500])
    if status != 202:
        assert response.headers["content-type"].startswith("text/plain"), response.headers
        assert response.text
        tally.refused[status] = tally.refused.get(status, 0) + 1
        return
    assert response.headers["content-type"] == "application/json"
    request_id = response.json()["requestId"]
    tally.accepted[request_id] = body
    with trio.fail_after(10):
        while True:
            result = await http.get(f"{url}/algorithm/v1/results/quick/requests/{request_id}")
            assert result.status_code == 200, result.text
            stage = result.json()["status"]
            if stage != "BUFFERED":
                break
            await trio.sleep(0.01)
    assert stage != "SCHEDULING_FAILED", result.json()


async def test_any_body_gets_a_run_that_starts_or_a_4xx(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    token = trio.lowlevel.current_trio_token()
    tally = Tally()

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    @given(body=_bodies, query=_queries)
    def property_holds(body: bytes, query: list[tuple[str, str]]) -> None:
        trio.from_thread.run(_one_example, http, nexus.url, body, query, tally, trio_token=token)

    await trio.to_thread.run_sync(property_holds)
    # A failure the cluster reports (a pod it cannot create) comes after RUNNING: wait until
    # every accepted run is terminal (dry runs, failures) or its Job's pod has succeeded.
    assert nexus.cluster is not None
    kube = KubeClient(credentials=load_credentials(nexus.cluster.kubeconfig_path))
    failed = {}
    try:
        for request_id, body in tally.accepted.items():
            result = await settled(http, kube, nexus.url, request_id)
            if result["status"] == "SCHEDULING_FAILED":
                failed[request_id] = (body[:300], result["runErrorMessage"])
    finally:
        await kube.aclose()
    assert not failed, failed
    assert tally.accepted, "no example was accepted: the strategy is too wild to test intake"
    assert tally.refused.get(400), "no example was refused"
