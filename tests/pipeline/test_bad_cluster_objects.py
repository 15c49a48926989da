"""Failure isolation in the maintainer: random, often malformed Jobs, Pods and Events go through
the informer sink (`ClusterView`), classification (the default rule table) and reconciliation,
and the maintainer keeps running while a well-formed run still gets its verdict.

Real: the in-memory checkpoint store (a full store implementation, checked by the contract
tests), `ClusterView`, `Reconciler`, the default rules and the maintainer's `RunQueue`, driven
the way `Maintainer` drives them (workers calling `reconcile_key_isolated`, then a sweep calling
`reconcile_isolated`). Faked: no cluster is connected, so `shards` and `throttles` are empty and
a verdict that deletes a Job fails like an unreachable cluster would (isolated, counted). Time is
a `ManualClock`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import hypothesis.strategies as st
import trio
from hypothesis import HealthCheck, given, settings

from nexusd.core.clock import ManualClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, SubmissionEntry
from nexusd.kube.client import EVENTS, JOBS, PODS, WatchEvent
from nexusd.pipeline.observing import ALGORITHM_LABEL, JOB_NAME_LABEL, ClusterView
from nexusd.pipeline.reconciling import Reconciler
from nexusd.pipeline.rules import default_rules
from nexusd.pipeline.waking import RunQueue
from nexusd.stores.memory import MemoryCheckpointStore

ALGORITHM = "algo"
GOOD = "good-run"
BAD_RUNS = ["bad-0", "bad-1", "bad-2"]
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# -- random objects ----------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
timestamps = (
    st.sampled_from(
        ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z", "yesterday", "", "2026-13-45T99:00:00"]
    )
    | json_values
)
run_names = st.sampled_from(BAD_RUNS)


def maybe(key: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """`{key: value}` or `{}`: a field that may be missing."""
    return st.one_of(st.just({}), values.map(lambda value: {key: value}))


@st.composite
def metadata(draw: st.DrawFn, *, name: str, job: str | None) -> Any:
    labels: dict[str, Any] = {ALGORITHM_LABEL: draw(st.sampled_from([ALGORITHM, "", 7]))}
    if job is not None:
        labels[JOB_NAME_LABEL] = job
    shape = draw(st.sampled_from(["good", "odd-labels", "odd", "missing"]))
    if shape == "missing":
        return draw(st.just(None) | json_values)
    if shape == "odd":
        return draw(json_values)
    return {
        "name": name,
        "labels": labels if shape == "good" else draw(json_values),
        "resourceVersion": draw(st.sampled_from(["12", "abc", "", "9" * 40]) | json_values),
        **draw(maybe("creationTimestamp", timestamps)),
    }


conditions = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["Complete", "Failed", "PodScheduled", "Ready"]) | json_values,
            "status": st.sampled_from(["True", "False"]) | json_values,
            "reason": st.sampled_from(["BackoffLimitExceeded", "Unschedulable"]) | json_values,
            "message": json_values,
            "lastTransitionTime": timestamps,
        },
    )
    | json_values,
    max_size=3,
)
container_statuses = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "name": json_values,
            "state": st.fixed_dictionaries(
                {},
                optional={
                    "waiting": json_values,
                    "running": json_values,
                    "terminated": json_values,
                },
            )
            | json_values,
            "lastState": json_values,
        },
    )
    | json_values,
    max_size=2,
)
status = (
    st.fixed_dictionaries(
        {},
        optional={
            "conditions": conditions,
            "containerStatuses": container_statuses,
            "initContainerStatuses": container_statuses,
            "startTime": timestamps,
            "failed": json_values,
        },
    )
    | json_values
)


@st.composite
def jobs(draw: st.DrawFn) -> dict[str, Any]:
    run = draw(run_names)
    return {"metadata": draw(metadata(name=run, job=None)), **draw(maybe("status", status))}


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    run = draw(run_names)
    name = f"{run}-{draw(st.sampled_from(['aaaaa', 'bbbbb']))}"
    return {
        "metadata": draw(metadata(name=name, job=run)),
        **draw(maybe("status", status)),
        **draw(maybe("spec", json_values)),
    }


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    run = draw(run_names)
    about = draw(st.sampled_from([run, f"{run}-aaaaa", "other"]))
    involved = {
        "kind": draw(st.sampled_from(["Job", "Pod", "Node"]) | json_values),
        "name": about,
    }
    event: dict[str, Any] = {
        "metadata": draw(metadata(name=f"{about}.{draw(st.integers(0, 5))}", job=None)),
        **draw(maybe("involvedObject", st.just(involved) | json_values)),
        **draw(
            maybe("reason", st.sampled_from(["FailedCreate", "Started", "Failed"]) | json_values)
        ),
        **draw(maybe("message", json_values)),
    }
    for field in ("lastTimestamp", "eventTime", "firstTimestamp"):
        event.update(draw(maybe(field, timestamps)))
    return event


watch_types = st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"])
changes = st.lists(
    st.tuples(st.sampled_from([JOBS, PODS, EVENTS]), watch_types, jobs() | pods() | events()),
    max_size=25,
)
listed = st.tuples(
    st.lists(jobs(), max_size=3), st.lists(pods(), max_size=3), st.lists(events(), max_size=6)
)

# -- the well-formed run: its pod is running, so `pod-started` moves it to RUNNING ------------


def good_job() -> dict[str, Any]:
    return {"metadata": {"name": GOOD, "labels": {ALGORITHM_LABEL: ALGORITHM}}, "status": {}}


def good_pod() -> dict[str, Any]:
    labels = {ALGORITHM_LABEL: ALGORITHM, JOB_NAME_LABEL: GOOD}
    running = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    return {
        "metadata": {"name": f"{GOOD}-zzzzz", "labels": labels},
        "status": {"containerStatuses": [{"name": "algorithm", "state": running}]},
    }


async def add_run(store: MemoryCheckpointStore, request_id: str, stage: Stage) -> None:
    await store.create(
        checkpoint=Checkpoint(
            algorithm=ALGORITHM,
            id=request_id,
            lifecycle_stage=stage,
            received_at=START,
            last_modified=START,
            received_by_host="test",
            cluster="dev",
            sent_at=START,
        ),
        submission=SubmissionEntry(algorithm=ALGORITHM, id=request_id, cluster="dev", template={}),
    )


async def maintain(
    initial: tuple[list[Any], list[Any], list[Any]],
    watched: list[tuple[Any, str, dict[str, Any]]],
    advance: float,
    stages: list[Stage],
) -> tuple[Stage, int]:
    clock = ManualClock(START)
    store = MemoryCheckpointStore(clock=clock)
    await add_run(store, GOOD, Stage.BUFFERED)
    for request_id, stage in zip(BAD_RUNS, stages, strict=False):
        await add_run(store, request_id, stage)
    queue = RunQueue(capacity=100)
    view = ClusterView(shard="dev", on_change=queue.add, on_resync=queue.wake_due)
    reconciler = Reconciler(
        store=store,
        shards={},
        throttles={},
        views={"dev": view},
        rules=default_rules(),
        clock=clock,
        recheck=queue.later,
    )
    bad_jobs, bad_pods, bad_events = initial
    view.replace_all(JOBS, [good_job(), *bad_jobs])
    view.replace_all(PODS, [good_pod(), *bad_pods])
    view.replace_all(EVENTS, bad_events)
    view.synced = True
    for resource, kind, obj in watched:
        view.apply(resource, WatchEvent(kind, obj))
    view.resync(JOBS)
    clock.advance(advance)
    # the maintainer's two paths: workers on the queue, then the sweep
    while len(queue):
        algorithm, request_id = key = await queue.get()
        try:
            await reconciler.reconcile_key_isolated(algorithm, request_id)
        finally:
            queue.done(key)
    for checkpoint in await store.stale(
        stages={Stage.NEW, Stage.BUFFERED, Stage.RUNNING},
        modified_before=clock.now() + dt.timedelta(seconds=1),
        limit=100,
    ):
        await reconciler.reconcile_isolated(checkpoint)
    good = await store.get(algorithm=ALGORITHM, request_id=GOOD)
    assert good is not None
    return good.lifecycle_stage, reconciler.errors


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    initial=listed,
    watched=changes,
    advance=st.sampled_from([0.0, 45.0, 700.0, 4000.0]),
    stages=st.lists(st.sampled_from([Stage.BUFFERED, Stage.RUNNING]), min_size=3, max_size=3),
)
def test_bad_objects_never_stop_the_maintainer_and_a_good_run_gets_its_verdict(
    initial: tuple[list[Any], list[Any], list[Any]],
    watched: list[tuple[Any, str, dict[str, Any]]],
    advance: float,
    stages: list[Stage],
) -> None:
    stage, _errors = trio.run(maintain, initial, watched, advance, stages)
    assert stage is Stage.RUNNING


def test_an_object_the_rules_trip_over_is_counted_and_skipped() -> None:
    """A pod whose status is a list (the rule table expects a mapping) fails only its run."""
    broken = {
        "metadata": {
            "name": "bad-0-aaaaa",
            "labels": {ALGORITHM_LABEL: ALGORITHM, JOB_NAME_LABEL: "bad-0"},
        },
        "status": {"containerStatuses": ["not a mapping"]},
    }
    stage, errors = trio.run(
        maintain, ([], [broken], []), [], 0.0, [Stage.BUFFERED, Stage.BUFFERED, Stage.BUFFERED]
    )
    assert stage is Stage.RUNNING
    assert errors >= 1
