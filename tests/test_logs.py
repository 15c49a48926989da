"""Every log line about a run names its request id and algorithm, in plain and JSON format.

Real: `nexusd dev --kubelet scripted` as a process of its own at DEBUG, its stderr read back
after a run went through intake, the submitter (the Job created in the embedded cluster over
HTTP), the maintainer and the receiver; the test posts the completion an algorithm would. The
lines about Kubernetes objects rather than runs (`CLUSTER_SIDE`) are left out. Nothing is
faked.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from nexusd.devcluster import ANNOTATION_DURATION
from tests.conftest import template, wait_for_stage, write_manifests
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from pathlib import Path

#: Lines about Kubernetes objects, not runs: the embedded cluster's own, and the informers'
#: (a watch event names the Job, whose name is the request id, but knows no run).
CLUSTER_SIDE = ("nexusd.devcluster", "nexusd.kube.watching")

#: plain: `<time> <LEVEL> <mode> <logger>: <message> [request_id=... algorithm=...]`
PLAIN = re.compile(
    r"^\S+ \S+ (?P<level>[A-Z]+) +(?P<mode>\S+) (?P<logger>[\w.]+): (?P<message>.*?)"
    r"(?: \[(?:request_id=(?P<request_id>\S+))? ?(?:algorithm=(?P<algorithm>\S+))?\])?$"
)


def parse(text: str, fmt: str) -> list[dict[str, Any]]:
    """Each record as {logger, message, request_id?, algorithm?}; continuation lines (a
    traceback, the dev banner) are skipped."""
    records = []
    for line in text.splitlines():
        if fmt == "json":
            if line.startswith("{"):
                records.append(json.loads(line))
            continue
        match = PLAIN.match(line)
        if match:
            records.append({k: v for k, v in match.groupdict().items() if v is not None})
    return records


async def run_one(tmp_path: Path, fmt: str) -> tuple[str, list[dict[str, Any]]]:
    manifests = write_manifests(
        tmp_path / "manifests", template("slow", annotations={ANNOTATION_DURATION: "120"})
    )
    env = {
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__HTTP__HOST": "127.0.0.1",
        "NEXUS__DEV__MANIFESTS": str(manifests),
        "NEXUS__AUTH__COMPLETION_TOKENS": "false",  # the test reports without the pod's token
    }
    log = tmp_path / "dev.log"
    args = ("dev", "--kubelet", "scripted", "--log-level", "DEBUG", "--log-format", fmt)
    async with (
        nexusd_process(*args, env=env, cwd=tmp_path, log=log) as nexus,
        httpx.AsyncClient(timeout=10) as http,
    ):
        response = await http.post(
            f"{nexus.url}/algorithm/v1/run/slow", json={"algorithmParameters": {}}
        )
        assert response.status_code == 202, response.text
        request_id = str(response.json()["requestId"])
        await wait_for_stage(http, nexus.url, "slow", request_id, "RUNNING")
        completed = await http.post(
            f"{nexus.url}/algorithm/v1/complete/slow/requests/{request_id}",
            json={"resultUri": "https://example.test/r", "errorCause": "", "errorDetails": ""},
        )
        assert completed.status_code == 202, completed.text
        await wait_for_stage(http, nexus.url, "slow", request_id, "COMPLETED")
    return request_id, parse(log.read_text(), fmt)


@pytest.mark.parametrize("fmt", ["plain", "json"])
async def test_lines_about_a_run_carry_its_request_id_and_algorithm(
    tmp_path: Path, fmt: str
) -> None:
    request_id, records = await run_one(tmp_path, fmt)
    ours = [r for r in records if not r["logger"].startswith(CLUSTER_SIDE)]
    about = [r for r in ours if r.get("request_id") == request_id]
    assert all(r.get("algorithm") == "slow" for r in about), about
    loggers = {r["logger"] for r in about}
    # intake's accept, the submitter's Job creation (the Kubernetes client's own line, which
    # knows nothing of runs), and the access log of each request naming the run
    assert {"nexusd.pipeline.intake", "nexusd.kube.client", "nexusd.access"} <= loggers
    (job,) = [r for r in about if r["logger"] == "nexusd.kube.client" and "jobs ->" in r["message"]]
    assert job["message"].startswith("POST /apis/batch/v1/namespaces/")
    accessed = [r["message"].split(" ")[:3] for r in about if r["logger"] == "nexusd.access"]
    assert ["POST", "/algorithm/v1/run/slow", "202"] in accessed
    assert ["POST", f"/algorithm/v1/complete/slow/requests/{request_id}", "202"] in accessed
    # Every line that mentions the run is labelled with it, and no other line is.
    for record in ours:
        if request_id in record["message"]:
            assert record.get("request_id") == request_id, record
    others = [r for r in ours if r not in about]
    assert others, "the process logs more than this run"
    assert not [r for r in others if "request_id" in r]
    readiness = [r for r in others if r["logger"] == "nexusd.access" and "/readyz" in r["message"]]
    assert readiness
    assert all("request_id" not in r and "algorithm" not in r for r in readiness)
