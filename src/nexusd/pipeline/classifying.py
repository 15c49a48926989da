"""Classifying: what the maintainer should do about one non-terminal run, as a pure function.

Input: an `Observation` — the run's checkpoint, its Job (or None), the Job's pods, the Events
about the Job or its pods, and the current time — plus a `RuleTable` (`nexusd.pipeline.rules`).
Output: a `Verdict` (the rule that fired, the stage to move to, the failure cause and details,
whether to delete the Job, and when to look again), or None when nothing applies.
Transition: none here. The maintainer applies a verdict with a conditional transition
(BUFFERED/RUNNING -> RUNNING or a terminal stage), so a run the receiver finished meanwhile is
never touched; a terminal checkpoint is never classified at all.

How the table is walked: rules are tried in order. A rule *matches* when one of its `match`
entries finds something (a condition, a container state, an Event) and its target stage is a
legal move from the run's stage (so `mark-running` skips a run that is already RUNNING). A
match that has not yet lasted `grace` seconds is *pending*: it does not fire and does not stop
the walk, but its remaining time becomes the verdict's `recheck_after`. The first rule that
fires decides. When nothing fires but something is pending, the verdict is a wait
(`stage=None`) naming the pending rule, so the maintainer knows when to come back.

A rule's `delete_job` deletes a Job that is still active (a pod pending or running, retries to
come). A Job that has already finished (a `Failed`, `FailureTarget` or `Complete` condition)
has nothing left to stop, so it is kept: its pods stay, `kubectl logs` can still show why the
algorithm failed, and the collector (`pipeline/collecting.py`) removes it after
`maintainer.failed_job_ttl`.

Timestamps are Kubernetes RFC 3339 strings; one that is missing or unparsable counts as "just
now", so a rule with a grace waits rather than acting on a guess.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

import attrs

from nexusd.core.lifecycle import Stage, is_legal
from nexusd.pipeline.rules import RUN_STAGES, Action, Source

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nexusd.core.records import Checkpoint
    from nexusd.pipeline.rules import Match, Rule, RuleTable

JsonObject = dict[str, Any]

_UNKNOWN = "(unknown)"
_NO_LIMIT = "(none set)"
_MISSING_OBJECT = re.compile(r'\b(secret|configmap) "([^"]+)" not found', re.IGNORECASE)
_MISSING_KEY = re.compile(r"couldn't find key (\S+) in (Secret|ConfigMap) (?:[^/\s]+/)?(\S+)")
_EXIT_CODE = re.compile(r"\bexit code (\d+)")
_INSUFFICIENT = re.compile(r"\bInsufficient ([\w./-]+)")
_FINISHED = frozenset({"Complete", "Failed", "FailureTarget"})


@attrs.frozen
class Observation:
    """Everything the maintainer saw of one run at `now`."""

    checkpoint: Checkpoint
    job: JsonObject | None
    """The batch/v1 Job as the API returns it, or None if there is none (yet, or any more)."""
    pods: list[JsonObject]
    """The Job's pods (label `batch.kubernetes.io/job-name=<id>`)."""
    events: list[JsonObject]
    """core/v1 Events whose involvedObject is the Job or one of its pods."""
    now: dt.datetime
    """Timezone-aware UTC."""
    workgroup: str = ""
    """The run's workgroup, for messages; may be empty."""


@attrs.frozen
class Verdict:
    rule: str
    """Name of the rule that fired (or is pending, for a wait)."""
    stage: Stage | None
    """The terminal stage to move to, RUNNING (the pod started), or None: just wait."""
    cause: str
    """algorithm_failure_cause (upstream's strings where upstream has one)."""
    details: str
    """algorithm_failure_details: the Kubernetes message, with specifics."""
    delete_job: bool
    """Delete the Job (propagation Background) after the transition: the rule says so and the
    Job is still active (a finished one is kept for `kubectl logs`, see the module doc)."""
    recheck_after: float | None
    """Seconds until a pending rule's grace is over and the verdict may change; None if none."""


