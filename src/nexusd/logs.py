"""Logging set-up: one logger per module, plain or JSON lines, and the run a line is about.

Every line logged while a run is being worked on carries that run's `request_id` and
`algorithm`, in both formats, without each call site passing them: the code that works on one
run opens `run_context(...)` around the work, and the handler's filter copies the labels onto
every record (an explicit `extra={"request_id": ...}` still wins).

The labels live in a contextvar. trio gives each task a copy of the context of the task that
started it, taken when it is started, so:

- long-lived workers (a shard's submitters, the maintainer's reconcilers) open a context per
  run around that run's work, never once at task start, and it ends with the run;
- an HTTP request is handled in tasks of its own: `label_run` labels the current request
  (the route's algorithm and request id, then the id intake makes for a new run) in the
  `RunLabels` object the request's outermost layer opened (`api/access_log.py`), which its
  child tasks share, so the access log line names the run too.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Iterator

_CONTEXT_KEYS = ("request_id", "algorithm")


class RunLabels:
    """The run the current task works on; "" where not known (yet)."""

    __slots__ = ("algorithm", "request_id")

    def __init__(self, *, request_id: str = "", algorithm: str = "") -> None:
        self.request_id = request_id
        self.algorithm = algorithm


_run: contextvars.ContextVar[RunLabels | None] = contextvars.ContextVar("nexusd_run", default=None)


@contextlib.contextmanager
def run_context(*, request_id: str = "", algorithm: str = "") -> Iterator[RunLabels]:
    """Label the log lines of the current task (and of tasks it starts meanwhile) with a run
    until the block ends."""
    labels = RunLabels(request_id=request_id, algorithm=algorithm)
    token = _run.set(labels)
    try:
        yield labels
    finally:
        _run.reset(token)


def label_run(*, request_id: str | None = None, algorithm: str | None = None) -> None:
    """Name the run the current request is about, in the labels its outermost layer opened
    (see the module docstring); without any, in the current task's context, which ends with
    the task: call this only from a task that handles one request."""
    labels = _run.get()
    if labels is None:
        labels = RunLabels()
        _run.set(labels)
    if request_id is not None:
        labels.request_id = request_id
    if algorithm is not None:
        labels.algorithm = algorithm


def current_run() -> RunLabels | None:
    """The labels of the run the current task works on, if any."""
    return _run.get()


class _ContextFilter(logging.Filter):
    """Adds `mode` to every record, and the current run's labels unless `extra` set them."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def filter(self, record: logging.LogRecord) -> bool:
        record.mode = self.mode
        labels = _run.get()
        if labels is not None:
            if labels.request_id and not hasattr(record, "request_id"):
                record.request_id = labels.request_id
            if labels.algorithm and not hasattr(record, "algorithm"):
                record.algorithm = labels.algorithm
        return True


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{key}={getattr(record, key)}" for key in _CONTEXT_KEYS if hasattr(record, key)
        )
        return f"{line} [{context}]" if context else line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "mode": getattr(record, "mode", ""),
            "message": record.getMessage(),
        }
        for key in _CONTEXT_KEYS:
            if hasattr(record, key):
                document[key] = getattr(record, key)
        http = getattr(record, "http", None)
        if http is not None:  # the access log's fields (api/access_log.py)
            document["http"] = http
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)


def make_handler(*, fmt: str, mode: str, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing `fmt` ("json" or "plain") lines to `stream` (default stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_ContextFilter(mode))
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            _PlainFormatter("%(asctime)s %(levelname)-7s %(mode)s %(name)s: %(message)s")
        )
    return handler


def configure_logging(*, level: str, fmt: str, mode: str) -> None:
    root = logging.getLogger()
    root.handlers[:] = [make_handler(fmt=fmt, mode=mode)]
    root.setLevel(level)
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
