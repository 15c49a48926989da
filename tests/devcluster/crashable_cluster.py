"""`python -m tests.devcluster.crashable_cluster STATE_DIR KUBELET`: a persisted embedded cluster in
a process of its own, for tests that `kill -9` it. It prints its kubeconfig path on stdout once
it serves, then runs until it is killed."""

from __future__ import annotations

import functools
import pathlib
import sys
from typing import NoReturn

import trio

from nexusd.devcluster import DevCluster, DevClusterConfig, run_dev_cluster


async def main(state_dir: pathlib.Path, kubelet: str) -> NoReturn:
    config = DevClusterConfig(
        state_dir=state_dir,
        namespace="nexus",
        kubelet="local" if kubelet == "local" else "scripted",
        persist=True,
        backoff_base=0.0,
    )
    async with trio.open_nursery() as nursery:
        cluster: DevCluster = await nursery.start(functools.partial(run_dev_cluster, config=config))
        print(cluster.kubeconfig_path, flush=True)
        await trio.sleep_forever()
    raise AssertionError("unreachable")


if __name__ == "__main__":
    trio.run(main, pathlib.Path(sys.argv[1]), sys.argv[2])