@attrs.frozen
class _Hit:
    """One thing a match found, with the values its templates may use."""

    since: dt.datetime | None
    reason: str = ""
    message: str = ""
    pod: JsonObject | None = None
    container: str = ""
    exit_code: int | None = None


def classify(observation: Observation, rules: RuleTable) -> Verdict | None:
    """The verdict of the first rule that fires for this run, a wait, or None (see module doc)."""
    stage = observation.checkpoint.lifecycle_stage
    if stage not in RUN_STAGES:
        return None
    pending: tuple[float, Rule] | None = None
    for rule in rules.rules:
        if rule.stage is not None and not is_legal(stage, rule.stage):
            continue
        hit = _oldest_hit(rule, observation)
        if hit is None:
            continue
        remaining = rule.grace - _elapsed(hit.since, observation.now)
        if remaining > 0:
            if pending is None or remaining < pending[0]:
                pending = (remaining, rule)
            continue
        recheck = None if rule.action is Action.FAIL or pending is None else pending[0]
        return _verdict(rule, hit, observation, recheck)
    if pending is None:
        return None
    return Verdict(pending[1].name, None, "", "", delete_job=False, recheck_after=pending[0])


def _verdict(rule: Rule, hit: _Hit, obs: Observation, recheck: float | None) -> Verdict:
    values = _values(rule, hit, obs)
    return Verdict(
        rule=rule.name,
        stage=rule.stage,
        cause=rule.cause.format_map(values),
        details=rule.message.format_map(values),
        delete_job=rule.delete_job and not _finished(obs.job),
        recheck_after=recheck,
    )


