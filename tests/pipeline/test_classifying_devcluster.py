"""The classification engine on real objects: the embedded cluster (scripted kubelet, real Job
controller, scheduler and admission) produces each outcome, the test reads the Job, its pods and
their Events over HTTP with httpx, and classifies them with the default rules. Only `now` is
moved forward, past a rule's grace; the checkpoint is built by hand.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint
from nexusd.devcluster import DevClusterConfig, run_dev_cluster
from nexusd.devcluster.runtimes import (
    ANNOTATION_DURATION,
    ANNOTATION_EXIT_CODE,
    ANNOTATION_OOM,
    ANNOTATION_PULL_ERROR,
)
from nexusd.pipeline.classifying import Observation, Verdict, classify
from nexusd.pipeline.rules import default_rules

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from nexusd.devcluster import DevCluster

pytestmark = pytest.mark.timeout(20)

NS = "nexus"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
PODS = f"/api/v1/namespaces/{NS}/pods"
EVENTS = f"/api/v1/namespaces/{NS}/events"
RULES = default_rules()
Obj = dict[str, Any]


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> DevCluster:
    config = DevClusterConfig(
        state_dir=tmp_path, namespace=NS, backoff_base=0.0, job_sync_delay=0.0
    )
    started: DevCluster = await nursery.start(functools.partial(run_dev_cluster, config=config))
    return started


@pytest.fixture
async def http(cluster: DevCluster) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": "Bearer anything"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=10) as client:
        yield client


def manifest(
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    container: Obj | None = None,
    pod_spec: Obj | None = None,
    **spec: Any,
) -> Obj:
    main: Obj = {"name": "main", "image": "registry.example/algo:1.0", "command": ["python"]}
    template: Obj = {"spec": {"restartPolicy": "Never", "containers": [main | (container or {})]}}
    template["spec"] |= pod_spec or {}
    template["metadata"] = {"annotations": annotations or {}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": {"science.sneaksanddata.com/algorithm-template-name": "algo"},
        },
        "spec": {"backoffLimit": 0, **spec, "template": template},
    }


async def observe(
    http: httpx.AsyncClient, name: str, *, stage: Stage = Stage.RUNNING, after: float = 0.0
) -> Observation:
    """The run's Job, pods and Events as the maintainer would gather them, `after` s from now."""
    response = await http.get(f"{JOBS}/{name}")
    job = response.json() if response.status_code == 200 else None
    selector = {"labelSelector": f"batch.kubernetes.io/job-name={name}"}
    pods = (await http.get(PODS, params=selector)).json()["items"]
    involved = {name} | {p["metadata"]["name"] for p in pods}
    events = [
        e
        for e in (await http.get(EVENTS)).json()["items"]
        if e["involvedObject"]["name"] in involved
    ]
    now = dt.datetime.now(dt.UTC)
    run = Checkpoint(
        algorithm="algo",
        id=name,
        lifecycle_stage=stage,
        received_at=now,
        last_modified=now,
        sent_at=now,
    )
    return Observation(
        checkpoint=run,
        job=job,
        pods=pods,
        events=events,
        now=now + dt.timedelta(seconds=after),
        workgroup="wg-test",
    )


async def run_until(
    http: httpx.AsyncClient, job: Obj, seen: Callable[[Observation], bool], *, within: float = 8.0
) -> None:
    """Create the Job, then poll until the cluster shows the outcome under test."""
    created = await http.post(JOBS, json=job)
    assert created.status_code == 201, created.text
    with trio.fail_after(within):
        while not seen(await observe(http, job["metadata"]["name"])):
            await trio.sleep(0.02)


