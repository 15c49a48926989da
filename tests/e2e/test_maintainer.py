"""The maintainer: every scripted Kubernetes outcome ends its run as the rule table says.

Real: `nexusd dev` (scheduler + receiver + maintainer) on loopback with SQLite and payload files,
the embedded cluster over HTTP with its scripted kubelet (exit codes, OOMKilled, image pull
errors, invalid images, missing Secrets and service accounts, unschedulable pods), and the
default rule table with its grace periods shortened to 0.3 s. Nothing is faked.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
import trio

from nexusd.devcluster import ANNOTATION_DURATION, ANNOTATION_EXIT_CODE, ANNOTATION_OOM
from nexusd.devcluster.runtimes import ANNOTATION_PULL_ERROR
from nexusd.pipeline.rules import default_rules_text
from tests.conftest import template, wait_for_stage, write_manifests

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running
    from tests.conftest import StartNexus

LAUNCH = "Algorithm submission was buffered, but failed to launch on the target cluster: "
DEADLINE = "Algorithm exceeded its max allowed run time limit or retry attempt count."
FATAL = "Algorithm encountered a fatal error during execution: "


def fenced_workgroup() -> dict[str, Any]:
    """A workgroup whose node affinity no node of the embedded cluster satisfies."""
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmWorkgroup",
        "metadata": {"name": "gpu"},
        "spec": {
            "description": "nodes nobody has",
            "cluster": "dev",
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.sneaksanddata.com/service-node-group",
                                        "operator": "In",
                                        "values": ["gpu"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
        },
    }


def scripted(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    document = template(name, annotations=annotations, **spec)
    runtime = document["spec"]["runtimeEnvironment"]
    runtime.setdefault("maximumRetries", 0)
    return document


TEMPLATES = [
    scripted("exit-3", {ANNOTATION_EXIT_CODE: "3"}),
    scripted(
        "fatal-42",
        {ANNOTATION_EXIT_CODE: "42"},
        errorHandlingBehaviour={"fatalExitCodes": [42], "transientExitCodes": []},
    ),
    scripted("oom", {ANNOTATION_OOM: "true"}),
    scripted("pull", {ANNOTATION_PULL_ERROR: "manifest unknown"}),
    {
        **scripted("bad-image"),
        "spec": {
            **scripted("bad-image")["spec"],
            "container": {"registry": "example.test", "image": "Bad", "versionTag": "1"},
        },
    },
    {
        **scripted("no-secret"),
        "spec": {
            **scripted("no-secret")["spec"],
            "runtimeEnvironment": {
                "maximumRetries": 0,
                "environmentVariables": [
                    {
                        "name": "TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "token"}},
                    }
                ],
            },
        },
    },
    {
        **scripted("fenced"),
        "spec": {
            **scripted("fenced")["spec"],
            "workgroupRef": {
                "name": "gpu",
                "group": "science.sneaksanddata.com",
                "kind": "NexusAlgorithmWorkgroup",
            },
        },
    },
    {
        **scripted("no-account"),
        "spec": {
            **scripted("no-account")["spec"],
            "container": {
                "registry": "example.test",
                "image": "algo",
                "versionTag": "1",
                "serviceAccountName": "algo-runner",
            },
        },
    },
    scripted("silent"),  # exits 0 without reporting
    scripted(
        "too-slow",
        runtimeEnvironment={"deadlineSeconds": 1, "annotations": {ANNOTATION_DURATION: "60"}},
    ),
    scripted("reported-then-failed", {ANNOTATION_DURATION: "1", ANNOTATION_EXIT_CODE: "3"}),
]


@pytest.fixture
async def nexus(start_nexus: StartNexus, tmp_path: Path) -> Running:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        re.sub(r"^grace = \d+(\.\d+)?", "grace = 0.3", default_rules_text(), flags=re.M)
    )
    manifests = write_manifests(tmp_path / "manifests", fenced_workgroup(), *TEMPLATES)
    return await start_nexus(
        **{
            "dev.manifests": str(manifests),
            "maintainer.rules": str(rules),
            "maintainer.interval": "1s",
        }
    )


async def submit(http: httpx.AsyncClient, url: str, algorithm: str) -> str:
    response = await http.post(
        f"{url}/algorithm/v1/run/{algorithm}", json={"algorithmParameters": {}}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["requestId"])


#: stage, cause, a word of the details, and whether the Job is deleted: True for a Job that
#: never ran or still runs, False for one that has failed (kept for `kubectl logs` until the
#: collector's `failed_job_ttl`), None when either may happen (an OOM kill is seen before or
#: after the Job controller fails the Job)
EXPECTED: dict[str, tuple[str, str, str, bool | None]] = {
    "exit-3": ("DEADLINE_EXCEEDED", DEADLINE, "backoff limit", False),
    "fatal-42": (
        "FAILED",
        FATAL + "container exited with code 42 (fatal exit code)",
        "42",
        False,
    ),
    "oom": ("FAILED", FATAL + "it ran out of memory.", "1000Mi", None),
    "pull": (
        "SCHEDULING_FAILED",
        LAUNCH + "the container image could not be pulled.",
        "manifest unknown",
        True,
    ),
    "no-secret": (
        "SCHEDULING_FAILED",
        LAUNCH + 'Secret "api-token" does not exist.',
        "api-token",
        True,
    ),
    "fenced": ("SCHEDULING_FAILED", "gpu", "node affinity", True),
    "no-account": (
        "SCHEDULING_FAILED",
        LAUNCH + "Unable to launch a container for the algorithm - please review "
        "configuration and try again.",
        'serviceaccount "algo-runner" not found',
        True,
    ),
    "silent": ("FAILED", FATAL + "algorithm exited without reporting a result.", "", False),
    "too-slow": ("DEADLINE_EXCEEDED", DEADLINE, "deadline", False),
}


async def test_an_image_no_kubelet_can_parse_is_refused_at_intake(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    """The maintainer's InvalidImageName rule (tests/pipeline/test_classifying*.py) stays for
    Jobs made otherwise; intake no longer lets such a run start."""
    response = await http.post(
        f"{nexus.url}/algorithm/v1/run/bad-image", json={"algorithmParameters": {}}
    )
    assert response.status_code == 400
    assert "spec.container.image: 'Bad' must be lowercase letters" in response.text


async def test_every_outcome_ends_as_the_table_says(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    assert nexus.cluster is not None
    ids = {algorithm: await submit(http, nexus.url, algorithm) for algorithm in EXPECTED}
    jobs = f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs"
    for algorithm, (stage, cause, detail, deleted) in EXPECTED.items():
        request_id = ids[algorithm]
        result = await wait_for_stage(
            http,
            nexus.url,
            algorithm,
            request_id,
            "FAILED",
            "SCHEDULING_FAILED",
            "DEADLINE_EXCEEDED",
            "COMPLETED",
            "CANCELLED",
        )
        assert result["status"] == stage, (algorithm, result)
        assert cause in result["runErrorMessage"], (algorithm, result)
        metadata = (
            await http.get(f"{nexus.url}/algorithm/v1/metadata/{algorithm}/requests/{request_id}")
        ).json()
        assert detail.lower() in metadata["algorithm_failure_details"].lower(), (
            algorithm,
            metadata,
        )
        if deleted:
            with trio.fail_after(10):
                while (await http.get(f"{jobs}/{request_id}")).status_code != 404:
                    await trio.sleep(0.05)
        elif deleted is not None:
            assert (await http.get(f"{jobs}/{request_id}")).status_code == 200, algorithm


async def test_a_finished_run_is_never_touched(nexus: Running, http: httpx.AsyncClient) -> None:
    request_id = await submit(http, nexus.url, "reported-then-failed")
    await wait_for_stage(http, nexus.url, "reported-then-failed", request_id, "RUNNING")
    assert nexus.cluster is not None
    job = f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs/{request_id}"
    container = (await http.get(job)).json()["spec"]["template"]["spec"]["containers"][0]
    receiver = {e["name"]: e["value"] for e in container["env"]}["NEXUS__CLIENT__RECEIVER"]
    done = await http.post(  # as the pod reports: to its receiver URL, with the run's token
        f"{receiver}/algorithm/v1/complete/reported-then-failed/requests/{request_id}",
        json={"resultUri": "https://r", "errorCause": "", "errorDetails": ""},
    )
    assert done.status_code == 202
    # the pod then exits 3 and the Job fails; the run stays COMPLETED and its Job is kept
    with trio.fail_after(10):
        while True:
            conditions = (await http.get(job)).json().get("status", {}).get("conditions") or []
            if any(c["type"] == "Failed" for c in conditions):
                break
            await trio.sleep(0.05)
    await trio.sleep(1.5)  # more than a maintainer sweep (1 s) and every shortened grace
    result = await wait_for_stage(
        http,
        nexus.url,
        "reported-then-failed",
        request_id,
        "COMPLETED",
        "FAILED",
        "DEADLINE_EXCEEDED",
    )
    assert result == {
        "requestId": request_id,
        "status": "COMPLETED",
        "resultUri": "https://r",
        "runErrorMessage": "",
    }
    assert (await http.get(job)).status_code == 200
