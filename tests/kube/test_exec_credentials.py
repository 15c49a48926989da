"""Exec-plugin credentials (what `aws eks get-token` provides): the token comes from running
the kubeconfig's command, and is fetched again before the client uses a stale one.

Real: the `kubernetes` package's kubeconfig loader running a real exec plugin (a small Python
script printing an ExecCredential, counting its runs in a file). FAKED: the API server, an
`httpx.MockTransport` that records the Authorization header of each request. Time is trio's
autojump clock, so the client's refresh interval passes instantly.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import httpx
import trio
import trio.testing
import yaml

from nexusd.kube.client import JOBS, TOKEN_REFRESH_SECONDS, KubeClient
from nexusd.kube.credentials import load_credentials

if TYPE_CHECKING:
    from pathlib import Path

PLUGIN = """
import json, pathlib, sys
counter = pathlib.Path(sys.argv[1])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    # already expired: every refresh runs the plugin again
    "status": {"token": f"exec-token-{n}", "expirationTimestamp": "2000-01-01T00:00:00Z"},
}))
"""


def write_kubeconfig(tmp_path: Path) -> Path:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "http://api.test"}}],
        "users": [
            {
                "name": "u",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": sys.executable,
                        "args": [str(plugin), str(tmp_path / "runs")],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "exec.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_exec_plugin_tokens_are_refreshed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return httpx.Response(200, json={"kind": "JobList", "metadata": {}, "items": []})

    credentials = load_credentials(write_kubeconfig(tmp_path))
    assert credentials.token == "exec-token-1"
    client = KubeClient(credentials=credentials, transport=httpx.MockTransport(handler))
    try:
        await client.list(JOBS, namespace="nexus")
        await client.list(JOBS, namespace="nexus")  # within the interval: no new plugin run
        await trio.sleep(TOKEN_REFRESH_SECONDS + 1)
        await client.list(JOBS, namespace="nexus")
    finally:
        await client.aclose()
    runs = int((tmp_path / "runs").read_text())
    assert seen[0] == seen[1]
    assert seen[0].startswith("Bearer exec-token-")
    assert seen[2] == f"Bearer exec-token-{runs}"
    assert seen[2] != seen[1]
