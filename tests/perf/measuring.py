"""What the benchmarks measure with: wrk as the load generator (Debian package `wrk`; a Python
client would be the bottleneck), and a process's CPU time from /proc (user + system, every
thread), which machine noise barely moves."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import attrs
import pytest


@attrs.frozen
class Load:
    rate: float  # requests per second
    requests: int


def wrk(url: str, *extra: str, connections: int = 32, seconds: int = 5) -> Load:
    """`wrk -t1 -c<connections> -d<seconds>s <extra> <url>`, blocking (run it in a thread)."""
    if shutil.which("wrk") is None:
        pytest.fail("this benchmark needs wrk: apt-get install wrk")
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *extra, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    assert rate, output
    assert count, output
    return Load(rate=float(rate.group(1)), requests=int(count.group(1)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far, all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


POST_LUA = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""
