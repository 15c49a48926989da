"""Failure messages a user can act on (issue 11, part 7), as pure functions and one collector pass.

Classification runs the packaged rule table on the k8s-golden captures (re-anchored at T0) and on
objects hand-built in their shapes: a FitError "Insufficient cpu" pod is the golden 07a pod with
the scheduler's 1.36 text for that case. The collector pass uses stand-ins for the store, the
payloads, the shard's API client and its cluster view (it only reads `view.jobs()` and calls
`client.delete`), so only its decisions are real.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from nexusd.core.clock import ManualClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint
from nexusd.kube.shards import Shard
from nexusd.kube.throttling import ShardThrottle
from nexusd.pipeline.classifying import Observation, classify
from nexusd.pipeline.collecting import DEFAULT_FAILED_JOB_TTL, Collector
from nexusd.pipeline.rules import default_rules
from tests.pipeline.test_classifying import (
    FATAL,
    LAUNCH,
    T0,
    cond,
    event,
    golden,
    golden_pods,
    job,
    observe,
    pod,
    ts,
)

if TYPE_CHECKING:
    import datetime as dt

RULES = default_rules()
Obj = dict[str, Any]
FIT_CPU = (
    "0/1 nodes are available: 1 Insufficient cpu. no new claims to deallocate, preemption: "
    "0/1 nodes are available: 1 No preemption victims found for incoming pod."
)
FIT_BOTH = (
    "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory. no new claims to "
    "deallocate, preemption: 0/2 nodes are available: 2 No preemption victims found for "
    "incoming pod."
)


# -- a crash: the cause says what happened, once ----------------------------------------------


def crashed_pod(code: int, message: str = "") -> Obj:
    term: Obj = {"exitCode": code, "reason": "Error", "startedAt": ts(0), "finishedAt": ts(1)}
    if message:
        term["message"] = message
    return pod({"terminated": term})


def pfp_job(code: int) -> Obj:
    words = f"Container main for pod nexus/run-1-abcde failed with exit code {code} matching "
    return job(cond("Failed", "PodFailurePolicy", words + "FailJob rule at index 1", at=1))


def test_golden_pod_failure_policy_cause_names_the_exit_code_once() -> None:
    data = golden("05a-podfailurepolicy-failjob-exit42.json")
    obs = observe(at=5, job=data["jobFinal"], pods=golden_pods(data), events=data["events"])
    verdict = classify(obs, RULES)
    assert verdict is not None
    assert verdict.cause == FATAL + "container exited with code 42 (fatal exit code)"
    assert verdict.cause.count("fatal error during execution") == 1
    # the Job's own words stay in the details
    assert "failed with exit code 42 matching FailJob rule at index 1" in verdict.details


def test_crash_like_hello_names_exit_code_1() -> None:
    verdict = classify(observe(at=5, job=pfp_job(1), pods=[crashed_pod(1)]), RULES)
    assert verdict is not None
    assert (verdict.rule, verdict.stage) == ("job-pod-failure-policy", Stage.FAILED)
    assert verdict.cause == (
        "Algorithm encountered a fatal error during execution: "
        "container exited with code 1 (fatal exit code)"
    )


def test_crash_cause_ends_with_the_last_line_of_the_termination_message() -> None:
    message = "Traceback (most recent call last):\n  File main.py\nValueError: bad input\n\n"
    verdict = classify(observe(at=5, job=pfp_job(1), pods=[crashed_pod(1, message)]), RULES)
    assert verdict is not None
    assert (
        verdict.cause
        == FATAL + "container exited with code 1 (fatal exit code): ValueError: bad input"
    )


def test_crash_whose_pod_is_gone_takes_the_exit_code_from_the_job_condition() -> None:
    verdict = classify(observe(at=5, job=pfp_job(42)), RULES)
    assert verdict is not None
    assert verdict.cause == FATAL + "container exited with code 42 (fatal exit code)"


# -- a failed Job is kept; an active one is still deleted ---------------------------------------


def test_a_failed_job_is_kept_an_unschedulable_one_deleted() -> None:
    failed = classify(observe(at=5, job=pfp_job(1), pods=[crashed_pod(1)]), RULES)
    assert failed is not None
    assert failed.delete_job is False
    unschedulable = classify(insufficient_obs(at=121), RULES)
    assert unschedulable is not None
    assert unschedulable.stage is Stage.SCHEDULING_FAILED
    assert unschedulable.delete_job is True


# -- an impossible resource request: SCHEDULING_FAILED naming the resource ----------------------


def unschedulable_pod(message: str) -> Obj:
    data = golden("07a-unschedulable-nodeselector.json")
    shaped: Obj = copy.deepcopy(data["podWhileUnschedulable"])
    scheduled = next(c for c in shaped["status"]["conditions"] if c["type"] == "PodScheduled")
    scheduled["message"] = message
    shaped["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "64"}}
    return shaped


def insufficient_obs(
    at: float, message: str = FIT_CPU, events: list[Obj] | None = None
) -> Observation:
    data = golden("07a-unschedulable-nodeselector.json")
    return observe(
        at=at,
        job=data["jobWhileUnschedulable"],
        pods=[unschedulable_pod(message)],
        events=events,
    )


def test_insufficient_cpu_fails_after_its_grace_naming_cpu() -> None:
    early = classify(insufficient_obs(at=60), RULES)
    assert early is not None
    assert (early.rule, early.stage, early.recheck_after) == ("insufficient-resources", None, 60.0)
    verdict = classify(insufficient_obs(at=120), RULES)
    assert verdict is not None
    assert (verdict.rule, verdict.stage) == ("insufficient-resources", Stage.SCHEDULING_FAILED)
    assert verdict.cause == LAUNCH + f"no node can fit the pod: Insufficient cpu ({FIT_CPU})"
    assert "asks for more cpu than any node of workgroup wg-1 has free" in verdict.details
    assert "could not be scheduled for 120s" in verdict.details


def test_insufficient_cpu_and_memory_names_both() -> None:
    verdict = classify(insufficient_obs(at=130, message=FIT_BOTH), RULES)
    assert verdict is not None
    assert verdict.cause.startswith(
        LAUNCH + "no node can fit the pod: Insufficient cpu and memory ("
    )


def test_the_insufficient_grace_is_shorter_than_a_typical_deadline() -> None:
    graces = {rule.name: rule.grace for rule in RULES.rules}
    assert graces["insufficient-resources"] == 120
    assert graces["insufficient-resources"] < graces["unschedulable"]


@pytest.mark.parametrize(
    "message",
    [
        # a node that would fit exists but is fenced off: the workgroup's problem, not the size
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint(s). no new "
        "claims to deallocate, preemption: 0/2 nodes are available: 1 No preemption victims "
        "found for incoming pod, 1 Preemption is not helpful for scheduling.",
        # pods finish and free their slot
        "0/1 nodes are available: 1 Too many pods. no new claims to deallocate, preemption: 0/1 "
        "nodes are available: 1 No preemption victims found for incoming pod.",
    ],
)
def test_other_fit_errors_wait_for_the_general_unschedulable_grace(message: str) -> None:
    verdict = classify(insufficient_obs(at=200, message=message), RULES)
    assert verdict is not None
    assert (verdict.rule, verdict.stage) == ("unschedulable", None)


def test_a_pod_the_autoscaler_is_adding_a_node_for_gets_the_general_grace() -> None:
    name = unschedulable_pod(FIT_CPU)["metadata"]["name"]
    scale_up = event("Pod", name, "TriggeredScaleUp", "pod triggered scale-up: [{wg 1->2}]")
    verdict = classify(insufficient_obs(at=200, events=[scale_up]), RULES)
    assert verdict is not None
    assert (verdict.rule, verdict.stage) == ("unschedulable", None)
    late = classify(insufficient_obs(at=301, events=[scale_up]), RULES)
    assert late is not None
    assert (late.rule, late.stage) == ("unschedulable", Stage.SCHEDULING_FAILED)


# -- the collector removes a failed Job after failed_job_ttl, once its run is finished ----------


@attrs.define
class Store:
    stage: Stage

    async def get(self, *, algorithm: str, request_id: str) -> Checkpoint:
        return Checkpoint(
            algorithm=algorithm,
            id=request_id,
            lifecycle_stage=self.stage,
            received_at=T0,
            last_modified=T0,
        )

    async def purge(self, *, finished_before: dt.datetime, limit: int) -> list[tuple[str, str]]:
        return []


class Payloads:
    async def purge_older_than(self, *, before: dt.datetime, limit: int) -> int:
        return 0


@attrs.define
class Client:
    deleted: list[str] = attrs.Factory(list)

    async def delete(self, resource: object, *, namespace: str, name: str, **_: Any) -> None:
        self.deleted.append(name)


@attrs.define
class View:
    listed: list[Obj]

    def jobs(self) -> list[Obj]:
        return self.listed


def collector(
    stage: Stage, listed: list[Obj], **ttl: float
) -> tuple[Collector, Client, ManualClock]:
    client, clock = Client(), ManualClock(T0)
    made = Collector(
        store=Store(stage),  # type: ignore[arg-type]
        payloads=Payloads(),  # type: ignore[arg-type]
        shards={"dev": Shard(name="dev", client=client, namespace="nexus")},  # type: ignore[arg-type]
        throttles={"dev": ShardThrottle(rate=1000, burst=1000)},
        views={"dev": View(listed)},  # type: ignore[dict-item]
        clock=clock,
        checkpoint_retention=1e9,
        payload_retention=1e9,
        job_ttl_slack=60.0,
        **ttl,
    )
    return made, client, clock


def labelled(job_obj: Obj) -> Obj:
    job_obj["metadata"]["labels"] = {"science.sneaksanddata.com/algorithm-template-name": "algo"}
    job_obj["spec"]["ttlSecondsAfterFinished"] = 300
    return job_obj


async def test_failed_job_is_kept_for_failed_job_ttl_then_collected() -> None:
    made, client, clock = collector(Stage.FAILED, [labelled(pfp_job(1))], failed_job_ttl=5.0)
    clock.advance(5)  # the Failed condition is at T0+1s
    assert (await made.collect()).jobs == 0
    assert client.deleted == []
    clock.advance(1)
    assert (await made.collect()).jobs == 1
    assert client.deleted == ["run-1"]


async def test_failed_job_of_a_run_not_yet_classified_is_left_alone() -> None:
    made, client, clock = collector(Stage.RUNNING, [labelled(pfp_job(1))], failed_job_ttl=5.0)
    clock.advance(60)
    assert (await made.collect()).jobs == 0
    assert client.deleted == []


async def test_failed_job_ttl_defaults_to_the_completed_jobs_ttl() -> None:
    assert DEFAULT_FAILED_JOB_TTL == 300.0
    made, _, clock = collector(Stage.FAILED, [labelled(pfp_job(1))])
    clock.advance(300)
    assert (await made.collect()).jobs == 0
    clock.advance(1)
    assert (await made.collect()).jobs == 1


async def test_completed_jobs_still_follow_their_ttl_and_the_slack() -> None:
    done = labelled(job(cond("Complete", at=1)))
    made, _, clock = collector(Stage.COMPLETED, [done], failed_job_ttl=5.0)
    clock.advance(300 + 59)
    assert (await made.collect()).jobs == 0
    clock.advance(2)
    assert (await made.collect()).jobs == 1
