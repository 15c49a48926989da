"""CrashLoopBackOff: the back-off arithmetic as a pure unit (no cluster), the kubelet's real
10 s / 20 s / 40 s delays over HTTP on trio's autojump clock (virtual time), and a
`restartPolicy: OnFailure` Job whose container restarts in place until its backoffLimit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from nexusd.devcluster import ANNOTATION_DURATION, ANNOTATION_EXIT_CODE
from nexusd.devcluster.restarts import RestartBackoff, go_duration, restarts
from nexusd.devcluster.runtimes import Outcome

from .conftest import JOBS, PODS, job_events, job_manifest, start_cluster, wait_job_condition
from .workloads_http import DEPLOYMENTS, deployment

if TYPE_CHECKING:
    import pathlib

    import trio


def test_first_restart_is_immediate_then_delays_double_up_to_the_cap() -> None:
    backoff = RestartBackoff(base=10, cap=300)
    now, delays = 0.0, []
    for _ in range(8):
        now += 1  # each instance runs 1 s
        delay = backoff.delay_for(now)
        delays.append(delay)
        now += delay
        backoff.restarted(now)
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300]


def test_a_container_that_ran_ten_minutes_starts_over() -> None:
    backoff = RestartBackoff(base=10, cap=300)
    backoff.restarted(0.0)  # first restart
    assert backoff.delay_for(100.0) == 10
    backoff.restarted(110.0)
    assert backoff.delay_for(110.0 + 600) == 20  # exactly 10 min: still backing off
    backoff.restarted(730.0)
    assert backoff.delay_for(730.0 + 601) == 0  # ran longer than 2 x cap: immediate
    backoff.restarted(1331.0)
    assert backoff.delay_for(1332.0) == 10


@pytest.mark.parametrize(
    ("policy", "code", "evicted", "expected"),
    [
        ("Always", 0, "", True),
        ("Always", 3, "", True),
        ("OnFailure", 3, "", True),
        ("OnFailure", 0, "", False),
        ("Never", 3, "", False),
        ("Always", 137, "TerminationByKubelet", False),
    ],
)
def test_restart_policy(policy: str, code: int, evicted: str, expected: bool) -> None:
    assert restarts(policy, Outcome(code, "Error", evicted=evicted)) is expected


def test_durations_are_spelled_like_go() -> None:
    assert [go_duration(s) for s in (0.2, 10, 40, 80, 160, 300, 3600)] == [
        "200ms",
        "10s",
        "40s",
        "1m20s",
        "2m40s",
        "5m0s",
        "1h0m0s",
    ]


async def test_kubelet_backs_off_10_then_20_then_40_seconds(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    import trio

    cluster = await start_cluster(nursery, tmp_path)  # real default base: 10 s
    crash = {ANNOTATION_EXIT_CODE: "1", ANNOTATION_DURATION: "1"}
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        await http.post(DEPLOYMENTS, json=deployment("crash", 1, annotations=crash))
        seen: list[tuple[int, str]] = []  # (restartCount, waiting message) as they change
        started = trio.current_time()
        while len({m for _, m in seen if m}) < 3 and trio.current_time() - started < 200:
            items: list[dict[str, Any]] = (
                await http.get(PODS, params={"labelSelector": "app=crash"})
            ).json()["items"]
            for pod in items:
                for cs in pod["status"].get("containerStatuses") or []:
                    waiting = (cs.get("state") or {}).get("waiting") or {}
                    entry = (cs.get("restartCount", 0), waiting.get("message", "").split(" r")[0])
                    if not seen or seen[-1] != entry:
                        seen.append(entry)
            await trio.sleep(0.5)
    messages = [(count, m) for count, m in seen if m.startswith("back-off")]
    assert messages[:3] == [(1, "back-off 10s"), (2, "back-off 20s"), (3, "back-off 40s")]


async def test_an_onfailure_job_restarts_in_place_until_its_backoff_limit(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    cluster = await start_cluster(nursery, tmp_path, restart_backoff_base=0.2)
    manifest = job_manifest(
        "flaky", annotations={ANNOTATION_EXIT_CODE: "1", ANNOTATION_DURATION: "0.05"}
    )
    manifest["spec"]["backoffLimit"] = 2
    manifest["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        await http.post(JOBS, json=manifest)
        job = await wait_job_condition(http, "flaky", "Failed")
        assert job["status"]["conditions"][-1]["reason"] == "BackoffLimitExceeded"
        events = await job_events(http, "flaky")
    created = [m for _, reason, m in events if reason == "SuccessfulCreate"]
    assert len(created) == 1  # restarted in place, never replaced
    pod = created[0].removeprefix("Created pod: ")
    assert ("Normal", "SuccessfulDelete", f"Deleted pod: {pod}") in events
