"""The processes of this machine a test looks for: `nexusd worker`s of a pool, an algorithm's
process for one run. Read from /proc, so a test sees what really runs, not what nexusd says."""

from __future__ import annotations

import os


def pids_with(*, argument: str, env: str = "") -> list[int]:
    """Pids of the processes with `argument` among their argv (and `env`, "NAME=value", in
    their environment when given), sorted. Processes that end while being read are skipped."""
    wanted, variable = argument.encode(), env.encode()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if wanted not in cmdline.read().split(b"\0"):
                    continue
            if variable:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if variable not in environ.read().split(b"\0"):
                        continue
        except OSError:
            continue
        found.append(int(entry))
    return sorted(found)


def worker_pids(algorithm: str) -> list[int]:
    """The `nexusd worker` processes serving `algorithm` (a warm pool's pods' containers)."""
    return pids_with(argument="worker", env=f"NEXUS__WORKER__ALGORITHM={algorithm}")
