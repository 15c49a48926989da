"""A throwaway PostgreSQL cluster for tests: initdb into a temp dir, loopback only, torn down after.

Nothing is faked: the server is the real `postgres` binary (Debian's `postgresql` package puts it
in /usr/lib/postgresql/<major>/bin). It listens on 127.0.0.1 on a free port, its Unix socket lives
in the temp dir, and durability is off (`fsync=off`) because the data is thrown away.

Use it from a test module or conftest::

    from tests.servers.postgres import postgres_server, postgres_dsn  # noqa: F401 (fixtures)

    def test_x(postgres_dsn: str) -> None:  # a fresh, empty database per test
        ...

or, outside pytest (a benchmark, a multi-process test)::

    with running_postgres() as server:
        dsn = server.create_database("bench")

Binaries: `$NEXUSD_TEST_PG_BINDIR`, else the newest /usr/lib/postgresql/*/bin, else `initdb` on
PATH. When they are missing the fixture FAILS (CI installs them), it never skips.

Root: PostgreSQL refuses to run as root. When the tests run as root, initdb and the server run
as the `postgres` system user (created by Debian's package), else `nobody`, through
`subprocess`'s `user=`/`group=`; the temp dir is chowned to that user.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The superuser initdb creates; tests connect as it over TCP with a password (scram-sha-256).
ADMIN_USER = "nexusd_test"
#: Seconds pg_ctl waits for the server to accept connections.
START_TIMEOUT_S = 60
_SEARCH_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found: set "
    "NEXUSD_TEST_PG_BINDIR, or install them (Debian: `apt-get install -y postgresql`, which "
    "provides /usr/lib/postgresql/<major>/bin and the `postgres` user)"
)


class PostgresUnavailable(RuntimeError):
    """The binaries are missing or the cluster could not start; the message says which."""


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres."""
    candidates: list[Path] = []
    if configured := os.environ.get("NEXUSD_TEST_PG_BINDIR"):
        candidates.append(Path(configured))
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise PostgresUnavailable(_SEARCH_HINT)


def _server_account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None to run it as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise PostgresUnavailable("running as root, and neither a `postgres` nor `nobody` user exists")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@attrs.frozen
class PostgresServer:
    """A running throwaway cluster. `dsn()` connects as the superuser with a password."""

    host: str
    port: int
    user: str
    password: str
    directory: Path

    def dsn(self, dbname: str = "postgres", **overrides: Any) -> str:
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": dbname,
            "connect_timeout": 10,
        }
        values.update(overrides)
        return make_conninfo("", **values)

    def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop `name`, disconnecting whoever is still connected to it."""
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _run(command: list[str], *, account: tuple[int, int] | None, cwd: Path, what: str) -> None:
    user_args: dict[str, Any] = {}
    if account is not None:
        user_args = {"user": account[0], "group": account[1], "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    completed = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False, **user_args
    )
    if completed.returncode != 0:
        raise PostgresUnavailable(
            f"{what} failed (exit {completed.returncode}):\n{completed.stdout}{completed.stderr}"
        )


@contextlib.contextmanager
def running_postgres(*, max_connections: int = 300) -> Iterator[PostgresServer]:
    """Start a fresh cluster on 127.0.0.1, yield it, then stop it (immediate) and delete it."""
    bindir = find_bindir()
    account = _server_account()
    # As root, the server's user must reach the directory: $TMPDIR may sit under /root.
    directory = Path(tempfile.mkdtemp(prefix="nexusd-pg-", dir=None if account is None else "/tmp"))
    try:
        if account is not None:
            os.chown(directory, *account)
        password = secrets.token_urlsafe(16)
        pwfile = directory / "pwfile"
        pwfile.write_text(password + "\n")
        if account is not None:
            os.chown(pwfile, *account)
        data = directory / "data"
        _run(
            [
                str(bindir / "initdb"), "-D", str(data), "-U", ADMIN_USER,
                f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                "--encoding=UTF8", "--locale=C", "--no-sync",
            ],
            account=account, cwd=directory, what="initdb",
        )  # fmt: skip
        pwfile.unlink()
        port = _start(bindir, data, directory, account, max_connections)
        try:
            yield PostgresServer(
                host="127.0.0.1", port=port, user=ADMIN_USER, password=password,
                directory=directory,
            )  # fmt: skip
        finally:
            _run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                account=account, cwd=directory, what="pg_ctl stop",
            )  # fmt: skip
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _start(
    bindir: Path, data: Path, directory: Path, account: tuple[int, int] | None, connections: int
) -> int:
    """Start the server on a free port (retrying if another process took it meanwhile)."""
    options = (
        f"-c listen_addresses=127.0.0.1 -k {directory} -c fsync=off -c synchronous_commit=off "
        f"-c full_page_writes=off -c max_connections={connections} -c shared_buffers=64MB"
    )
    for attempt in itertools.count(1):
        port = _free_port()
        try:
            _run(
                [
                    str(bindir / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"),
                    "-w", "-t", str(START_TIMEOUT_S), "-o", f"{options} -p {port}", "start",
                ],
                account=account, cwd=directory, what="pg_ctl start",
            )  # fmt: skip
        except PostgresUnavailable as exc:
            log = directory / "server.log"
            detail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            if attempt < 3 and "Address already in use" in detail:
                continue
            raise PostgresUnavailable(f"{exc}\nserver log:\n{detail}") from None
        return port
    raise AssertionError("unreachable")


# --- pytest fixtures (import them into a conftest) ----------------------------------------

_database_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One cluster for the whole session, started on first use. Fails (never skips) if absent."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for this test (dropped afterwards); its DSN has the password."""
    name = f"nexusd_test_{os.getpid()}_{next(_database_names)}"
    yield postgres_server.create_database(name)
    postgres_server.drop_database(name)


__all__ = [
    "PostgresServer",
    "PostgresUnavailable",
    "find_bindir",
    "postgres_dsn",
    "postgres_server",
    "running_postgres",
]
