"""Containers a crashed local kubelet left running: recorded when they start, killed on restart.

Each local container runs in its own session, so a `kill -9` of `nexusd dev` leaves it running;
after the restart it would report its run a second time while the Job controller starts a
replacement. So `LocalProcessRuntime` records every container it starts, and the next kubelet
kills the recorded containers still alive before it declares their pods lost.

A pid alone is no identity: once a process is gone the kernel hands its number out again. The
record is the pid plus the process's start time (field 22 of `/proc/<pid>/stat`, clock ticks
since boot), and only a live process with both is killed, never a recycled pid. It is a small
file, `container.pid` in the pod's work directory, written as soon as the process exists (a
written file survives a crash of the process) and removed when the container ends. The process
group is killed with SIGKILL, as a kubelet that cannot find its container again would. Linux
only: without /proc nothing is recorded.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    import pathlib

logger = logging.getLogger(__name__)

RECORD = "container.pid"
#: Seconds to wait for killed orphans to be gone (SIGKILL is immediate unless a process is in
#: an uninterruptible system call).
KILL_WAIT = 5.0


def start_time(pid: int) -> int | None:
    """The start time of live process `pid`, or None if there is none (a zombie is dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def record(pod_dir: pathlib.Path, pid: int) -> None:
    started = start_time(pid)
    if started is not None:  # else it has already exited: nothing to kill later
        (pod_dir / RECORD).write_text(f"{pid} {started}\n")


def forget(pod_dir: pathlib.Path) -> None:
    (pod_dir / RECORD).unlink(missing_ok=True)


async def kill_orphans(pods_dir: pathlib.Path) -> list[int]:
    """SIGKILL the process group of every recorded container still alive, wait until they are
    gone (at most KILL_WAIT) and return their pids. Every record is consumed."""
    killed: dict[int, int] = {}  # pid -> pidfd
    pidfds: list[int] = []
    try:
        for pid, started in await trio.to_thread.run_sync(_take_records, pods_dir):
            if start_time(pid) != started:
                continue  # gone, or its number now belongs to another process
            try:
                # A pidfd follows this very process (its number may be reused once it is gone)
                # and becomes readable when it exits, even if a foreign parent never reaps it.
                pidfds.append(os.pidfd_open(pid))
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
            killed[pid] = pidfds[-1]
            logger.info("killed the container process group %d of a crashed kubelet", pid)
        with trio.move_on_after(KILL_WAIT):
            for pidfd in killed.values():
                await trio.lowlevel.wait_readable(pidfd)
    finally:
        for pidfd in pidfds:
            os.close(pidfd)
    return list(killed)


def _take_records(pods_dir: pathlib.Path) -> list[tuple[int, int]]:
    """(pid, start time) of every record under `pods_dir`, deleting the files."""
    records = []
    for path in sorted(pods_dir.glob(f"*/*/{RECORD}")):
        try:
            pid, started = (int(x) for x in path.read_text().split())
        except (OSError, ValueError):  # cut short by the crash: as if never written
            pass
        else:
            records.append((pid, started))
        path.unlink(missing_ok=True)
    return records
