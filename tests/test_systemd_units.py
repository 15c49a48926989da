"""The systemd units in systemd/: their commands are valid nexusd command lines and their stop
timeouts leave room for the graceful shutdown. Units are read as files; nothing is faked."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from nexusd.cli import build_parser
from nexusd.settings import Settings

UNITS = Path(__file__).resolve().parents[1] / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("nexusd-scheduler.service", "scheduler"),
        ("nexusd-receiver.service", "receiver"),
        ("nexusd-maintainer.service", "maintainer"),
        ("nexusd-maintainer-once.service", "maintainer"),
        ("nexusd-controller.service", "controller"),
    ],
)
def test_exec_start_is_a_valid_nexusd_command(name: str, mode: str) -> None:
    argv = shlex.split(unit(name)["Service"]["ExecStart"])
    assert argv[0].endswith("/nexusd")
    args = build_parser().parse_args(argv[1:])
    assert args.mode == mode
    assert args.config == Path("/etc/nexusd/nexusd.toml")


@pytest.mark.parametrize(
    "name",
    [
        "nexusd-scheduler.service",
        "nexusd-receiver.service",
        "nexusd-maintainer.service",
        "nexusd-controller.service",
    ],
)
def test_stop_timeout_exceeds_the_shutdown_grace(name: str) -> None:
    timeout = float(unit(name)["Service"]["TimeoutStopSec"])
    assert timeout > Settings().shutdown.grace


def test_the_timer_runs_the_one_pass_service() -> None:
    service = unit("nexusd-maintainer-once.service")
    assert service["Service"]["Type"] == "oneshot"
    assert "--once" in shlex.split(service["Service"]["ExecStart"])
    timer = unit("nexusd-maintainer-once.timer")
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert timer["Timer"]["OnUnitInactiveSec"] == "5min"


def test_every_long_running_unit_has_the_same_hardening() -> None:
    reference = unit("nexusd-scheduler.service")["Service"]
    keys = ("User", "Group", "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp")
    for name in ("nexusd-controller.service", "nexusd-maintainer.service"):
        service = unit(name)["Service"]
        assert {k: service[k] for k in keys} == {k: reference[k] for k in keys}, name
        assert service["Restart"] == "on-failure"
        assert service["ReadWritePaths"] == "/var/lib/nexusd"
    controller = unit("nexusd-controller.service")
    assert shlex.split(controller["Service"]["ExecStart"])[1] == "controller"
    assert controller["Install"]["WantedBy"] == "multi-user.target"
