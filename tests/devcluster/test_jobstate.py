"""`restored_state`: what a restarted Job controller reads back from a stored Job and its pods
(plain unit tests on dicts; the restart itself is in test_restart.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from nexusd.devcluster.jobstate import TRACKING, JobState, restored_state

WALL = dt.datetime(2026, 1, 1, 0, 1, 0, tzinfo=dt.UTC)  # the same instant as NOW
NOW = 1000.0


def pod(uid: str, phase: str, *, tracked: bool = False, finished: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "name": uid}
    if tracked:
        meta["finalizers"] = [TRACKING]
    status: dict[str, Any] = {"phase": phase}
    if finished:
        terminated = {"exitCode": 1, "finishedAt": finished}
        status["containerStatuses"] = [{"name": "main", "state": {"terminated": terminated}}]
    return {"metadata": meta, "status": status}


def test_a_job_never_synced_starts_empty() -> None:
    assert restored_state({"status": {}}, [], now=NOW, wall=WALL) == JobState()


def test_a_running_job_goes_on_from_its_stored_state() -> None:
    job = {
        "status": {
            "startTime": "2026-01-01T00:00:00Z",
            "uncountedTerminatedPods": {"failed": ["in-flight"]},
        }
    }
    pods = [
        pod("done", "Succeeded"),
        pod("failed", "Failed", finished="2026-01-01T00:00:30Z"),
        pod("in-flight", "Failed"),  # counts being written when the cluster stopped
        pod("tracked", "Failed", tracked=True),  # finished, not yet counted
        pod("running", "Running", tracked=True),
    ]
    st = restored_state(job, pods, now=NOW, wall=WALL)
    assert st.started_at == NOW - 60  # activeDeadlineSeconds counts from startTime
    assert st.counted == {"done", "failed"}
    assert (st.failures, st.last_failure_at) == (1, NOW - 30)  # back-off from finishedAt
    assert st.finished_at is None


def test_a_finished_job_keeps_its_finish_time() -> None:
    complete = {"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:45Z"}
    job = {"status": {"startTime": "2026-01-01T00:00:00Z", "conditions": [complete]}}
    st = restored_state(job, [pod("done", "Succeeded")], now=NOW, wall=WALL)
    assert st.finished_at == NOW - 15  # ttlSecondsAfterFinished counts from here
