"""The maintainer's classification engine as a pure function: nothing is faked or running.

Jobs, pods and Events are the real objects of the k8s-golden captures (timestamps re-anchored
at a fixed T0) or hand-built in the same shapes; the rule table is the packaged default.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexusd.core.errors import ConfigError
from nexusd.core.lifecycle import Stage, is_legal
from nexusd.core.records import Checkpoint
from nexusd.pipeline.classifying import Observation, Verdict, classify
from nexusd.pipeline.rules import (
    Action,
    RuleTable,
    default_rules,
    default_rules_text,
    load_rules,
    parse_rules,
)

GOLDEN = Path(__file__).resolve().parents[3] / "shared" / "reference" / "k8s-golden"
REPO = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
RULES = default_rules()
DEADLINE_CAUSE = "Algorithm exceeded its max allowed run time limit or retry attempt count."
LAUNCH = "Algorithm submission was buffered, but failed to launch on the target cluster: "
FATAL = "Algorithm encountered a fatal error during execution: "

Obj = dict[str, Any]


# -- builders ----------------------------------------------------------------------------------


def ts(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def checkpoint(stage: Stage = Stage.RUNNING, *, sent_at: dt.datetime | None = T0) -> Checkpoint:
    return Checkpoint(
        algorithm="algo",
        id="run-1",
        lifecycle_stage=stage,
        received_at=T0,
        last_modified=T0,
        sent_at=sent_at,
    )


def observe(
    *,
    at: float,
    stage: Stage = Stage.RUNNING,
    job: Obj | None = None,
    pods: list[Obj] | None = None,
    events: list[Obj] | None = None,
    workgroup: str = "wg-1",
) -> Observation:
    return Observation(
        checkpoint=checkpoint(stage),
        job=job,
        pods=pods or [],
        events=events or [],
        now=T0 + dt.timedelta(seconds=at),
        workgroup=workgroup,
    )


def cond(
    ctype: str, reason: str = "", message: str = "", *, at: float = 0, status: str = "True"
) -> Obj:
    return {
        "type": ctype,
        "status": status,
        "lastProbeTime": ts(at),
        "lastTransitionTime": ts(at),
        "reason": reason,
        "message": message,
    }


def job(*conditions: Obj, memory: str | None = None) -> Obj:
    container: Obj = {"name": "main", "image": "registry.example/algo:1.0"}
    if memory:
        container["resources"] = {"limits": {"memory": memory}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "run-1", "namespace": "nexus"},
        "spec": {"template": {"spec": {"containers": [container]}}},
        "status": {"conditions": list(conditions)} if conditions else {"active": 1},
    }


def pod(
    state: Obj | None = None,
    *,
    name: str = "run-1-abcde",
    memory: str | None = None,
    start: float = 0,
    conditions: list[Obj] | None = None,
) -> Obj:
    container: Obj = {"name": "main", "image": "registry.example/algo:1.0"}
    if memory:
        container["resources"] = {"limits": {"memory": memory}}
    status: Obj = {"phase": "Pending", "startTime": ts(start), "conditions": conditions or []}
    if state is not None:
        status["containerStatuses"] = [{"name": "main", "state": state, "lastState": {}}]
    return {
        "metadata": {"name": name, "namespace": "nexus", "creationTimestamp": ts(start)},
        "spec": {"containers": [container]},
        "status": status,
    }


def waiting(reason: str, message: str = "") -> Obj:
    return {"waiting": {"reason": reason, "message": message}}


def terminated(code: int, reason: str, *, at: float = 0) -> Obj:
    return {
        "terminated": {"exitCode": code, "reason": reason, "startedAt": ts(0), "finishedAt": ts(at)}
    }


def event(kind: str, name: str, reason: str, message: str = "", *, at: float = 0) -> Obj:
    return {
        "metadata": {"name": f"{name}.0123456789abcdef", "namespace": "nexus"},
        "involvedObject": {"kind": kind, "name": name, "namespace": "nexus"},
        "reason": reason,
        "message": message,
        "firstTimestamp": ts(at),
        "lastTimestamp": ts(at),
        "count": 1,
        "type": "Warning",
        "eventTime": None,
    }


# -- golden files --------------------------------------------------------------------------------

_TIME = re.compile(r"<(micro)?time:T0\+([0-9.]+)s>")


def _retime(value: Any) -> Any:
    """Golden placeholders `<time:T0+Ns>` -> real RFC 3339 times at our T0."""
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            when = T0 + dt.timedelta(seconds=float(m.group(2)))
            fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if m.group(1) else "%Y-%m-%dT%H:%M:%SZ"
            return when.strftime(fmt)

        return _TIME.sub(repl, value)
    if isinstance(value, list):
        return [_retime(v) for v in value]
    if isinstance(value, dict):
        return {k: _retime(v) for k, v in value.items()}
    return value


def golden(name: str) -> Obj:
    path = GOLDEN / name
    if not path.exists():
        pytest.skip(f"golden capture {path} is not available in this checkout")
    data: Obj = _retime(json.loads(path.read_text()))
    return data


def golden_pods(data: Obj, key: str = "podsFinal") -> list[Obj]:
    pods = data[key]
    items: list[Obj] = pods.get("items", [pods])
    return items


@pytest.mark.parametrize(
    ("name", "rule", "stage", "cause"),
    [
        (
            "02-job-fails-exit3-backofflimit0.json",
            "job-backoff-limit-exceeded",
            Stage.DEADLINE_EXCEEDED,
            DEADLINE_CAUSE,
        ),
        (
            "03-job-backofflimit2-retries.json",
            "job-backoff-limit-exceeded",
            Stage.DEADLINE_EXCEEDED,
            DEADLINE_CAUSE,
        ),
        (
            "04-job-activedeadlineseconds.json",
            "job-deadline-exceeded",
            Stage.DEADLINE_EXCEEDED,
            DEADLINE_CAUSE,
        ),
        (
            "05a-podfailurepolicy-failjob-exit42.json",
            "job-pod-failure-policy",
            Stage.FAILED,
            FATAL + "container exited with code 42 (fatal exit code)",
        ),
    ],
)
def test_golden_failed_jobs(name: str, rule: str, stage: Stage, cause: str) -> None:
    data = golden(name)
    final = data["jobFinal"]
    failed = next(c for c in final["status"]["conditions"] if c["type"] == "Failed")
    obs = Observation(
        checkpoint=checkpoint(),
        job=final,
        pods=golden_pods(data),
        events=data["events"],
        now=T0 + dt.timedelta(seconds=60),
    )
    # the Job has already failed: it is kept for `kubectl logs` (the collector removes it)
    assert classify(obs, RULES) == Verdict(rule, stage, cause, failed["message"], False, None)


def test_golden_pod_failure_policy_details_name_the_exit_code() -> None:
    data = golden("05a-podfailurepolicy-failjob-exit42.json")
    obs = observe(at=5, job=data["jobFinal"], pods=golden_pods(data), events=data["events"])
    verdict = classify(obs, RULES)
    assert verdict is not None
    assert "failed with exit code 42 matching FailJob rule" in verdict.details


def test_golden_unschedulable_waits_its_grace_then_names_workgroup_and_scheduler() -> None:
    data = golden("07a-unschedulable-nodeselector.json")
    pending_pod = data["podWhileUnschedulable"]
    message = pending_pod["status"]["conditions"][0]["message"]
    before = observe(
        at=100, job=data["jobWhileUnschedulable"], pods=[pending_pod], events=data["events"]
    )
    assert classify(before, RULES) == Verdict("unschedulable", None, "", "", False, 200.0)
    after = observe(
        at=301, job=data["jobWhileUnschedulable"], pods=[pending_pod], events=data["events"]
    )
    verdict = classify(after, RULES)
    assert verdict is not None
    assert (verdict.rule, verdict.stage, verdict.delete_job) == (
        "unschedulable",
        Stage.SCHEDULING_FAILED,
        True,
    )
    assert "workgroup wg-1" in verdict.cause
    assert verdict.details.endswith(message)
    assert "could not be scheduled for 301s" in verdict.details


def test_golden_complete_without_report_waits_then_fails() -> None:
    data = golden("01-job-succeeds.json")
    final, pods = data["jobFinal"], golden_pods(data)
    complete_at = 1  # the Complete condition's lastTransitionTime is T0+1s in the capture
    early = classify(observe(at=complete_at + 59, job=final, pods=pods), RULES)
    assert early == Verdict("completed-without-report", None, "", "", False, 1.0)
    late = classify(observe(at=complete_at + 60, job=final, pods=pods), RULES)
    assert late is not None
    assert (late.rule, late.stage, late.delete_job, late.recheck_after) == (
        "completed-without-report",
        Stage.FAILED,
        False,
        None,
    )
    assert late.cause == FATAL + "algorithm exited without reporting a result."
    assert "no result was reported within 60s" in late.details


def test_golden_buffered_run_with_finished_pod_is_marked_running_first() -> None:
    data = golden("01-job-succeeds.json")
    obs = observe(at=11, stage=Stage.BUFFERED, job=data["jobFinal"], pods=golden_pods(data))
    # the completion rule is still in its grace: mark RUNNING now, look again when it ends
    assert classify(obs, RULES) == Verdict("pod-started", Stage.RUNNING, "", "", False, 50.0)


# -- every default rule, hand-built ----------------------------------------------------------


def test_oom_killed_names_the_memory_limit_and_wins_over_the_job_failure() -> None:
    pfp = cond(
        "Failed",
        "PodFailurePolicy",
        "Container main for pod nexus/run-1-abcde failed with exit code 137",
    )
    obs = observe(at=1, job=job(pfp), pods=[pod(terminated(137, "OOMKilled"), memory="1000Mi")])
    verdict = classify(obs, RULES)
    assert verdict is not None
    assert (verdict.rule, verdict.stage, verdict.delete_job) == ("oom-killed", Stage.FAILED, False)
    assert verdict.details.startswith(
        "Algorithm was killed for using more than its memory limit of 1000Mi; "
        "resubmit it with more memory (customConfiguration.computeResources)."
    )
    assert "pod run-1-abcde: OOMKilled, exit code 137" in verdict.details


def test_oom_killed_before_backoff_limit_and_limit_from_job_template() -> None:
    backoff = cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    obs = observe(at=1, job=job(backoff, memory="2Gi"), pods=[pod(terminated(137, "OOMKilled"))])
    verdict = classify(obs, RULES)
    assert verdict is not None
    assert verdict.rule == "oom-killed"
    assert "memory limit of 2Gi" in verdict.details


def test_oom_killed_without_any_limit_says_so() -> None:
    verdict = classify(observe(at=1, pods=[pod(terminated(137, "OOMKilled"))]), RULES)
    assert verdict is not None
    assert "memory limit of (none set)" in verdict.details


@pytest.mark.parametrize(
    ("reason", "rule", "stage", "cause"),
    [
        ("DeadlineExceeded", "job-deadline-exceeded", Stage.DEADLINE_EXCEEDED, DEADLINE_CAUSE),
        (
            "BackoffLimitExceeded",
            "job-backoff-limit-exceeded",
            Stage.DEADLINE_EXCEEDED,
            DEADLINE_CAUSE,
        ),
        (
            "PodFailurePolicy",
            "job-pod-failure-policy",
            Stage.FAILED,
            FATAL + "container failed (fatal exit code)",
        ),
        (
            "MaxFailedIndexesExceeded",
            "job-failed",
            Stage.FAILED,
            FATAL + "MaxFailedIndexesExceeded",
        ),
    ],
)
@pytest.mark.parametrize("ctype", ["Failed", "FailureTarget"])
def test_job_failure_reasons(reason: str, rule: str, stage: Stage, cause: str, ctype: str) -> None:
    obs = observe(at=0, job=job(cond(ctype, reason, "the controller's words")))
    verdict = Verdict(rule, stage, cause, "the controller's words", False, None)
    assert classify(obs, RULES) == verdict


def test_invalid_image_name_fails_at_once() -> None:
    message = 'Failed to apply default image tag "Bad//Image": couldn\'t parse image name'
    obs = observe(at=0, stage=Stage.BUFFERED, pods=[pod(waiting("InvalidImageName", message))])
    assert classify(obs, RULES) == Verdict(
        "invalid-image-name",
        Stage.SCHEDULING_FAILED,
        LAUNCH + "the container image name is invalid.",
        message,
        True,
        None,
    )


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_image_pull_errors_wait_their_grace_and_quote_the_registry(reason: str) -> None:
    registry = 'Failed to pull image "registry.example/algo:9": manifest unknown'
    events = [
        event("Pod", "run-1-abcde", "Failed", registry, at=3),
        event("Pod", "run-1-abcde", "Failed", "Error: ErrImagePull", at=3),
        event("Pod", "run-1-abcde", "Failed", "Error: ImagePullBackOff", at=20),
    ]
    pods = [pod(waiting(reason, 'Back-off pulling image "registry.example/algo:9"'), start=2)]
    early = classify(observe(at=100, pods=pods, events=events), RULES)
    assert early == Verdict("image-pull-failed", None, "", "", False, 22.0)
    late = classify(observe(at=122, pods=pods, events=events), RULES)
    assert late == Verdict(
        "image-pull-failed",
        Stage.SCHEDULING_FAILED,
        LAUNCH + "the container image could not be pulled.",
        registry + " (still failing after 120s)",
        True,
        None,
    )


@pytest.mark.parametrize(
    ("message", "missing"),
    [
        ('secret "db-credentials" not found', 'Secret "db-credentials"'),
        ('configmap "settings" not found', 'ConfigMap "settings"'),
        ("couldn't find key password in Secret nexus/db", 'key "password" in Secret "db"'),
    ],
)
def test_missing_secret_or_configmap_is_named_after_a_short_grace(
    message: str, missing: str
) -> None:
    pods = [pod(waiting("CreateContainerConfigError", message))]
    assert classify(observe(at=29, pods=pods), RULES) == Verdict(
        "missing-secret-or-configmap", None, "", "", False, 1.0
    )
    verdict = classify(observe(at=30, pods=pods), RULES)
    assert verdict is not None
    assert (verdict.stage, verdict.delete_job) == (Stage.SCHEDULING_FAILED, True)
    assert verdict.cause == LAUNCH + f"{missing} does not exist."
    assert verdict.details == (
        f"The algorithm's environment refers to {missing}, "
        f"which was still missing after 30s: {message}"
    )


def test_failed_create_uses_upstreams_cause_and_the_event_message() -> None:
    message = (
        'Error creating: pods "run-1-" is forbidden: error looking up service account '
        'nexus/algo: serviceaccount "algo" not found'
    )
    events = [
        event("Job", "run-1", "FailedCreate", message, at=0),
        event("Job", "run-1", "FailedCreate", message, at=10),
    ]
    assert classify(
        observe(at=25, stage=Stage.BUFFERED, job=job(), events=events), RULES
    ) == Verdict("job-failed-create", None, "", "", False, 5.0)
    assert classify(
        observe(at=30, stage=Stage.BUFFERED, job=job(), events=events), RULES
    ) == Verdict(
        "job-failed-create",
        Stage.SCHEDULING_FAILED,
        LAUNCH + "Unable to launch a container for the algorithm - "
        "please review configuration and try again.",
        message,
        True,
        None,
    )


def test_started_event_marks_a_buffered_run_running() -> None:
    events = [event("Pod", "run-1-abcde", "Started", "Started container main")]
    obs = observe(at=1, stage=Stage.BUFFERED, job=job(), events=events)
    assert classify(obs, RULES) == Verdict("pod-started", Stage.RUNNING, "", "", False, None)


def test_running_container_marks_a_buffered_run_running_but_not_a_running_one() -> None:
    pods = [pod({"running": {"startedAt": ts(1)}})]
    assert classify(observe(at=2, stage=Stage.BUFFERED, job=job(), pods=pods), RULES) == Verdict(
        "pod-started", Stage.RUNNING, "", "", False, None
    )
    assert classify(observe(at=2, stage=Stage.RUNNING, job=job(), pods=pods), RULES) is None


def test_a_container_killed_before_it_started_is_not_a_start() -> None:
    never = terminated(137, "ContainerStatusUnknown")
    assert (
        classify(observe(at=2, stage=Stage.BUFFERED, job=job(), pods=[pod(never)]), RULES) is None
    )


def test_job_vanished_only_for_running_runs_after_its_grace() -> None:
    assert classify(observe(at=3600, stage=Stage.BUFFERED), RULES) is None
    assert classify(observe(at=599), RULES) == Verdict("job-vanished", None, "", "", False, 1.0)
    verdict = classify(observe(at=600), RULES)
    assert verdict is not None
    assert (verdict.stage, verdict.delete_job) == (Stage.FAILED, False)


def test_a_healthy_run_needs_nothing() -> None:
    pods = [pod({"running": {"startedAt": ts(1)}})]
    assert classify(observe(at=5000, job=job(), pods=pods), RULES) is None


@pytest.mark.parametrize("stage", [s for s in Stage if s not in (Stage.BUFFERED, Stage.RUNNING)])
def test_terminal_and_new_runs_are_never_classified(stage: Stage) -> None:
    failed = job(cond("Failed", "BackoffLimitExceeded", "x"))
    obs = observe(at=10_000, stage=stage, job=failed, pods=[pod(terminated(137, "OOMKilled"))])
    assert classify(obs, RULES) is None


def test_missing_timestamps_count_as_now_so_grace_rules_wait() -> None:
    stuck = pod(waiting("ErrImagePull", "x"))
    del stuck["status"]["startTime"]
    del stuck["metadata"]["creationTimestamp"]
    verdict = classify(observe(at=10_000, job=job(), pods=[stuck]), RULES)
    assert verdict == Verdict("image-pull-failed", None, "", "", False, 120.0)


def test_pending_rule_shortest_remaining_time_is_reported() -> None:
    pods = [
        pod(waiting("ErrImagePull", "x"), name="a", start=0),
        pod(waiting("CreateContainerConfigError", 'secret "s" not found'), name="b", start=0),
    ]
    assert classify(observe(at=10, pods=pods), RULES) == Verdict(
        "missing-secret-or-configmap", None, "", "", False, 20.0
    )


# -- the table and its file ------------------------------------------------------------------


def test_packaged_defaults_and_config_copy_are_identical() -> None:
    copy_path = REPO / "config" / "maintainer-rules.toml"
    assert copy_path.read_text(encoding="utf-8") == default_rules_text()
    assert load_rules(copy_path) == parse_rules(default_rules_text(), source=str(copy_path))
    assert load_rules() is default_rules()


def test_default_order() -> None:
    assert RULES.names() == [
        "oom-killed",
        "job-deadline-exceeded",
        "job-backoff-limit-exceeded",
        "job-pod-failure-policy",
        "job-failed",
        "invalid-image-name",
        "image-pull-failed",
        "missing-secret-or-configmap",
        "insufficient-resources",
        "unschedulable",
        "job-failed-create",
        "completed-without-report",
        "job-vanished",
        "pod-started",
    ]
    graces = {rule.name: rule.grace for rule in RULES.rules}
    assert graces["unschedulable"] == 300
    assert graces["image-pull-failed"] == 120
    assert graces["invalid-image-name"] == 0


def test_with_graces_overrides_one_rule() -> None:
    table = RULES.with_graces({"unschedulable": 10})
    data = golden("07a-unschedulable-nodeselector.json")
    obs = observe(at=11, job=data["jobWhileUnschedulable"], pods=[data["podWhileUnschedulable"]])
    verdict = classify(obs, table)
    assert verdict is not None
    assert verdict.stage is Stage.SCHEDULING_FAILED
    with pytest.raises(ConfigError, match="no rule named 'nope'"):
        RULES.with_graces({"nope": 1})
    with pytest.raises(ConfigError, match="'unschedulable' key 'grace'"):
        RULES.with_graces({"unschedulable": -1})


def test_a_custom_wait_rule_shields_later_rules() -> None:
    table = parse_rules(
        """
        [[rule]]
        name = "tolerate-pull-errors"
        action = "wait"
        [rule.match]
        source = "container-waiting"
        reason = "ErrImagePull"
        message_regex = "rate limit"
        """
        + default_rules_text()
    )
    assert table.rules[0].action is Action.WAIT
    pods = [pod(waiting("ErrImagePull", "toomanyrequests: rate limit exceeded"))]
    assert classify(observe(at=1000, pods=pods), table) == Verdict(
        "tolerate-pull-errors", None, "", "", False, None
    )
    other = [pod(waiting("ErrImagePull", "manifest unknown"))]
    verdict = classify(observe(at=1000, pods=other), table)
    assert verdict is not None
    assert verdict.rule == "image-pull-failed"


def test_exit_codes_match() -> None:
    table = parse_rules(
        """
        [[rule]]
        name = "exit-42"
        action = "fail"
        stage = "FAILED"
        cause = "exit {exit_code}"
        [rule.match]
        source = "container-terminated"
        exit_codes = [42, 43]
        """
    )
    assert classify(observe(at=1, pods=[pod(terminated(3, "Error"))]), table) is None
    verdict = classify(observe(at=1, pods=[pod(terminated(42, "Error"))]), table)
    assert verdict is not None
    assert verdict.cause == "exit 42"


_GOOD = """
[[rule]]
name = "r"
action = "fail"
stage = "FAILED"
cause = "c"
[rule.match]
source = "job-condition"
type = "Failed"
"""


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (("[[rule]]", "bogus = 1\n[[rule]]"), "unknown top-level key"),
        (('cause = "c"', 'cause = "c"\ncolour = "red"'), "rule 'r' key 'colour': unknown key"),
        (('type = "Failed"', 'type = "Failed"\nfoo = 1'), "rule 'r' key 'match'.foo: unknown key"),
        (
            ('type = "Failed"', 'type = "Failed"\nexit_codes = [1]'),
            "'match'.exit_codes: unknown key",
        ),
        (
            ('type = "Failed"', 'type = "Failed"\nmessage_regex = "(["'),
            "'match'.message_regex: bad regular",
        ),
        (
            ('stage = "FAILED"', 'stage = "EXPLODED"'),
            "rule 'r' key 'stage': 'EXPLODED' is not one of",
        ),
        (
            ('stage = "FAILED"', 'stage = "COMPLETED"'),
            "rule 'r' key 'stage': COMPLETED is not a failure",
        ),
        (('action = "fail"', 'action = "explode"'), "rule 'r' key 'action'"),
        (('cause = "c"', 'cause = "c {nope}"'), "rule 'r' key 'cause': unknown placeholder {nope}"),
        (('cause = "c"', 'cause = "c {"'), "rule 'r' key 'cause': bad template"),
        (('cause = "c"', 'cause = "{message:d}"'), "rule 'r' key 'cause': bad template"),
        (('cause = "c"', 'message = "{pod!x}"\ncause = "c"'), "rule 'r' key 'message': bad"),
        (('cause = "c"', 'cause = "c"\ngrace = -1'), "rule 'r' key 'grace'"),
        (('cause = "c"', 'cause = "c"\ngrace = "5s"'), "rule 'r' key 'grace'"),
        (('cause = "c"', 'cause = "c"\ndelete_job = "yes"'), "rule 'r' key 'delete_job'"),
        (('cause = "c"', 'cause = ""'), "rule 'r' key 'cause': required"),
        (('type = "Failed"', ""), "'match'.type: required"),
        (
            ('source = "job-condition"', 'source = "pod-log"'),
            "'match'.source: 'pod-log' is not one of",
        ),
        (('name = "r"', 'name = ""'), "key 'name': required"),
        (
            ('type = "Failed"', 'type = "Failed"\nrun_stage = "NEW"'),
            "'match'.run_stage: only BUFFERED",
        ),
        (
            ('[rule.match]\nsource = "job-condition"\ntype = "Failed"', "match = 3"),
            "rule 'r' key 'match': required",
        ),
        (('[rule.match]\nsource = "job-condition"\ntype = "Failed"', ""), "key 'match': required"),
        (('name = "r"', 'name = "r"\n'), None),
        (("", "not toml ["), "not valid TOML"),
    ],
)
def test_rule_file_validation(edit: tuple[str, str], error: str | None) -> None:
    text = _GOOD.replace(*edit, 1) if edit[0] else _GOOD + edit[1]
    if error is None:
        assert parse_rules(text).names() == ["r"]
        return
    with pytest.raises(ConfigError, match=re.escape(error)):
        parse_rules(text, source="rules.toml")


def test_duplicate_names_and_action_stage_mismatches_are_refused() -> None:
    with pytest.raises(ConfigError, match="rule 'r' key 'name': defined twice"):
        parse_rules(_GOOD + _GOOD)
    wait = _GOOD.replace('action = "fail"', 'action = "wait"')
    with pytest.raises(ConfigError, match="a 'wait' rule has no stage"):
        parse_rules(wait)
    running = _GOOD.replace('action = "fail"', 'action = "mark-running"').replace(
        'cause = "c"', 'cause = "c"\ndelete_job = true'
    )
    with pytest.raises(ConfigError, match="a 'mark-running' rule moves to RUNNING"):
        parse_rules(running)
    running = running.replace('stage = "FAILED"', 'stage = "RUNNING"')
    with pytest.raises(ConfigError, match="only a 'fail' rule may delete the Job"):
        parse_rules(running)


def test_unreadable_rule_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read maintainer rules"):
        load_rules(tmp_path / "absent.toml")


# -- property: a verdict is always a legal move ----------------------------------------------

_JOB_REASONS = ["DeadlineExceeded", "BackoffLimitExceeded", "PodFailurePolicy", "Other", ""]
_WAITING = [
    "InvalidImageName",
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "ContainerCreating",
]
_TERMINATED = ["OOMKilled", "Completed", "Error", "ContainerStatusUnknown"]

times = st.integers(min_value=0, max_value=1000)
job_conditions = st.lists(
    st.builds(
        cond,
        st.sampled_from(["Failed", "FailureTarget", "Complete", "SuccessCriteriaMet", "Suspended"]),
        st.sampled_from(_JOB_REASONS),
        st.text(max_size=20),
        at=times,
    ),
    max_size=3,
)
container_states = st.one_of(
    st.none(),
    st.builds(
        waiting, st.sampled_from(_WAITING), st.sampled_from(['secret "s" not found', "", "x"])
    ),
    st.builds(terminated, st.integers(0, 255), st.sampled_from(_TERMINATED), at=times),
    times.map(lambda t: {"running": {"startedAt": ts(t)}}),
)
pods_strategy = st.lists(
    st.builds(
        pod,
        container_states,
        start=times,
        memory=st.sampled_from([None, "1Gi"]),
        conditions=st.lists(
            st.builds(
                cond,
                st.just("PodScheduled"),
                st.sampled_from(["Unschedulable", ""]),
                at=times,
                status=st.sampled_from(["True", "False"]),
            ),
            max_size=1,
        ),
    ),
    max_size=3,
)
events_strategy = st.lists(
    st.builds(
        event,
        st.sampled_from(["Job", "Pod"]),
        st.just("run-1-abcde"),
        st.sampled_from(["FailedCreate", "Started", "Failed", "BackOff", "Scheduled"]),
        st.text(max_size=20),
        at=times,
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    stage=st.sampled_from(list(Stage)),
    conditions=st.one_of(st.none(), job_conditions),
    pods=pods_strategy,
    events=events_strategy,
    at=st.integers(min_value=0, max_value=2000),
)
def test_verdict_stage_is_always_a_legal_move(
    stage: Stage, conditions: list[Obj] | None, pods: list[Obj], events: list[Obj], at: int
) -> None:
    obs = observe(
        at=at,
        stage=stage,
        job=None if conditions is None else job(*conditions),
        pods=copy.deepcopy(pods),
        events=events,
    )
    verdict = classify(obs, RULES)
    if verdict is None:
        return
    assert verdict.stage is None or is_legal(stage, verdict.stage)
    assert verdict.recheck_after is None or verdict.recheck_after > 0
    if verdict.stage is None:
        assert not verdict.delete_job


def test_rule_table_is_immutable_value() -> None:
    assert isinstance(RULES, RuleTable)
    assert parse_rules(default_rules_text(), source="x").rules == RULES.rules
