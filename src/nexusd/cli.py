"""The `nexusd` executable: one subcommand per mode.

    nexusd scheduler   public API v1, buffering, queue, throttled Job submission
    nexusd receiver    completion API for algorithm containers
    nexusd maintainer  reconciles runs with their Jobs, recovers lost runs, collects garbage
    nexusd controller  configuration controller: templates, workgroups and what they reference,
                       kept in every shard cluster
    nexusd dev         scheduler + receiver + maintainer + embedded Kubernetes in one process
    nexusd worker      a warm pool's worker: leases runs from the scheduler and runs each
    nexusd store       create or migrate the checkpoint store's schema
    nexusd config      print the settings a mode runs with, as TOML

Exit codes: 0 after a clean stop, 1 when a mode fails at run time, 2 for bad settings or usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from nexusd import __version__
from nexusd.core.errors import ConfigError, NexusdError
from nexusd.logs import configure_logging
from nexusd.settings import Settings, describe, load_settings
from nexusd.settings_toml import format_value, render

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Flags that map onto settings: (flag, section.key, help).
_COMMON_FLAGS = [
    ("--log-level", "logging.level", "DEBUG, INFO, WARNING or ERROR"),
    ("--log-format", "logging.format", "plain or json"),
]
_HTTP_FLAGS = [
    ("--host", "http.host", "address to bind"),
    ("--port", "http.port", "TCP port of the HTTP API"),
    ("--data-dir", "data.dir", "directory for the store, payloads and results"),
]
_KUBE_FLAGS = [
    ("--kubeconfig", "kube.kubeconfig", "kubeconfig of the cluster (default: in-cluster)"),
    ("--shards-dir", "kube.shards_dir", "directory of <shard>.kubeconfig files"),
    ("--namespace", "kube.runtime_namespace", "runtime namespace of templates and Jobs"),
]
_STORE_FLAGS = [
    ("--data-dir", "data.dir", "directory of the SQLite store"),
    ("--dsn", "postgres.dsn", "PostgreSQL connection string (with store.kind = postgres)"),
]
_DEV_FLAGS = [
    ("--manifests", "dev.manifests", "directory of extra template/workgroup YAML to apply"),
    ("--kubelet", "dev.kubelet", "local (run pods as processes) or scripted"),
    ("--shards", "dev.shards", "embedded shard clusters (1: the controller cluster is the shard)"),
]
_CONTROLLER_FLAGS = [
    ("--alias", "controller.alias", "configuration-owner label value of the shard copies"),
]
_WORKER_FLAGS = [
    ("--scheduler", "worker.scheduler", "URL of the scheduler to lease runs from"),
    ("--algorithm", "worker.algorithm", "the warm template whose runs to serve"),
    ("--name", "worker.name", "this worker's name in its leases"),
    ("--token", "worker.token", "bearer token of the scheduler's worker API"),
    ("--concurrency", "worker.concurrency", "runs held at once"),
    ("--runs", "worker.runs", "runs before exiting 0 to be recycled (0 = never)"),
    ("--handler", "worker.handler", "module:function to call per run instead of a command"),
    ("--max-wait", "worker.max_wait", "longest a lease request waits (long poll)"),
    ("--request-timeout", "worker.request_timeout", "timeout of one request"),
    ("--retry-base-delay", "worker.retry_base_delay", "first back-off"),
    ("--retry-max-delay", "worker.retry_max_delay", "longest back-off"),
    ("--report-batch", "worker.report_batch", "most runs one report carries"),
    ("--kill-grace", "worker.kill_grace", "SIGTERM to SIGKILL of a stopped run's processes"),
]
#: Upstream's configuration controller reads flat NEXUS__<KEY> variables; `nexusd controller`
#: takes them too (its own NEXUS__SECTION__KEY names win when both are set).
UPSTREAM_CONTROLLER_ENV = {
    "NEXUS__ALIAS": "NEXUS__CONTROLLER__ALIAS",
    "NEXUS__CONTROLLER_CONFIG_PATH": "NEXUS__KUBE__KUBECONFIG",
    "NEXUS__SHARD_CONFIG_PATH": "NEXUS__KUBE__SHARDS_DIR",
    "NEXUS__CONTROLLER_NAMESPACE": "NEXUS__KUBE__RUNTIME_NAMESPACE",
    "NEXUS__LOG_LEVEL": "NEXUS__LOGGING__LEVEL",
    "NEXUS__FAILURE_RATE_BASE_DELAY": "NEXUS__CONTROLLER__BACKOFF_BASE",
    "NEXUS__FAILURE_RATE_MAX_DELAY": "NEXUS__CONTROLLER__BACKOFF_MAX",
}


def _add_flags(
    parser: argparse.ArgumentParser, flags: list[tuple[str, str, str]], mode: str = ""
) -> None:
    """Each flag's help ends with the default the mode runs with and the environment name."""
    defaults = {f"{section}.{key}": (default, env) for section, key, default, env, _ in describe()}
    for flag, key, text in flags:
        default, env = defaults[key]
        default = MODE_DEFAULTS.get(mode, {}).get(key, default)
        shown = "none" if default in (None, "") else format_value(key, default)
        parser.add_argument(
            flag,
            dest=f"set:{key}",
            default=None,
            metavar="VALUE",
            help=f"{text} (default: {shown}; env {env})",
        )


