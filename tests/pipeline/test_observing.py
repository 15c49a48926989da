"""The maintainer's ClusterView as an informer sink: pure, fed hand-built objects (the same
shapes the embedded cluster serves); nothing else is involved."""

from __future__ import annotations

from typing import Any

from nexusd.kube.client import EVENTS, JOBS, PODS, WatchEvent
from nexusd.pipeline.observing import ROUTINE_EVENT_REASONS, ClusterView, event_selector
from nexusd.pipeline.rules import default_rules, parse_rules

LABELS = {
    "science.sneaksanddata.com/algorithm-template-name": "algo",
    "science.sneaksanddata.com/nexus-component": "algorithm-run",
}


def job(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": LABELS}}


def pod(name: str, run: str) -> dict[str, Any]:
    labels = {**LABELS, "batch.kubernetes.io/job-name": run}
    return {"metadata": {"name": name, "labels": labels}}


def event(name: str, kind: str, about: str, rv: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": str(rv)},
        "involvedObject": {"kind": kind, "name": about},
        "reason": name,
        "lastTimestamp": f"2026-01-01T00:00:{rv:02d}Z",
    }


def test_indexes_pods_and_events_by_run_and_wakes_the_run() -> None:
    woken: list[tuple[str, str]] = []
    view = ClusterView(shard="dev", on_change=woken.append)
    view.replace_all(JOBS, [job("run-1")])
    view.replace_all(PODS, [pod("run-1-abcde", "run-1")])
    view.replace_all(
        EVENTS,
        [
            event("created", "Job", "run-1", 2),
            event("started", "Pod", "run-1-abcde", 3),
            event("scaled", "Deployment", "run-1", 4),  # not about a run: not kept
        ],
    )
    assert woken == []  # nothing wakes before the initial lists are in
    view.synced = True
    assert [p["metadata"]["name"] for p in view.pods("run-1")] == ["run-1-abcde"]
    assert [e["reason"] for e in view.events("run-1")] == ["created", "started"]
    view.apply(EVENTS, WatchEvent("ADDED", event("backoff", "Pod", "run-1-abcde", 5)))
    assert woken == [("algo", "run-1")]
    assert [e["reason"] for e in view.events("run-1")][-1] == "backoff"


def test_a_deleted_job_takes_its_events_along() -> None:
    view = ClusterView(shard="dev", on_change=lambda key: None)
    view.replace_all(JOBS, [job("run-1"), job("run-2")])
    view.replace_all(PODS, [pod("run-1-abcde", "run-1"), pod("run-2-fghij", "run-2")])
    view.replace_all(
        EVENTS,
        [
            event("a", "Job", "run-1", 1),
            event("b", "Pod", "run-1-abcde", 2),
            event("c", "Pod", "run-2-fghij", 3),
        ],
    )
    view.synced = True
    view.apply(JOBS, WatchEvent("DELETED", job("run-1")))
    assert view.job("run-1") is None
    assert view.events("run-1") == []
    assert [e["reason"] for e in view.events("run-2")] == ["c"]


def test_only_events_a_rule_looks_at_wake_their_run() -> None:
    woken: list[tuple[str, str]] = []
    view = ClusterView(shard="dev", on_change=woken.append, event_reasons=frozenset({"Started"}))
    view.replace_all(JOBS, [job("run-1")])
    view.replace_all(PODS, [pod("run-1-abcde", "run-1")])
    view.synced = True
    view.apply(EVENTS, WatchEvent("ADDED", event("Pulled", "Pod", "run-1-abcde", 5)))
    assert woken == []  # kept for the next reconcile, but it cannot change a verdict
    assert [e["reason"] for e in view.events("run-1")] == ["Pulled"]
    view.apply(EVENTS, WatchEvent("ADDED", event("Started", "Pod", "run-1-abcde", 6)))
    assert woken == [("algo", "run-1")]


def test_the_event_watch_leaves_out_routine_reasons_no_rule_uses() -> None:
    reasons = default_rules().event_reasons()
    assert reasons is not None
    assert {"FailedCreate", "Started", "TriggeredScaleUp"} <= reasons
    selector = event_selector(reasons)
    assert selector is not None
    left_out = {term.removeprefix("reason!=") for term in selector.split(",")}
    assert left_out == set(ROUTINE_EVENT_REASONS) - reasons
    assert "Scheduled" in left_out
    assert "Started" not in left_out  # the pod-started rule looks at it
    # a table with an event match of any reason needs every Event
    any_reason = parse_rules(
        '[[rule]]\nname = "x"\naction = "fail"\nstage = "FAILED"\ncause = "c"\n'
        '[rule.match]\nsource = "event"\n'
    )
    assert any_reason.event_reasons() is None
    assert event_selector(None) is None