def _finished(job: JsonObject | None) -> bool:
    """The Job has failed or completed (or is failing): its pods are stopped or stopping."""
    conditions = ((job or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") in _FINISHED and c.get("status") == "True" for c in conditions)


def _elapsed(since: dt.datetime | None, now: dt.datetime) -> float:
    return 0.0 if since is None else (now - since).total_seconds()


def _oldest_hit(rule: Rule, obs: Observation) -> _Hit | None:
    """The longest-lasting thing any of the rule's matches finds (it decides the grace)."""
    best: _Hit | None = None
    for match in rule.matches:
        if obs.checkpoint.lifecycle_stage not in match.run_stages:
            continue
        for hit in _hits(match, obs):
            if not _accepts(match, hit) or _excused(match, hit, obs):
                continue
            if best is None or _earlier(hit.since, best.since):
                best = hit
    return best


def _excused(match: Match, hit: _Hit, obs: Observation) -> bool:
    """The hit's pod has an Event the match names in `unless_event` (say, a scale-up)."""
    if not match.unless_events or hit.pod is None:
        return False
    name = (hit.pod.get("metadata") or {}).get("name")
    return any(
        (event.get("involvedObject") or {}).get("kind") == "Pod"
        and (event.get("involvedObject") or {}).get("name") == name
        and event.get("reason") in match.unless_events
        for event in obs.events
    )


def _earlier(a: dt.datetime | None, b: dt.datetime | None) -> bool:
    return a is not None and (b is None or a < b)


def _accepts(match: Match, hit: _Hit) -> bool:
    if match.reasons and hit.reason not in match.reasons:
        return False
    if match.message_regex is not None and not match.message_regex.search(hit.message):
        return False
    return not match.exit_codes or hit.exit_code in match.exit_codes


# -- what each source finds ------------------------------------------------------------------


def _hits(match: Match, obs: Observation) -> Iterator[_Hit]:
    if match.source is Source.JOB_CONDITION:
        if obs.job is not None:
            yield from _condition_hits(match, obs.job, None)
    elif match.source is Source.POD_CONDITION:
        for pod in obs.pods:
            yield from _condition_hits(match, pod, pod)
    elif match.source is Source.EVENT:
        yield from _event_hits(match, obs)
    elif match.source is Source.JOB_ABSENT:
        if obs.job is None:
            checkpoint = obs.checkpoint
            yield _Hit(checkpoint.sent_at or checkpoint.last_modified, reason="JobAbsent")
    else:
        for pod in obs.pods:
            yield from _container_hits(match.source, pod)


def _condition_hits(match: Match, obj: JsonObject, pod: JsonObject | None) -> Iterator[_Hit]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in match.types and cond.get("status") == match.status:
            yield _Hit(
                _time(cond.get("lastTransitionTime")),
                reason=cond.get("reason") or "",
                message=cond.get("message") or "",
                pod=pod,
            )


def _event_hits(match: Match, obs: Observation) -> Iterator[_Hit]:
    for event in obs.events:
        involved = event.get("involvedObject") or {}
        if match.kind and involved.get("kind") != match.kind:
            continue
        pod = _pod_named(obs, involved.get("name", "")) if involved.get("kind") == "Pod" else None
        yield _Hit(
            _event_time(event),
            reason=event.get("reason") or "",
            message=event.get("message") or "",
            pod=pod,
        )


def _container_hits(source: Source, pod: JsonObject) -> Iterator[_Hit]:
    status = pod.get("status") or {}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        name = cs.get("name", "")
        state = cs.get("state") or {}
        if source is Source.CONTAINER_WAITING and "waiting" in state:
            waiting = state["waiting"] or {}
            since = _time(status.get("startTime")) or _time(
                (pod.get("metadata") or {}).get("creationTimestamp")
            )
            yield _Hit(
                since,
                waiting.get("reason") or "",
                waiting.get("message") or "",
                pod,
                name,
            )
        elif source is Source.CONTAINER_RUNNING and "running" in state:
            running = state["running"] or {}
            yield _Hit(_time(running.get("startedAt")), "Running", "", pod, name)
        elif source is Source.CONTAINER_TERMINATED:
            for holder in (state, cs.get("lastState") or {}):
                term = holder.get("terminated")
                if term is None:
                    continue
                yield _Hit(
                    _time(term.get("finishedAt")) or _time(term.get("startedAt")),
                    term.get("reason") or "",
                    term.get("message") or "",
                    pod,
                    name,
                    term.get("exitCode"),
                )


def _pod_named(obs: Observation, name: str) -> JsonObject | None:
    return next((p for p in obs.pods if (p.get("metadata") or {}).get("name") == name), None)


# -- template values ----------------------------------------------------------------------


def _values(rule: Rule, hit: _Hit, obs: Observation) -> dict[str, str]:
    checkpoint = obs.checkpoint
    job_name = ((obs.job or {}).get("metadata") or {}).get("name") or checkpoint.id
    pod_name = ((hit.pod or {}).get("metadata") or {}).get("name", "")
    return {
        "reason": hit.reason,
        "message": hit.message,
        "exit_code": "" if hit.exit_code is None else str(hit.exit_code),
        "exit_status": _exit_status(hit, obs),
        "termination_line": _termination_line(hit, obs),
        "insufficient": _insufficient(hit.message),
        "memory_limit": _memory_limit(obs, hit),
        "workgroup": obs.workgroup or _UNKNOWN,
        "missing": _missing(hit.message),
        "event_message": _event_message(obs, pod_name) or hit.message,
        "pod": pod_name,
        "container": hit.container,
        "job": job_name,
        "algorithm": checkpoint.algorithm,
        "request_id": checkpoint.id,
        "since": "" if hit.since is None else hit.since.isoformat().replace("+00:00", "Z"),
        "elapsed": str(int(_elapsed(hit.since, obs.now))),
        "grace": str(int(rule.grace)),
    }


def _failed_termination(hit: _Hit, obs: Observation) -> JsonObject | None:
    """The `terminated` state the failure is about: the hit's own, else the latest non-zero
    exit of a container of the hit's pod (or of any of the Job's pods)."""
    if hit.exit_code is not None:
        return {"exitCode": hit.exit_code, "message": hit.message}
    best: tuple[str, JsonObject] | None = None
    for pod in [hit.pod] if hit.pod is not None else obs.pods:
        status = pod.get("status") or {}
        statuses = (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        )
        for cs in statuses:
            for holder in (cs.get("state") or {}, cs.get("lastState") or {}):
                term = holder.get("terminated")
                if not term or not isinstance(term.get("exitCode"), int) or not term["exitCode"]:
                    continue
                when = str(term.get("finishedAt") or "")
                if best is None or when >= best[0]:
                    best = (when, term)
    return None if best is None else best[1]


def _exit_status(hit: _Hit, obs: Observation) -> str:
    """`container exited with code 1`, from the pod, else from the matched message."""
    term = _failed_termination(hit, obs)
    if term is not None:
        return f"container exited with code {term['exitCode']}"
    found = _EXIT_CODE.search(hit.message)
    return f"container exited with code {found.group(1)}" if found else "container failed"


def _termination_line(hit: _Hit, obs: Observation) -> str:
    """`: <last line of the container's termination message>`, or "" when it left none."""
    term = _failed_termination(hit, obs) or {}
    lines = [line.strip() for line in str(term.get("message") or "").splitlines()]
    lines = [line for line in lines if line]
    return f": {lines[-1]}" if lines else ""


def _insufficient(message: str) -> str:
    """`cpu`, `memory`, `cpu and memory`: the resources a FitError says no node has enough of."""
    found = (str(name).rstrip(".") for name in _INSUFFICIENT.findall(message))
    names = list(dict.fromkeys(found))
    if not names:
        return _UNKNOWN
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _memory_limit(obs: Observation, hit: _Hit) -> str:
    """The container's memory limit from the pod spec, else from the Job's pod template."""
    specs = [(hit.pod or {}).get("spec") or {}]
    specs.append((((obs.job or {}).get("spec") or {}).get("template") or {}).get("spec") or {})
    for spec in specs:
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        named = [c for c in containers if c.get("name") == hit.container] or containers[:1]
        for container in named:
            limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
            if limit:
                return str(limit)
    return _NO_LIMIT


def _missing(message: str) -> str:
    """`Secret "x"` / `key "k" in ConfigMap "c"` out of a CreateContainerConfigError message."""
    found = _MISSING_OBJECT.search(message)
    if found:
        kind = "Secret" if found.group(1).lower() == "secret" else "ConfigMap"
        return f'{kind} "{found.group(2)}"'
    found = _MISSING_KEY.search(message)
    if found:
        return f'key "{found.group(1)}" in {found.group(2)} "{found.group(3)}"'
    return message or _UNKNOWN


def _event_message(obs: Observation, pod_name: str) -> str:
    """The pod's latest kubelet `Failed` Event that says more than `Error: <reason>`.

    A waiting state flips from ErrImagePull (with the registry's error) to ImagePullBackOff
    (`Back-off pulling image …`); the Event keeps the registry's words.
    """
    best: tuple[dt.datetime, str] | None = None
    for event in obs.events:
        involved = event.get("involvedObject") or {}
        message = event.get("message") or ""
        if involved.get("kind") != "Pod" or involved.get("name") != pod_name:
            continue
        if event.get("reason") != "Failed" or message.startswith("Error: "):
            continue
        when = _event_time(event, last=True) or dt.datetime.min.replace(tzinfo=dt.UTC)
        if best is None or when >= best[0]:
            best = (when, message)
    return "" if best is None else best[1]


# -- time ------------------------------------------------------------------------------------


def _event_time(event: JsonObject, *, last: bool = False) -> dt.datetime | None:
    """First occurrence (or last, with `last`): core/v1 timestamps, else the MicroTime."""
    order = (
        ("lastTimestamp", "eventTime", "firstTimestamp")
        if last
        else (
            "firstTimestamp",
            "eventTime",
            "lastTimestamp",
        )
    )
    for key in order:
        when = _time(event.get(key))
        if when is not None:
            return when
    return _time((event.get("metadata") or {}).get("creationTimestamp"))


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


__all__ = ["Observation", "Verdict", "classify"]
