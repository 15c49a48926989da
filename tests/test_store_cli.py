"""`nexusd store init | migrate` through the real executable against a real PostgreSQL (a
throwaway cluster on loopback) and a real SQLite file; nothing faked."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def nexusd(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nexusd", "store", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_postgres_init_then_migrate_is_idempotent(postgres_dsn: str, tmp_path: Path) -> None:
    env = {"NEXUS__STORE__KIND": "postgres", "NEXUS__POSTGRES__DSN": postgres_dsn}
    first = nexusd("init", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "schema version 7" in first.stdout
    again = nexusd("migrate", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "nothing to migrate" in again.stdout


def test_unreachable_postgres_names_the_host_not_the_password(tmp_path: Path) -> None:
    env = {
        "NEXUS__STORE__KIND": "postgres",
        "NEXUS__POSTGRES__DSN": "postgresql://nexus:hunter2@127.0.0.1:1/nexus",
    }
    result = nexusd("init", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "nexus@127.0.0.1:1/nexus" in result.stderr
    assert "hunter2" not in result.stderr


def test_sqlite_init_creates_the_file(tmp_path: Path) -> None:
    result = nexusd("init", "--data-dir", str(tmp_path / "d"), env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d" / "checkpoints.sqlite3").exists()


def test_memory_store_has_no_schema(tmp_path: Path) -> None:
    result = nexusd("init", env={"NEXUS__STORE__KIND": "memory"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "has no schema" in result.stderr
