"""Command mode: a real process per run (`python -c` scripts), against the fake scheduler
(tests/warm/fake_scheduler.py fakes the scheduler's worker API; processes and HTTP are real)."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from nexusd.modes import worker as worker_mode
from tests.warm.conftest import eventually, worker_settings

if TYPE_CHECKING:
    from nexusd.warm.serving import Worker
    from tests.warm.fake_scheduler import FakeScheduler

RECORD = """
import json, os, sys
rid = next(a for a in sys.argv if a.startswith("--request-id=")).split("=", 1)[1]
env = {k: v for k, v in os.environ.items() if k.startswith(("NEXUS__", "POD_", "RUN_"))}
record = {"argv": sys.argv[1:], "env": env, "pid": os.getpid(), "pgid": os.getpgid(0)}
with open(os.path.join(os.environ["OUT_DIR"], rid + ".json"), "w") as f:
    json.dump(record, f)
sys.exit(int(os.environ.get("RUN_EXIT", "0")))
"""

#: Starts a child in its group, records both pids, notes SIGTERM and ignores it.
STUBBORN = """
import os, pathlib, signal, subprocess, sys, time
out = pathlib.Path(os.environ["OUT_DIR"])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
signal.signal(signal.SIGTERM, lambda *_: (out / "term").write_text("x"))
(out / "pids").write_text(f"{os.getpid()} {child.pid}")
while True:
    time.sleep(0.05)
"""


async def start_worker(
    nursery: trio.Nursery, scheduler: FakeScheduler, command: list[str], **kw: str
) -> Worker:
    settings = worker_settings(scheduler, **kw)
    worker: Worker = await nursery.start(
        functools.partial(worker_mode.run, settings, command=command)
    )
    return worker


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_each_run_is_a_process_with_the_jobs_args_and_env(
    nursery: trio.Nursery, scheduler: FakeScheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_ONLY", "from the pod")
    monkeypatch.setenv("RUN_EXIT", "9")  # the pod's value; a run's own env wins over it
    scheduler.add("r1", env={"OUT_DIR": str(tmp_path), "RUN_EXIT": "3"})
    scheduler.add("r2", env={"OUT_DIR": str(tmp_path)})
    command = [sys.executable, "-c", RECORD, "--sas-uri=%s", "--request-id=%s", "--keep=%s"]
    await start_worker(nursery, scheduler, command, concurrency="2")

    await scheduler.until(lambda: len(scheduler.done_items) == 2)

    by_id = {item["requestId"]: item for item in scheduler.done_items}
    assert by_id["r1"] == {"requestId": "r1", "attempt": 1, "status": "exited", "exitCode": 3}
    assert by_id["r2"]["exitCode"] == 9
    record = json.loads((tmp_path / "r1.json").read_text())
    assert record["argv"] == [
        f"--sas-uri={scheduler.url}/payloads/r1",
        "--request-id=r1",
        "--keep=%s",  # neither sas-uri nor request-id: left as a Job leaves it
    ]
    assert record["env"]["POD_ONLY"] == "from the pod"
    assert record["env"]["NEXUS__RESULT_UPLOAD_URL"] == f"{scheduler.url}/results/r1"
    assert record["env"]["NEXUS__CLIENT__RECEIVER"] == "http://receiver.test/t/1.token"
    assert record["pgid"] == record["pid"] != os.getpgid(0)  # its own process group


@pytest.mark.parametrize("how", ["cancelled", "lost"])
async def test_a_stopped_run_gets_its_group_terminated_then_killed_and_no_report(
    nursery: trio.Nursery, scheduler: FakeScheduler, tmp_path: Path, how: str
) -> None:
    scheduler.add("r1", env={"OUT_DIR": str(tmp_path)})
    worker = await start_worker(
        nursery, scheduler, [sys.executable, "-c", STUBBORN], kill_grace="500ms"
    )
    await eventually(lambda: (tmp_path / "pids").exists() and (tmp_path / "pids").read_text())
    pids = [int(pid) for pid in (tmp_path / "pids").read_text().split()]

    with trio.fail_after(8):  # well before the renewal interval (10 s): told by the long poll
        scheduler.cancel("r1") if how == "cancelled" else scheduler.lose("r1")
        await eventually(lambda: not any(alive(pid) for pid in pids))

    assert (tmp_path / "term").exists()  # SIGTERM first; it ignored it, so SIGKILL
    await eventually(lambda: worker.statistics().held == 0)
    scheduler.add("r2", env={"OUT_DIR": str(tmp_path)})  # the freed slot leases again
    await scheduler.until(lambda: scheduler.runs["r2"].state == "leased")
    assert worker.statistics().pending_reports == 0
    assert scheduler.done_items == []
    assert scheduler.released == []


async def test_a_command_that_cannot_start_fails_its_run(
    nursery: trio.Nursery, scheduler: FakeScheduler, tmp_path: Path
) -> None:
    scheduler.add("r1")
    await start_worker(nursery, scheduler, [str(tmp_path / "missing"), "--request-id=%s"])

    await scheduler.until(lambda: scheduler.done_items)

    (item,) = scheduler.done_items
    assert item["status"] == "failed"
    assert item["errorCause"] == "CommandNotStarted"
    assert "missing" in item["errorDetails"]
    assert "No such file" in item["errorDetails"]
