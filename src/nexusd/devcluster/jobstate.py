"""What the Job controller remembers about a Job, and how a restarted one rebuilds it.

The real controller keeps its bookkeeping in the API: a pod is counted in the Job's status once
it is terminal and has lost the `batch.kubernetes.io/job-tracking` finalizer, and
`status.uncountedTerminatedPods` lists those whose counts are still being written. The
devcluster's controller keeps the same facts in a `JobState` in memory. When it meets a Job
that was already running before the cluster restarted on a persisted store, `restored_state`
reads them back from the stored Job and pods, so no pod is counted twice or lost. Its timers
(activeDeadlineSeconds, back-off, ttlSecondsAfterFinished) go on from the stored timestamps:
`startTime`, the pods' `finishedAt`, the time of the `Complete`/`Failed` condition.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from .objects import Obj

TRACKING = "batch.kubernetes.io/job-tracking"


@attrs.define
class JobState:
    """Times are `trio.current_time()` values."""

    counted: set[str] = attrs.Factory(set)
    started_at: float | None = None
    failures: int = 0  # failed pods (ignored ones too) for the exponential back-off
    last_failure_at: float = 0.0
    finished_at: float | None = None
    failure: tuple[str, str] | None = None
    retry_at: float | None = None  # back-off or FailedCreate retry
    create_failed_at: float = 0.0


def restored_state(job: Obj, pods: list[Obj], *, now: float, wall: dt.datetime) -> JobState:
    """The state of a Job seen for the first time: empty for a new one; for one a previous
    controller had started (`status.startTime` is set), rebuilt from the stored objects. `now`
    and `wall` are the same instant on the trio and the wall clock."""
    status = job.get("status") or {}
    if "startTime" not in status:
        return JobState()

    def trio_time(stamp: str) -> float:
        return now - (wall - dt.datetime.fromisoformat(stamp)).total_seconds()

    uncounted = status.get("uncountedTerminatedPods") or {}
    in_flight = {*uncounted.get("succeeded", ()), *uncounted.get("failed", ())}
    st = JobState(started_at=trio_time(status["startTime"]))
    for pod in pods:
        uid = pod["metadata"]["uid"]
        phase = (pod.get("status") or {}).get("phase")
        tracked = TRACKING in (pod["metadata"].get("finalizers") or [])
        if phase not in ("Succeeded", "Failed") or tracked or uid in in_flight:
            continue
        st.counted.add(uid)
        if phase == "Failed":
            st.failures += 1
            finished = _finished_at(pod)
            if finished is not None:
                st.last_failure_at = max(st.last_failure_at, trio_time(finished))
    for c in status.get("conditions") or []:
        if c["type"] in ("Complete", "Failed") and c.get("status") == "True":
            st.finished_at = trio_time(c["lastTransitionTime"])
    return st


def _finished_at(pod: Obj) -> str | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated") or {}
        if terminated.get("finishedAt"):
            return str(terminated["finishedAt"])
    return None
