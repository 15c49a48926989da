"""Per-run completion tokens: only the pod given a run's receiver URL can report its outcome.

Real: `nexusd dev` on loopback with SQLite and payload files, and the embedded cluster over HTTP
with its scripted kubelet (pods run as long as their annotation says and never call anyone).
The tests play the algorithm as an unchanged SDK would: they read `NEXUS__CLIENT__RECEIVER`
from the run's pod in the embedded cluster and append the SDK's route to it. The pure manifest
rules (`ReceiverUrl`, `redacted_job`, `refused_overrides`) get plain unit tests at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

from nexusd.devcluster import ANNOTATION_DURATION
from nexusd.kube.manifests import ReceiverUrl, job_env, redacted_job
from nexusd.kube.overrides import refused_overrides
from nexusd.stores.signing import CompletionTokens
from tests.conftest import StartNexus, template, wait_for_stage, write_manifests

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running

SUCCESS = {"resultUri": "https://results.example.test/r.json", "errorCause": "", "errorDetails": ""}


def templates(directory: Path) -> Path:
    slow = template("slow", annotations={ANNOTATION_DURATION: "60"})
    pinned = template("pinned", annotations={ANNOTATION_DURATION: "60"})
    pinned["spec"]["container"]["allowImageOverride"] = False
    # An upstream template with a hard-coded receiver, and the older variable name.
    upstream = template("upstream", annotations={ANNOTATION_DURATION: "60"})
    upstream["spec"]["runtimeEnvironment"]["environmentVariables"] = [
        {"name": "NEXUS__CLIENT__RECEIVER", "value": "http://nexus-receiver.nexus:8080"},
        {"name": "NEXUS__RECEIVER_URL", "value": "http://nexus-receiver.nexus:8080"},
        {"name": "OTHER", "value": "kept"},
    ]
    return write_manifests(directory, slow, pinned, upstream)


@pytest.fixture
async def nexus(start_nexus: StartNexus, tmp_path: Path) -> Running:
    return await start_nexus(**{"dev.manifests": str(templates(tmp_path / "manifests"))})


async def submit(http: httpx.AsyncClient, nexus: Running, algorithm: str, **body: Any) -> str:
    response = await http.post(
        f"{nexus.url}/algorithm/v1/run/{algorithm}",
        json={"algorithmParameters": {}, **body},
        params={"dryRun": "false"},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["requestId"])


async def pod_env(http: httpx.AsyncClient, nexus: Running, request_id: str) -> dict[str, str]:
    """The environment of the run's pod, once the Job controller has made it."""
    assert nexus.cluster is not None
    with trio.fail_after(20):
        while True:
            pods = await http.get(f"{nexus.cluster.url}/api/v1/namespaces/nexus/pods")
            for pod in pods.json()["items"]:
                if pod["metadata"]["ownerReferences"][0]["name"] == request_id:
                    env = pod["spec"]["containers"][0]["env"]
                    return {item["name"]: item.get("value", "") for item in env}
            await trio.sleep(0.05)


async def receiver_of(http: httpx.AsyncClient, nexus: Running, request_id: str) -> str:
    return (await pod_env(http, nexus, request_id))["NEXUS__CLIENT__RECEIVER"]


def complete(receiver: str, algorithm: str, request_id: str) -> str:
    """What the SDK posts to: its route appended to the base URL, keeping the base's path."""
    return f"{receiver.rstrip('/')}/algorithm/v1/complete/{algorithm}/requests/{request_id}"


def check(receiver: str, algorithm: str, request_id: str) -> str:
    return f"{receiver.rstrip('/')}/algorithm/v1/check/{algorithm}/requests/{request_id}"


