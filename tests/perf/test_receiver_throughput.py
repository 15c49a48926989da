"""Benchmark: completions per second of one `nexusd receiver` process on SQLite.

RUNS runs are put RUNNING straight into the store; a receiver process then takes
`POST /algorithm/v1/complete/...` for them from `wrk` (Debian package `wrk`; a Python load
generator would be the bottleneck) with 64 connections. Printed against a `GET /healthz`
baseline from the same wrk, same process, same run.

    nox -s perf -- -k receiver
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from typing import TYPE_CHECKING

import trio

from nexusd.core.clock import SystemClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint
from nexusd.stores.signing import JOB_ATTEMPT, CompletionTokens, load_or_create_secret
from nexusd.stores.sqlite import SqliteCheckpointStore
from tests.perf.measuring import wrk
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from pathlib import Path

RUNS = 60_000
SCRIPT = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", paths[(i %% #paths) + 1],
    {["Content-Type"] = "application/json"},
    '{"resultUri":"https://r","errorCause":"","errorDetails":""}')
end
"""


async def prepare(data: Path) -> list[str]:
    store = await SqliteCheckpointStore.open(path=data / "checkpoints.sqlite3", clock=SystemClock())
    ids = [str(uuid.uuid4()) for _ in range(RUNS)]
    now = dt.datetime.now(dt.UTC)
    async with trio.open_nursery() as nursery:
        for request_id in ids:
            checkpoint = Checkpoint(
                algorithm="bench",
                id=request_id,
                lifecycle_stage=Stage.RUNNING,
                received_at=now,
                last_modified=now,
            )
            nursery.start_soon(
                lambda checkpoint=checkpoint: store.create(checkpoint=checkpoint, submission=None)
            )
    await store.aclose()
    return ids


async def test_receiver_completions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    ids = await prepare(data)
    # Each run's completion URL as its pod gets it: with the run's token (the receiver's key).
    tokens = CompletionTokens(load_or_create_secret(data / "url.key"))
    paths = [
        f"/t/{tokens.token(algorithm='bench', request_id=i, attempt=JOB_ATTEMPT)}"
        f"/algorithm/v1/complete/bench/requests/{i}"
        for i in ids
    ]
    (tmp_path / "ids.txt").write_text("\n".join(paths))
    (tmp_path / "complete.lua").write_text(SCRIPT % (tmp_path / "ids.txt"))
    env = {"NEXUS__DATA__DIR": str(data), "NEXUS__LOGGING__LEVEL": "WARNING"}
    async with nexusd_process(
        "receiver", env=env, cwd=tmp_path, log=tmp_path / "receiver.log"
    ) as receiver:
        healthz = functools.partial(wrk, f"{receiver.url}/healthz", connections=64, seconds=8)
        complete = functools.partial(
            wrk, f"{receiver.url}/", "-s", str(tmp_path / "complete.lua"), connections=64, seconds=8
        )
        baseline = (await trio.to_thread.run_sync(healthz)).rate
        completions = (await trio.to_thread.run_sync(complete)).rate
    print(f"\none nexusd receiver on SQLite, 64 connections (wrk), {RUNS} runs")
    print(f"  baseline GET /healthz   {baseline:8.0f} req/s (1.00)")
    print(f"  POST complete           {completions:8.0f} /s    ({completions / baseline:.2f})")
