"""Run `nexusd` modes as real processes for multi-process tests, and wait until they are ready."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import attrs
import httpx
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.frozen
class NexusdProcess:
    url: str
    process: trio.Process


@contextlib.asynccontextmanager
async def nexusd_process(
    *args: str, env: dict[str, str], cwd: Path, log: Path, ready_timeout: float = 60
) -> AsyncIterator[NexusdProcess]:
    """Start `nexusd <args> --port <free>` and yield it once /readyz answers 200.

    The process gets only `env` plus PATH/HOME (no NEXUS__ variables leak in from the test
    runner) and is terminated, then killed, on the way out. Its stderr goes to `log`.
    """
    port = free_port()
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), **env}
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "nexusd", *args, "--port", str(port)],
            env=environment,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                with trio.fail_after(ready_timeout):
                    while True:
                        if process.poll() is not None:
                            output = await trio.Path(log).read_text()
                            raise RuntimeError(f"nexusd {args[0]} exited: {output}")
                        with contextlib.suppress(httpx.TransportError):
                            if (await client.get(f"{url}/readyz")).status_code == 200:
                                break
                        await trio.sleep(0.05)
            yield NexusdProcess(url=url, process=process)
        finally:
            with trio.CancelScope(shield=True):
                process.terminate()
                with trio.move_on_after(10):
                    await process.wait()
                if process.poll() is None:
                    process.kill()
                    await process.wait()


async def completions(client: httpx.AsyncClient, url: str) -> int:
    """Completions a nexusd process recorded (`nexusd_completions_total{outcome="completed"}`):
    one per run completed, never more, whatever reported it how often."""
    text = (await client.get(f"{url}/metrics")).text
    match = re.search(r'^nexusd_completions_total\{outcome="completed"\} ([\d.e+]+)$', text, re.M)
    return int(float(match.group(1))) if match else 0
