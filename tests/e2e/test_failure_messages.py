"""Failure messages a user can act on, through `nexusd dev` (issue 11, part 7).

Real: HTTP on loopback, SQLite, payload files, the embedded cluster over HTTP (its Job controller,
scheduler and kubelet), the maintainer with the default rule table, and for the crash the bundled
`hello` algorithm as a local process. For the impossible cpu request the scripted kubelet is used,
the intake's node-capacity check is off, and the table's `insufficient-resources` grace is
shortened to 1 s so the test does not wait its 120 s. Nothing is faked.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import trio

from nexusd.pipeline.rules import default_rules_text
from tests.conftest import template, wait_for_stage, write_manifests
from tests.e2e.test_dev_flow import run_hello

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running
    from tests.conftest import StartNexus

FATAL = "Algorithm encountered a fatal error during execution: "
LAUNCH = "Algorithm submission was buffered, but failed to launch on the target cluster: "
TERMINAL = ("COMPLETED", "FAILED", "SCHEDULING_FAILED", "DEADLINE_EXCEEDED", "CANCELLED")


def job_url(nexus: Running, request_id: str) -> str:
    assert nexus.cluster is not None
    return f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs/{request_id}"


async def test_crash_says_what_happened_once_and_its_job_is_kept(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    nexus = await start_nexus(**{"dev.kubelet": "local", "maintainer.interval": "1s"})
    request_id = await run_hello(http, nexus.url, {"fail": "crash"})
    result = await wait_for_stage(http, nexus.url, "hello", request_id, *TERMINAL)
    assert result["status"] == "FAILED", result
    assert result["runErrorMessage"] == FATAL + "container exited with code 1 (fatal exit code)"
    assert result["runErrorMessage"].count("fatal error during execution") == 1
    metadata = (
        await http.get(f"{nexus.url}/algorithm/v1/metadata/hello/requests/{request_id}")
    ).json()
    assert "exit code 1" in metadata["algorithm_failure_details"]
    await trio.sleep(1.5)  # more than a maintainer sweep: the Job is not deleted
    kept = await http.get(job_url(nexus, request_id))
    assert kept.status_code == 200, kept.text
    conditions = kept.json()["status"]["conditions"]
    assert any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)
    # and so is its pod, with the algorithm's output (what `kubectl logs job/<id>` reads)
    assert nexus.cluster is not None
    pods = f"{nexus.cluster.url}/api/v1/namespaces/nexus/pods"
    listed = await http.get(
        pods, params={"labelSelector": f"batch.kubernetes.io/job-name={request_id}"}
    )
    (pod,) = listed.json()["items"]
    log = await http.get(f"{pods}/{pod['metadata']['name']}/log")
    assert log.status_code == 200, log.text
    assert "hello: crashing as asked" in log.text


async def test_a_failed_job_is_collected_after_failed_job_ttl(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    nexus = await start_nexus(
        **{
            "dev.kubelet": "local",
            "maintainer.interval": "1s",
            "maintainer.gc_interval": "1s",
            "maintainer.failed_job_ttl": "3s",
        }
    )
    request_id = await run_hello(http, nexus.url, {"fail": "crash"})
    result = await wait_for_stage(http, nexus.url, "hello", request_id, *TERMINAL)
    assert result["status"] == "FAILED", result
    assert (await http.get(job_url(nexus, request_id))).status_code == 200
    with trio.fail_after(8):
        while (await http.get(job_url(nexus, request_id))).status_code != 404:
            await trio.sleep(0.1)


async def test_an_impossible_cpu_request_ends_scheduling_failed_before_its_deadline(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        re.sub(
            r'(name = "insufficient-resources"\n(?:.*\n)*?)grace = \d+',
            r"\1grace = 1",
            default_rules_text(),
        )
    )
    huge = template(
        "huge",
        computeResources={"cpuLimit": "1000", "memoryLimit": "1000Mi"},
        runtimeEnvironment={"maximumRetries": 0, "deadlineSeconds": 20},
    )
    nexus = await start_nexus(
        **{
            "dev.manifests": str(write_manifests(tmp_path / "manifests", huge)),
            "kube.check_node_capacity": False,
            "maintainer.rules": str(rules),
            "maintainer.interval": "1s",
        }
    )
    response = await http.post(
        f"{nexus.url}/algorithm/v1/run/huge", json={"algorithmParameters": {}}
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    started = trio.current_time()
    result = await wait_for_stage(http, nexus.url, "huge", request_id, *TERMINAL)
    assert trio.current_time() - started < 20  # the Job's activeDeadlineSeconds
    assert result["status"] == "SCHEDULING_FAILED", result
    message = result["runErrorMessage"]
    assert message.startswith(
        LAUNCH
        + "no node can fit the pod: Insufficient cpu (0/1 nodes are available: 1 Insufficient cpu."
    )
    metadata = (
        await http.get(f"{nexus.url}/algorithm/v1/metadata/huge/requests/{request_id}")
    ).json()
    assert "asks for more cpu than any node" in metadata["algorithm_failure_details"]
    # the Job never ran: it is deleted so its pod stops waiting for a node
    with trio.fail_after(10):
        while (await http.get(job_url(nexus, request_id))).status_code != 404:
            await trio.sleep(0.05)
