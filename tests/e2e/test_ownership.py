"""One owner per data directory and per identity: a second live process is refused with exit 2
and told who holds what it wanted; after the holder dies (even by kill -9) it starts at once.

Real: `nexusd dev`, `nexusd scheduler` and `nexusd maintainer` processes, SQLite files and a
throwaway PostgreSQL server, the embedded cluster (in this process) over HTTP. Nothing is faked.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import trio

from tests.servers.clusters import WORKGROUP, start_cluster
from tests.servers.nexusd import free_port, nexusd_process

if TYPE_CHECKING:
    from pathlib import Path


def run_to_end(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `nexusd <args>` to its end (it must stop on its own: refused, or a one-shot)."""
    return subprocess.run(
        [sys.executable, "-m", "nexusd", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_second_dev_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"NEXUS__DEV__KUBELET": "scripted"}
    async with nexusd_process(
        "dev", "--data-dir", str(data), env=env, cwd=tmp_path, log=tmp_path / "first.log"
    ) as first:
        kubeconfig = (data / "cluster" / "kubeconfig").read_text()
        second = await trio.to_thread.run_sync(
            lambda: run_to_end(
                "dev", "--data-dir", str(data), "--port", str(free_port()), env=env, cwd=tmp_path
            )
        )
        assert second.returncode == 2, second.stderr
        assert f"data directory {data} is in use by nexusd dev (pid {first.process.pid}" in (
            second.stderr
        )
        assert "--data-dir" in second.stderr
        # the first one's cluster is untouched
        assert (data / "cluster" / "kubeconfig").read_text() == kubeconfig
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
    # the kernel dropped the dead one's lock: a restart needs no clean-up
    async with nexusd_process(
        "dev", "--data-dir", str(data), env=env, cwd=tmp_path, log=tmp_path / "again.log"
    ):
        pass


async def test_two_live_schedulers_never_share_a_name(
    nursery: trio.Nursery, tmp_path: Path, postgres_dsn: str
) -> None:
    cluster, kube = await start_cluster(nursery, tmp_path / "c", WORKGROUP)
    await kube.aclose()
    base = {
        "NEXUS__KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
        "NEXUS__KUBE__SHARD_NAME": "dev",
        "NEXUS__NODE__HOST_NAME": "scheduler-0",
    }
    stores = {
        "sqlite": {"NEXUS__DATA__DIR": str(tmp_path / "shared")},
        "postgres": {
            "NEXUS__DATA__DIR": str(tmp_path / "pg"),
            "NEXUS__STORE__KIND": "postgres",
            "NEXUS__POSTGRES__DSN": postgres_dsn,
        },
    }
    for kind, store in stores.items():
        env = {**base, **store}
        if kind == "postgres":
            init = await trio.to_thread.run_sync(
                lambda env=env: run_to_end("store", "init", env=env, cwd=tmp_path)  # type: ignore[misc]
            )
            assert init.returncode == 0, init.stderr
        async with nexusd_process(
            "scheduler", env=env, cwd=tmp_path, log=tmp_path / f"{kind}.log"
        ) as first:
            twin = await trio.to_thread.run_sync(
                lambda env=env: run_to_end(
                    "scheduler", "--port", str(free_port()), env=env, cwd=tmp_path
                )  # type: ignore[misc]
            )
            assert twin.returncode == 2, (kind, twin.stderr)
            assert "node.host_name 'scheduler-0' is in use by nexusd scheduler" in twin.stderr
            assert re.search(rf"pid {first.process.pid}\b", twin.stderr), twin.stderr
            assert "NEXUS__NODE__HOST_NAME" in twin.stderr
            # another name on the same store is fine, and so is a maintainer beside it
            async with nexusd_process(
                "scheduler",
                env={**env, "NEXUS__NODE__HOST_NAME": "scheduler-1"},
                cwd=tmp_path,
                log=tmp_path / f"{kind}-other.log",
            ):
                pass
            first.process.send_signal(signal.SIGKILL)
            await first.process.wait()
        async with nexusd_process(
            "scheduler", env=env, cwd=tmp_path, log=tmp_path / f"{kind}-restart.log"
        ):
            pass


async def test_a_maintainer_beside_a_scheduler_takes_its_own_default_name(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cluster, kube = await start_cluster(nursery, tmp_path / "c", WORKGROUP)
    await kube.aclose()
    env = {
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
        "NEXUS__KUBE__SHARD_NAME": "dev",
    }
    async with (
        nexusd_process("scheduler", env=env, cwd=tmp_path, log=tmp_path / "s.log"),
        nexusd_process("maintainer", env=env, cwd=tmp_path, log=tmp_path / "m.log"),
    ):
        pass
