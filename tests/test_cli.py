"""The `nexusd` executable: help, exit codes and messages, through `main()` and a real
subprocess; nothing faked."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from typing import TYPE_CHECKING

import pytest

from nexusd.cli import build_parser, main, settings_from_args
from nexusd.core.errors import ConfigError
from nexusd.settings_toml import render

if TYPE_CHECKING:
    from pathlib import Path


def test_help_lists_only_working_modes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    modes = ("scheduler", "receiver", "maintainer", "supervisor", "controller", "dev", "store")
    for mode in (*modes, "config"):
        assert mode in out


@pytest.mark.parametrize(
    ("mode", "shown"),
    [
        ("dev", '--host VALUE address to bind (default: "127.0.0.1"; env NEXUS__HTTP__HOST)'),
        ("scheduler", '--host VALUE address to bind (default: "0.0.0.0"; env NEXUS__HTTP__HOST)'),
        ("maintainer", "--port VALUE TCP port of the HTTP API (default: 8080; env"),
        ("store", "--dsn VALUE PostgreSQL connection string (with store.kind = postgres)"),
    ],
)
def test_mode_help_describes_it_and_shows_each_flags_default(
    mode: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([mode, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal width
    assert shown in out
    assert out.count("(default: ") >= 3


def test_config_prints_the_settings_a_mode_runs_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXUS__SUBMISSION__RATE", "7")
    file = tmp_path / "nexusd.toml"
    file.write_text("[http]\nport = 9000\n")
    assert main(["config", "dev", "--config", str(file)]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["http"] == {**printed["http"], "host": "127.0.0.1", "port": 9000}
    assert printed["submission"]["rate"] == 7.0
    # what it prints loads back to the same settings
    again = tmp_path / "again.toml"
    again.write_text(render(settings_from_args(build_parser().parse_args(["config", "dev"]))))
    assert main(["config", "--config", str(again)]) == 0
    assert tomllib.loads(capsys.readouterr().out)["http"]["host"] == "127.0.0.1"


def test_controller_takes_upstream_variables_below_its_own() -> None:
    """Upstream's configuration controller is configured by flat NEXUS__<KEY> variables."""
    args = build_parser().parse_args(["controller"])
    upstream = {
        "NEXUS__ALIAS": "eu-controller",
        "NEXUS__SHARD_CONFIG_PATH": "/app/config/shards",
        "NEXUS__CONTROLLER_NAMESPACE": "science",
        "NEXUS__FAILURE_RATE_BASE_DELAY": "50ms",
        "NEXUS__FAILURE_RATE_MAX_DELAY": "10s",
        "NEXUS__LOG_LEVEL": "DEBUG",
    }
    settings = settings_from_args(args, upstream)
    assert settings.controller.alias == "eu-controller"
    assert str(settings.kube.shards_dir) == "/app/config/shards"
    assert settings.kube.runtime_namespace == "science"
    assert (settings.controller.backoff_base, settings.controller.backoff_max) == (0.05, 10.0)
    assert settings.logging.level == "DEBUG"
    ours = {**upstream, "NEXUS__CONTROLLER__ALIAS": "ours"}
    assert settings_from_args(args, ours).controller.alias == "ours"


def test_upstream_controller_variables_mean_nothing_to_other_modes() -> None:
    args = build_parser().parse_args(["scheduler"])
    with pytest.raises(ConfigError, match="NEXUS__ALIAS"):
        settings_from_args(args, {"NEXUS__ALIAS": "eu-controller"})


def test_unknown_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_bad_flag_value_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "--port", "abc"]) == 2
    assert "--port: invalid value 'abc'" in capsys.readouterr().err


def test_unreadable_kubeconfig_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "scheduler",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
            "--kubeconfig",
            str(tmp_path / "none"),
        ]
    )
    assert code == 2
    assert str(tmp_path / "none") in capsys.readouterr().err


def test_environment_errors_stop_the_real_executable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nexusd", "receiver", "--port", "0"],
        env={"NEXUS__HTTP__PROT": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "NEXUS__HTTP__PROT: unknown key http.prot" in result.stderr


def test_bad_backend_settings_exit_2_naming_the_key(tmp_path: Path) -> None:
    cases = [
        ({"NEXUS__PAYLOADS__KIND": "s3"}, 's3.bucket: required when payloads.kind = "s3"'),
        (
            {"NEXUS__PAYLOADS__KIND": "s3", "NEXUS__S3__BUCKET": "Bad_Bucket"},
            "s3.bucket: 'Bad_Bucket' is not a valid S3 bucket name",
        ),
        ({"NEXUS__STORE__KIND": "postgres"}, 'postgres.dsn: required when store.kind = "postgres"'),
    ]
    for environ, message in cases:
        result = subprocess.run(
            [sys.executable, "-m", "nexusd", "receiver", "--port", "0"],
            env={"PATH": "/usr/bin:/bin", "NEXUS__DATA__DIR": str(tmp_path), **environ},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr


def test_production_modes_load_nothing_of_the_embedded_cluster() -> None:
    """What `nexusd <mode>` imports before it runs (the CLI, then the mode's module), in a
    fresh interpreter: only `nexusd dev` may load nexusd.devcluster."""
    probe = (
        "import sys; from nexusd.cli import build_parser; "
        "from nexusd.modes import maintainer, mode_runner, run_mode, store; "
        "mode_runner(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.startswith('nexusd.devcluster')))"
    )
    for mode, loads_it in [
        ("scheduler", False),
        ("receiver", False),
        ("maintainer", False),
        ("controller", False),
        ("dev", True),
    ]:
        done = subprocess.run(
            [sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True
        )
        assert (done.stdout.strip() != "[]") is loads_it, (mode, done.stdout)