def job_condition(obs: Observation, ctype: str) -> bool:
    conditions = ((obs.job or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == ctype and c["status"] == "True" for c in conditions)


def waiting_reason(obs: Observation, *reasons: str) -> bool:
    for pod in obs.pods:
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            if (cs.get("state", {}).get("waiting") or {}).get("reason") in reasons:
                return True
    return False


def has_event(obs: Observation, kind: str, reason: str) -> bool:
    return any(e["involvedObject"]["kind"] == kind and e["reason"] == reason for e in obs.events)


async def verdict_of(
    http: httpx.AsyncClient, name: str, *, stage: Stage = Stage.RUNNING, after: float = 0.0
) -> Verdict:
    verdict = classify(await observe(http, name, stage=stage, after=after), RULES)
    assert verdict is not None
    return verdict


DEADLINE = "Algorithm exceeded its max allowed run time limit or retry attempt count."
LAUNCH = "Algorithm submission was buffered, but failed to launch on the target cluster: "


async def test_fatal_exit_code_via_pod_failure_policy(http: httpx.AsyncClient) -> None:
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}
    job = manifest(
        "pfp", annotations={ANNOTATION_EXIT_CODE: "42"}, backoffLimit=3, podFailurePolicy=policy
    )
    await run_until(http, job, lambda o: job_condition(o, "Failed"))
    verdict = await verdict_of(http, "pfp")
    assert (verdict.rule, verdict.stage, verdict.delete_job) == (
        "job-pod-failure-policy",
        Stage.FAILED,
        False,  # the Job has failed: kept for `kubectl logs`, collected later
    )
    assert verdict.cause == (
        "Algorithm encountered a fatal error during execution: "
        "container exited with code 42 (fatal exit code)"
    )
    assert "failed with exit code 42 matching FailJob rule at index 0" in verdict.details


async def test_backoff_limit_exceeded(http: httpx.AsyncClient) -> None:
    job = manifest("retries", annotations={ANNOTATION_EXIT_CODE: "3"}, backoffLimit=1)
    await run_until(http, job, lambda o: job_condition(o, "Failed"))
    verdict = await verdict_of(http, "retries")
    assert verdict == Verdict(
        "job-backoff-limit-exceeded",
        Stage.DEADLINE_EXCEEDED,
        DEADLINE,
        "Job has reached the specified backoff limit",
        False,
        None,
    )


async def test_active_deadline_exceeded(http: httpx.AsyncClient) -> None:
    job = manifest("slow", annotations={ANNOTATION_DURATION: "30"}, activeDeadlineSeconds=1)
    await run_until(http, job, lambda o: job_condition(o, "FailureTarget"))
    verdict = await verdict_of(http, "slow")
    assert (verdict.rule, verdict.stage, verdict.cause) == (
        "job-deadline-exceeded",
        Stage.DEADLINE_EXCEEDED,
        DEADLINE,
    )
    assert verdict.details == "Job was active longer than specified deadline"


async def test_oom_killed_names_the_limit_before_the_backoff_failure(
    http: httpx.AsyncClient,
) -> None:
    limits = {"resources": {"limits": {"memory": "1000Mi"}}}
    job = manifest("oom", annotations={ANNOTATION_OOM: "true"}, container=limits)
    await run_until(http, job, lambda o: job_condition(o, "Failed"))
    verdict = await verdict_of(http, "oom")
    assert (verdict.rule, verdict.stage, verdict.delete_job) == ("oom-killed", Stage.FAILED, False)
    assert "memory limit of 1000Mi" in verdict.details
    assert "OOMKilled, exit code 137" in verdict.details


async def test_image_pull_error_after_its_grace(http: httpx.AsyncClient) -> None:
    error = "rpc error: code = NotFound desc = manifest unknown"
    job = manifest("pull", annotations={ANNOTATION_PULL_ERROR: error})
    await run_until(http, job, lambda o: waiting_reason(o, "ImagePullBackOff"))
    early = await verdict_of(http, "pull", after=10)
    assert (early.rule, early.stage) == ("image-pull-failed", None)
    assert early.recheck_after is not None
    assert 100 < early.recheck_after <= 110
    verdict = await verdict_of(http, "pull", after=121)
    assert (verdict.rule, verdict.stage, verdict.delete_job) == (
        "image-pull-failed",
        Stage.SCHEDULING_FAILED,
        True,
    )
    assert verdict.cause == LAUNCH + "the container image could not be pulled."
    assert f'Failed to pull image "registry.example/algo:1.0": {error}' in verdict.details