async def test_the_pod_completes_its_run_through_the_injected_url(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    request_id = await submit(http, nexus, "slow")
    receiver = await receiver_of(http, nexus, request_id)
    assert receiver.startswith(f"{nexus.url}/t/")
    assert (await http.get(check(receiver, "slow", request_id))).json() == {"is_processed": False}
    done = await http.post(complete(receiver, "slow", request_id), json=SUCCESS)
    assert (done.status_code, done.headers["content-type"], done.json()) == (
        202,
        "application/json",
        {},
    )
    result = await wait_for_stage(http, nexus.url, "slow", request_id, "COMPLETED")
    assert result["resultUri"] == SUCCESS["resultUri"]
    assert (await http.get(check(receiver, "slow", request_id))).json() == {"is_processed": True}


async def test_without_the_runs_token_a_completion_is_403_and_changes_nothing(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    mine = await submit(http, nexus, "slow")
    other = await submit(http, nexus, "slow")
    await wait_for_stage(http, nexus.url, "slow", mine, "RUNNING")
    others_receiver = await receiver_of(http, nexus, other)
    attempts = {
        "no token": complete(nexus.url, "slow", mine),
        "another run's token": complete(others_receiver, "slow", mine),
        "a made-up token": complete(f"{nexus.url}/t/{'A' * 43}", "slow", mine),
    }
    for what, url in attempts.items():
        refused = await http.post(url, json=SUCCESS)
        assert refused.status_code == 403, what
        assert refused.headers["content-type"].startswith("text/plain")
        assert refused.text.startswith("Forbidden: ")
        assert f"slow/{mine}" in refused.text
    assert "no completion token" in (await http.post(attempts["no token"], json=SUCCESS)).text
    # check needs the token too; the other run's own token still works for the other run
    assert (await http.get(check(nexus.url, "slow", mine))).status_code == 403
    assert (await http.get(check(others_receiver, "slow", mine))).status_code == 403
    assert (await http.get(check(others_receiver, "slow", other))).status_code == 200
    result = await wait_for_stage(http, nexus.url, "slow", mine, "RUNNING")
    assert result["resultUri"] == ""


async def test_the_token_path_serves_only_the_receiver_routes(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    request_id = await submit(http, nexus, "slow")
    receiver = await receiver_of(http, nexus, request_id)
    for path in ("/algorithm/v1/run/slow", "/algorithm/v1/results/slow/requests/x", "/healthz"):
        response = await http.get(f"{receiver}{path}")
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/plain")
    # The old Go receiver client's version prefix works behind the token too.
    legacy = f"{receiver}/algorithm/v1.2/complete/slow/requests/{request_id}"
    assert (await http.post(legacy, json=SUCCESS)).status_code == 202


async def test_repeated_and_late_completions_say_what_happened(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    request_id = await submit(http, nexus, "slow")
    receiver = await receiver_of(http, nexus, request_id)
    url = complete(receiver, "slow", request_id)
    assert (await http.post(url, json=SUCCESS)).status_code == 202
    again = await http.post(url, json=SUCCESS)  # the SDK retrying: same answer as before
    assert (again.status_code, again.json()) == (202, {})
    resigned = {**SUCCESS, "resultUri": SUCCESS["resultUri"] + "?X-Amz-Signature=new"}
    assert (await http.post(url, json=resigned)).status_code == 202  # same object
    for report in (
        {**SUCCESS, "resultUri": "https://results.example.test/other.json"},
        {"resultUri": "", "errorCause": "<class 'ValueError'>: late)", "errorDetails": ""},
    ):
        late = await http.post(url, json=report)
        assert late.status_code == 409
        assert late.headers["content-type"].startswith("text/plain")
        assert late.text.startswith(f"Run slow/{request_id} had already ended COMPLETED")
        assert "not recorded" in late.text
    result = await wait_for_stage(http, nexus.url, "slow", request_id, "COMPLETED")
    assert result["resultUri"] == SUCCESS["resultUri"]


async def test_a_report_for_a_cancelled_run_is_409_naming_the_cancellation(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    request_id = await submit(http, nexus, "slow")
    receiver = await receiver_of(http, nexus, request_id)
    cancel = f"{nexus.url}/algorithm/v1/cancel/slow/requests/{request_id}"
    cancelled = await http.post(cancel, json={"initiator": "jane", "reason": "wrong input"})
    assert (cancelled.status_code, cancelled.text) == (200, "")
    late = await http.post(complete(receiver, "slow", request_id), json=SUCCESS)
    assert late.status_code == 409
    assert late.text == (
        f"Run slow/{request_id} had already ended CANCELLED (Cancelled by 'jane') when this "
        "report arrived; it was not recorded"
    )
    assert (await http.get(check(receiver, "slow", request_id))).json() == {"is_processed": True}


async def test_cancels_of_finished_runs_say_so(nexus: Running, http: httpx.AsyncClient) -> None:
    done = await submit(http, nexus, "slow")
    receiver = await receiver_of(http, nexus, done)
    assert (await http.post(complete(receiver, "slow", done), json=SUCCESS)).status_code == 202
    body = {"initiator": "jane", "reason": "too late"}
    finished = await http.post(f"{nexus.url}/algorithm/v1/cancel/slow/requests/{done}", json=body)
    assert finished.status_code == 409
    assert finished.text == f"Run slow/{done} had already ended COMPLETED; not cancelled"
    twice = await submit(http, nexus, "slow")
    url = f"{nexus.url}/algorithm/v1/cancel/slow/requests/{twice}"
    assert ((await http.post(url, json=body)).status_code, "first") == (200, "first")
    again = await http.post(url, json=body)
    assert again.status_code == 200
    assert again.headers["content-type"].startswith("text/plain")
    assert again.text == f"Run slow/{twice} was already cancelled"


async def test_an_upstream_templates_hard_coded_receiver_gets_the_dev_url_and_token(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    request_id = await submit(http, nexus, "upstream")
    env = await pod_env(http, nexus, request_id)
    receiver = env["NEXUS__CLIENT__RECEIVER"]
    assert receiver.startswith(f"{nexus.url}/t/")
    assert env["NEXUS__RECEIVER_URL"] == receiver
    assert env["OTHER"] == "kept"
    assert (await http.post(complete(receiver, "upstream", request_id), json=SUCCESS)).is_success


async def test_buffer_shows_no_urls_or_tokens(nexus: Running, http: httpx.AsyncClient) -> None:
    request_id = await submit(http, nexus, "slow")
    env = await pod_env(http, nexus, request_id)
    answer = await http.get(f"{nexus.url}/algorithm/v1/buffer/slow/requests/{request_id}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    token = env["NEXUS__CLIENT__RECEIVER"].rsplit("/", 1)[1]
    for secret in (token, env["NEXUS__RESULT_UPLOAD_URL"], "sig="):
        assert secret not in answer.text
    container = answer.json()["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["main.py", "--sas-uri=<redacted>", f"--request-id={request_id}"]
    shown = {item["name"]: item["value"] for item in container["env"]}
    assert shown["NEXUS__CLIENT__RECEIVER"] == f"{nexus.url}/t/<redacted>"
    assert shown["NEXUS__RESULT_UPLOAD_URL"] == "<redacted>"
    assert shown["NEXUS__ALGORITHM_NAME"] == "slow"


async def test_a_pinned_templates_image_cannot_be_overridden(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    refused = await http.post(
        f"{nexus.url}/algorithm/v1/run/pinned",
        json={"algorithmParameters": {}, "customConfiguration": {"container": {"versionTag": "2"}}},
    )
    assert refused.status_code == 400
    assert refused.headers["content-type"].startswith("text/plain")
    assert refused.text == (
        "Algorithm payload is invalid: customConfiguration.container.versionTag: this "
        "algorithm's template does not allow runs to change its container image "
        "(spec.container.allowImageOverride is false)"
    )
    # Its own tag (the SDK sends one with every custom configuration) is no change.
    same = {"container": {"versionTag": "1.0.0", "registry": "example.test"}}
    await submit(http, nexus, "pinned", customConfiguration=same)
    # Templates that do not say keep today's behaviour: the run's image wins.
    other = await submit(http, nexus, "slow", customConfiguration={"container": {"image": "x"}})
    await pod_env(http, nexus, other)  # its Job exists
    assert nexus.cluster is not None
    job = await http.get(f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs/{other}")
    assert job.json()["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "example.test/x:1.0.0"
    )


async def test_with_completion_tokens_off_pods_get_the_plain_receiver_url(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    nexus = await start_nexus(
        **{
            "dev.manifests": str(templates(tmp_path / "manifests")),
            "auth.completion_tokens": "false",
        }
    )
    request_id = await submit(http, nexus, "slow")
    assert await receiver_of(http, nexus, request_id) == nexus.url
    done = await http.post(complete(nexus.url, "slow", request_id), json=SUCCESS)
    assert (done.status_code, done.json()) == (202, {})


async def test_a_configured_receiver_url_replaces_the_templates(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    nexus = await start_nexus(
        **{
            "dev.manifests": str(templates(tmp_path / "manifests")),
            "receiver.url": "https://receiver.example.test/nexus/",
        }
    )
    request_id = await submit(http, nexus, "upstream")
    env = await pod_env(http, nexus, request_id)
    key = (tmp_path / "data" / "url.key").read_bytes().strip()
    token = CompletionTokens(key).token(algorithm="upstream", request_id=request_id, attempt=1)
    assert env["NEXUS__CLIENT__RECEIVER"] == f"https://receiver.example.test/nexus/t/{token}"


# --- the pure rules ----------------------------------------------------------------------


TEMPLATE_ENV = [
    {"name": "NEXUS__CLIENT__RECEIVER", "value": "http://nexus-receiver.nexus:8080/"},
    {"name": "A", "value": "1"},
]


def env_of(template_env: list[dict[str, Any]], receiver: ReceiverUrl | None) -> list[Any]:
    built = job_env(
        template_env,
        algorithm="alg",
        shard="s",
        parent=None,
        result_upload_url=None,
        receiver=receiver,
    )
    return [(item["name"], item.get("value"), item.get("valueFrom")) for item in built]


@pytest.mark.parametrize(
    ("template_env", "receiver", "expected"),
    [
        # no base: the template's own URL gets the token, where it stands
        (TEMPLATE_ENV, ReceiverUrl(base="", token="tok"), "http://nexus-receiver.nexus:8080/t/tok"),
        # a base replaces it
        (TEMPLATE_ENV, ReceiverUrl(base="http://r:1/p", token="tok"), "http://r:1/p/t/tok"),
        # tokens off, base set: the base alone
        (TEMPLATE_ENV, ReceiverUrl(base="http://r:1", token=""), "http://r:1"),
        # receiver None: as the template says
        (TEMPLATE_ENV, None, "http://nexus-receiver.nexus:8080/"),
    ],
)
def test_receiver_url_rules(
    template_env: list[dict[str, Any]], receiver: ReceiverUrl | None, expected: str
) -> None:
    env = env_of(template_env, receiver)
    assert env[0] == ("NEXUS__CLIENT__RECEIVER", expected, None)
    assert [name for name, *_ in env].count("NEXUS__CLIENT__RECEIVER") == 1


def test_a_template_without_a_receiver_gets_one_only_from_a_base() -> None:
    plain = [{"name": "A", "value": "1"}]
    assert "NEXUS__CLIENT__RECEIVER" not in [n for n, *_ in env_of(plain, ReceiverUrl("", "t"))]
    added = env_of(plain, ReceiverUrl("http://r", "t"))
    assert added[1] == ("NEXUS__CLIENT__RECEIVER", "http://r/t/t", None)  # after the template's
    from_config_map = [
        {"name": "NEXUS__CLIENT__RECEIVER", "valueFrom": {"configMapKeyRef": {"name": "c"}}}
    ]
    assert env_of(from_config_map, ReceiverUrl("", "t"))[0][2] is not None  # left alone
    assert env_of(from_config_map, ReceiverUrl("http://r", "t"))[0] == (
        "NEXUS__CLIENT__RECEIVER",
        "http://r/t/t",
        None,
    )


def test_tokens_differ_by_run_and_attempt() -> None:
    tokens = CompletionTokens(b"k" * 32)
    token = tokens.token(algorithm="a", request_id="r", attempt=1)
    assert len(token) == 43
    assert tokens.matches(token, algorithm="a", request_id="r", attempt=1)
    run: dict[str, Any] = {"algorithm": "a", "request_id": "r", "attempt": 1}
    for other in ({"algorithm": "b"}, {"request_id": "s"}, {"attempt": 2}):
        assert not tokens.matches(token, **{**run, **other})
    assert not CompletionTokens(b"o" * 32).matches(token, algorithm="a", request_id="r", attempt=1)


def test_redaction_leaves_the_stored_job_alone() -> None:
    container = {
        "name": "c",
        "args": ["--sas-uri https://s3.example/p?X-Amz-Signature=s", "--other=1"],
        "env": [
            {"name": "NEXUS__RESULT_UPLOAD_URL", "value": "https://s3.example/r?sig"},
            {"name": "NEXUS__CLIENT__RECEIVER", "value": "http://r/t/abc"},
        ],
    }
    job = {"spec": {"template": {"spec": {"containers": [container]}}}}
    shown = redacted_job(job)["spec"]["template"]["spec"]["containers"][0]
    assert shown["args"] == ["--sas-uri <redacted>", "--other=1"]
    assert [item["value"] for item in shown["env"]] == ["<redacted>", "http://r/t/<redacted>"]
    assert container["args"][0].endswith("X-Amz-Signature=s")


@pytest.mark.parametrize(
    ("allow", "override", "refused"),
    [
        (None, {"image": "other"}, []),
        (True, {"image": "other"}, []),
        (False, {"image": "img", "versionTag": "1"}, []),
        (False, {"versionTag": "2", "registry": "other.test"}, ["versionTag", "registry"]),
    ],
)
def test_refused_overrides(
    allow: bool | None, override: dict[str, str], refused: list[str]
) -> None:
    container: dict[str, Any] = {"registry": "r.test", "image": "img", "versionTag": "1"}
    if allow is not None:
        container["allowImageOverride"] = allow
    problems = refused_overrides({"container": container}, {"container": override})
    assert [problem.split(":")[0].rsplit(".", 1)[1] for problem in problems] == sorted(
        refused, key=["image", "registry", "versionTag"].index
    )