def _add_mode(
    modes: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    text: str,
    common: argparse.ArgumentParser,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    return modes.add_parser(name, parents=[common], help=text, description=text, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nexusd",
        description="Run ML, optimisation and AI algorithms on Kubernetes behind one HTTP API.",
    )
    parser.add_argument("--version", action="version", version=f"nexusd {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, default=None, help="TOML settings file (default: none; see config/)"
    )
    _add_flags(common, _COMMON_FLAGS)
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    scheduler = _add_mode(
        modes, "scheduler", "public API, buffering, queue and Job submission", common
    )
    _add_flags(scheduler, _HTTP_FLAGS + _KUBE_FLAGS + _STORE_FLAGS[1:], "scheduler")
    receiver = _add_mode(modes, "receiver", "completion API for algorithm containers", common)
    _add_flags(receiver, _HTTP_FLAGS + _STORE_FLAGS[1:], "receiver")
    maintainer = _add_mode(
        modes,
        "maintainer",
        "reconcile runs with their Jobs, recover lost runs, collect garbage",
        common,
        aliases=["supervisor"],
    )
    maintainer.add_argument(
        "--once",
        action="store_true",
        help="one pass, then exit (0, or 1 if an action failed): for a CronJob or timer",
    )
    _add_flags(maintainer, _HTTP_FLAGS + _KUBE_FLAGS + _STORE_FLAGS[1:], "maintainer")
    controller = _add_mode(
        modes,
        "controller",
        "configuration controller: templates, workgroups, Secrets and ConfigMaps kept in "
        "every shard",
        common,
    )
    _add_flags(controller, _HTTP_FLAGS[:2] + _KUBE_FLAGS + _CONTROLLER_FLAGS, "controller")
    dev = _add_mode(
        modes,
        "dev",
        "scheduler + receiver + maintainer + embedded Kubernetes in one process",
        common,
    )
    _add_flags(dev, _HTTP_FLAGS + _DEV_FLAGS, "dev")
    worker = _add_mode(
        modes,
        "worker",
        "a warm pool's worker: lease runs from the scheduler, run each by the command after "
        "-- (a process per run) or by --handler (a Python call per run)",
        common,
    )
    worker.add_argument(
        "command",
        nargs="*",
        metavar="-- COMMAND ARGS",
        help="the algorithm's command and args, %%s placeholders filled per run as a Job's",
    )
    _add_flags(worker, _WORKER_FLAGS, "worker")
    store = _add_mode(
        modes, "store", "create (init) or upgrade (migrate) the store's schema", common
    )
    store.add_argument("action", choices=["init", "migrate"])
    _add_flags(store, _STORE_FLAGS, "store")
    config = _add_mode(
        modes,
        "config",
        "print the settings a mode runs with (defaults < --config file < NEXUS__ environment) "
        "as TOML; with no mode, the built-in defaults: config/nexusd.example.toml",
        common,
    )
    config.add_argument(
        "for_mode",
        nargs="?",
        choices=sorted(MODE_DEFAULTS.keys() | {"scheduler", "receiver", "controller"}),
        metavar="MODE",
        help="the mode whose own defaults apply (default: none)",
    )
    return parser


#: Defaults that differ by mode, applied below the TOML file (so every source can override them).
#: A maintainer's own name differs from the scheduler's on the same host: each owns its name
#: (`node.host_name`) exclusively, and both keep runs under theirs.
_MAINTAINER = {"node.host_name": f"{socket.gethostname()}-maintainer"}
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "dev": {"http.host": "127.0.0.1"},
    "maintainer": _MAINTAINER,
    "supervisor": _MAINTAINER,
}


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    flags = {
        name.removeprefix("set:"): value
        for name, value in vars(args).items()
        if name.startswith("set:") and value is not None
    }
    if args.mode == "controller":
        environ = dict(os.environ if environ is None else environ)
        for upstream, ours in UPSTREAM_CONTROLLER_ENV.items():
            if upstream in environ:
                # Upstream's delays are Go durations ("30ms"), which nexusd reads too.
                environ.setdefault(ours, environ.pop(upstream))
    if args.mode == "worker":
        # A pool pod has its runs' Job env; those NEXUS__ variables are the algorithm's.
        from nexusd.warm.running import worker_environ

        environ = worker_environ(os.environ if environ is None else environ)
    return load_settings(
        toml_path=args.config,
        environ=environ,
        defaults=MODE_DEFAULTS.get(getattr(args, "for_mode", None) or args.mode, {}),
        overrides=flags,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version exit 0, usage errors 2
        return int(exc.code or 0)
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"nexusd: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.mode == "config":
        sys.stdout.write(render(settings))
        return EXIT_OK
    configure_logging(level=settings.logging.level, fmt=settings.logging.format, mode=args.mode)
    from nexusd.modes import maintainer, run_mode, store  # imported late: CLI errors stay fast

    mode = "maintainer" if args.mode == "supervisor" else args.mode
    try:
        if mode == "store":
            print(trio.run(store.run, settings, args.action))
        elif mode == "worker":
            from nexusd.modes import worker

            trio.run(worker.main, settings, args.command)
        elif mode == "maintainer" and args.once:
            report = trio.run(maintainer.run_once, settings)
            print(maintainer.describe(report))
            return EXIT_FAILURE if report.errors else EXIT_OK
        else:
            trio.run(run_mode, mode, settings)
    except KeyboardInterrupt:
        return EXIT_OK
    except (NexusdError, BaseExceptionGroup) as exc:
        errors = list(_leaves(exc))
        if not all(isinstance(error, NexusdError) for error in errors):
            raise  # a bug: keep the whole traceback
        for error in errors:
            kind = "configuration error: " if isinstance(error, ConfigError) else ""
            print(f"nexusd: {kind}{error}", file=sys.stderr)
        return EXIT_USAGE if any(isinstance(e, ConfigError) for e in errors) else EXIT_FAILURE
    return EXIT_OK


def _leaves(error: BaseException) -> Iterator[BaseException]:
    """The errors inside (nested) exception groups: what a nursery's failure was made of."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error
