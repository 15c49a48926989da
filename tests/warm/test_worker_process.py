"""`nexusd worker` as a real process (and its CLI errors), against the fake scheduler
(tests/warm/fake_scheduler.py fakes the scheduler's worker API; the worker process, its signals
and its HTTP are real)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from nexusd.cli import EXIT_USAGE, main
from tests.warm.conftest import eventually
from tests.warm.fake_scheduler import ALGORITHM

if TYPE_CHECKING:
    from tests.warm.fake_scheduler import FakeScheduler

ROOT = Path(__file__).resolve().parents[2]


async def start_worker(
    scheduler: FakeScheduler, log: Path, *args: str, env: dict[str, str] | None = None
) -> trio.Process:
    """`nexusd worker` of the fake's pool, with `env` and only PATH and HOME of the runner's."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(log.parent), **(env or {})}
    with log.open("wb") as stderr:
        return await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "nexusd",
                "worker",
                f"--scheduler={scheduler.url}",
                f"--algorithm={ALGORITHM}",
                "--name=pod-1",
                "--retry-base-delay=10ms",
                *args,
            ],
            env=env,
            cwd=ROOT,  # `tests.warm.sample_handlers` is importable from here
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


async def test_sigterm_releases_unstarted_runs_finishes_the_running_one_and_exits_0(
    scheduler: FakeScheduler, tmp_path: Path
) -> None:
    target = tmp_path / "finish"
    scheduler.add("running", payload=str(target).encode())
    scheduler.add("fetching", inline=False)  # not started while its payload download waits
    scheduler.payload_gates["fetching"] = trio.Event()
    log = tmp_path / "worker.log"
    process = await start_worker(
        scheduler,
        log,
        "--concurrency=2",
        "--handler=tests.warm.sample_handlers:wait_for_file",
    )
    try:
        await eventually(
            lambda: Path(f"{target}.started").exists() and "fetching" in scheduler.payload_gets,
            within=30,
        )
        leases = len(scheduler.lease_requests)

        process.send_signal(signal.SIGTERM)

        await scheduler.until(lambda: scheduler.released)
        assert scheduler.released == [{"requestId": "fetching", "attempt": 1}]
        assert scheduler.done_items == []  # the running one is given its grace
        target.write_text("")
        with trio.fail_after(15):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert code == 0, log.read_text()
    assert scheduler.done_items == [
        {"requestId": "running", "attempt": 1, "status": "completed", "uploaded": True}
    ]
    assert scheduler.results["running"][0] == b"done running"
    assert len(scheduler.lease_requests) == leases  # no lease after the signal
    assert scheduler.runs["fetching"].state == "queued"
    assert "received SIGTERM, stopping" in log.read_text()


#: Exits 0 when the pod's Job env reached it, which is the algorithm's, not the worker's.
CHECK_ENV = f"import os, sys; sys.exit(os.environ['NEXUS__ALGORITHM_NAME'] != {ALGORITHM!r})"


async def test_a_command_worker_recycles_after_its_runs_and_exits_0(
    scheduler: FakeScheduler, tmp_path: Path
) -> None:
    for index in range(3):
        scheduler.add(f"r{index}")
    log = tmp_path / "worker.log"
    # A pool pod has its runs' Job env too: NEXUS__ names that are no worker settings.
    job_env = {"NEXUS__ALGORITHM_NAME": ALGORITHM, "NEXUS__CLIENT__RECEIVER": "x"}
    process = await start_worker(
        scheduler,
        log,
        "--runs=2",
        "--",
        sys.executable,
        "-c",
        CHECK_ENV,
        "--request-id=%s",
        env={**job_env, "NEXUS__WORKER__CONCURRENCY": "2"},
    )
    try:
        with trio.fail_after(30):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert code == 0, log.read_text()
    assert sorted(scheduler.done_ids()) == ["r0", "r1"]
    assert [item["exitCode"] for item in scheduler.done_items] == [0, 0]
    assert scheduler.runs["r2"].state == "queued"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algorithm=a", "--", "true"], "worker.scheduler: the scheduler's URL is required"),
        (["--scheduler=ftp://x", "--algorithm=a", "--", "true"], "expected an http:// or"),
        (["--scheduler=http://s", "--", "true"], "worker.algorithm: the warm template"),
        (["--scheduler=http://s", "--algorithm=a"], "nothing to run: give the algorithm's"),
        (
            ["--scheduler=http://s", "--algorithm=a", "--handler=m:f", "--", "true"],
            "not both",
        ),
        (
            ["--scheduler=http://s", "--algorithm=a", "--handler=tests.warm.nope:f"],
            "worker.handler: cannot import 'tests.warm.nope'",
        ),
        (
            ["--scheduler=http://s", "--algorithm=a", "--concurrency=0", "--", "true"],
            "worker.concurrency: must be at least 1",
        ),
    ],
)
def test_bad_worker_settings_stop_it_with_a_message(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("NEXUS__"):
            monkeypatch.delenv(name)

    assert main(["worker", *args]) == EXIT_USAGE

    error = capsys.readouterr().err
    assert error.startswith("nexusd: configuration error: ")
    assert message in error


SERVE = """
from nexusd.warm import serve

def shout(run):
    return run.payload.decode().upper()

serve(shout, runs=1)
"""


async def test_serve_is_the_python_api_of_in_process_algorithms(
    scheduler: FakeScheduler, tmp_path: Path
) -> None:
    scheduler.add("r1", payload=b"hello")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NEXUS__WORKER__SCHEDULER": scheduler.url,
        "NEXUS__WORKER__ALGORITHM": ALGORITHM,
        "NEXUS__ALGORITHM_NAME": ALGORITHM,  # the Job env of a pool pod: not a worker setting
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", SERVE], env=env, cwd=ROOT, stderr=stderr
        )
    try:
        with trio.fail_after(30):
            code = await process.wait()  # recycled after its one run
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert code == 0, log.read_text()
    assert scheduler.results["r1"][0] == b"HELLO"
    assert scheduler.done_items == [
        {"requestId": "r1", "attempt": 1, "status": "completed", "uploaded": True}
    ]