async def test_invalid_image_name_at_once(http: httpx.AsyncClient) -> None:
    job = manifest("badimage", container={"image": "Registry.Example/Algo:1.0"})
    await run_until(http, job, lambda o: waiting_reason(o, "InvalidImageName"))
    verdict = await verdict_of(http, "badimage", stage=Stage.BUFFERED)
    assert (verdict.rule, verdict.stage, verdict.delete_job) == (
        "invalid-image-name",
        Stage.SCHEDULING_FAILED,
        True,
    )
    assert "couldn't parse image name" in verdict.details


async def test_missing_secret_is_named(http: httpx.AsyncClient) -> None:
    env = {
        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]
    }
    job = manifest("nosecret", container=env)
    await run_until(http, job, lambda o: waiting_reason(o, "CreateContainerConfigError"))
    assert (await verdict_of(http, "nosecret", after=5)).stage is None
    verdict = await verdict_of(http, "nosecret", after=31)
    assert (verdict.rule, verdict.stage) == ("missing-secret-or-configmap", Stage.SCHEDULING_FAILED)
    assert verdict.cause == LAUNCH + 'Secret "db" does not exist.'
    assert verdict.details.endswith('secret "db" not found')


async def test_unschedulable_node_selector(http: httpx.AsyncClient) -> None:
    job = manifest("nowhere", pod_spec={"nodeSelector": {"disktype": "ssd"}})
    await run_until(
        http,
        job,
        lambda o: any(
            c.get("reason") == "Unschedulable"
            for p in o.pods
            for c in p.get("status", {}).get("conditions") or []
        ),
    )
    assert (await verdict_of(http, "nowhere", stage=Stage.BUFFERED, after=60)).stage is None
    verdict = await verdict_of(http, "nowhere", stage=Stage.BUFFERED, after=301)
    assert (verdict.rule, verdict.stage, verdict.delete_job) == (
        "unschedulable",
        Stage.SCHEDULING_FAILED,
        True,
    )
    assert "workgroup wg-test" in verdict.cause
    assert "didn't match Pod's node affinity/selector" in verdict.details


async def test_missing_service_account_failed_create(http: httpx.AsyncClient) -> None:
    job = manifest("nosa", pod_spec={"serviceAccountName": "missing"})
    await run_until(http, job, lambda o: has_event(o, "Job", "FailedCreate"))
    assert (await verdict_of(http, "nosa", stage=Stage.BUFFERED, after=5)).stage is None
    verdict = await verdict_of(http, "nosa", stage=Stage.BUFFERED, after=31)
    assert (verdict.rule, verdict.stage, verdict.delete_job) == (
        "job-failed-create",
        Stage.SCHEDULING_FAILED,
        True,
    )
    assert verdict.cause == LAUNCH + (
        "Unable to launch a container for the algorithm - "
        "please review configuration and try again."
    )
    assert 'serviceaccount "missing" not found' in verdict.details


async def test_success_without_report(http: httpx.AsyncClient) -> None:
    await run_until(http, manifest("quiet"), lambda o: job_condition(o, "Complete"))
    started = await verdict_of(http, "quiet", stage=Stage.BUFFERED)
    assert (started.rule, started.stage) == ("pod-started", Stage.RUNNING)
    assert started.recheck_after is not None
    assert 50 < started.recheck_after <= 60
    assert (await verdict_of(http, "quiet")).stage is None
    verdict = await verdict_of(http, "quiet", after=61)
    assert (verdict.rule, verdict.stage, verdict.delete_job) == (
        "completed-without-report",
        Stage.FAILED,
        False,
    )


async def test_running_pod_marks_a_buffered_run_running(http: httpx.AsyncClient) -> None:
    job = manifest("busy", annotations={ANNOTATION_DURATION: "30"})
    await run_until(http, job, lambda o: has_event(o, "Pod", "Started"))
    assert await verdict_of(http, "busy", stage=Stage.BUFFERED) == Verdict(
        "pod-started", Stage.RUNNING, "", "", False, None
    )
    assert classify(await observe(http, "busy", after=3600), RULES) is None
