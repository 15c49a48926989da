"""Logging set-up: one logger per module, plain or JSON lines, context from `extra`.

The filter adds `mode` to every record; handlers format `request_id`/`algorithm` when a record
carries them, so loops can log quietly per item at DEBUG and loudly on start/stop at INFO.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_CONTEXT_KEYS = ("request_id", "algorithm")


class _ModeFilter(logging.Filter):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def filter(self, record: logging.LogRecord) -> bool:
        record.mode = self.mode
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
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)


def configure_logging(*, level: str, fmt: str, mode: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ModeFilter(mode))
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            _PlainFormatter("%(asctime)s %(levelname)-7s %(mode)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
