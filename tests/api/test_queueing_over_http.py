"""Back-pressure and restart recovery, seen from a client.

Real: `nexusd dev` on loopback with SQLite and payload files, the embedded cluster over HTTP
with its scripted kubelet. Nothing is faked.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import trio

from nexusd.modes import dev
from tests.conftest import StartNexus, dev_settings, wait_for_stage

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running


async def test_full_queue_answers_429_and_keeps_what_it_accepted(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    # one worker, one token a thousand seconds: the queue fills after a few runs
    nexus = await start_nexus(
        **{
            "submission.workers": 1,
            "submission.rate": 0.001,
            "submission.burst": 1,
            "submission.queue_capacity": 1,
        }
    )
    accepted: list[str] = []
    with trio.fail_after(10):
        while True:
            response = await http.post(
                f"{nexus.url}/algorithm/v1/run/hello", json={"algorithmParameters": {}}
            )
            if response.status_code == 429:
                break
            assert response.status_code == 202
            accepted.append(response.json()["requestId"])
    assert 1 <= len(accepted) <= 3
    assert response.headers["retry-after"] == "1"
    assert response.text == "The submission queue for cluster dev is full. Please retry later."
    for request_id in accepted:
        await wait_for_stage(http, nexus.url, "hello", request_id, "BUFFERED", "RUNNING")


async def test_buffered_runs_are_submitted_after_a_restart(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    slow = {  # two tokens: the hello-warm pool's Deployment, then the first run's Job
        "submission.workers": 1,
        "submission.rate": 0.001,
        "submission.burst": 2,
        "node.host_name": "scheduler-0",
    }
    async with trio.open_nursery() as nursery:
        first: Running = await nursery.start(
            functools.partial(dev.run, dev_settings(tmp_path / "data", **slow))
        )
        ids = []
        for _ in range(3):
            response = await http.post(
                f"{first.url}/algorithm/v1/run/hello", json={"algorithmParameters": {}}
            )
            ids.append(response.json()["requestId"])
        await wait_for_stage(http, first.url, "hello", ids[0], "RUNNING")
        nursery.cancel_scope.cancel()  # the process dies with two runs still queued
    async with trio.open_nursery() as nursery:
        second: Running = await nursery.start(
            functools.partial(
                dev.run, dev_settings(tmp_path / "data", **{"node.host_name": "scheduler-0"})
            )
        )
        for request_id in ids[1:]:
            await wait_for_stage(http, second.url, "hello", request_id, "RUNNING")
        nursery.cancel_scope.cancel()
