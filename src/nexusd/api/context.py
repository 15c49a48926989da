"""What the HTTP handlers need, gathered in one object stored on the app (no module globals)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import attrs
from quart import current_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.pipeline.cancelling import Canceller
    from nexusd.pipeline.completing import Completer
    from nexusd.pipeline.intake import Intake
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.filesystem import FilesystemPayloadStore


@attrs.define
class Readiness:
    """Whether the process takes new work; /readyz answers 503 and intake 503 once it stops."""

    accepting: bool = True


@attrs.define
class AppContext:
    store: CheckpointStore
    readiness: Readiness
    intake: Intake | None = None
    canceller: Canceller | None = None
    completer: Completer | None = None
    files: FilesystemPayloadStore | None = None
    max_payload_size: int = 64 * 1024 * 1024
    #: most runs one batch request may carry
    max_batch_runs: int = 1000
    result_valid_for: dt.timedelta = dt.timedelta(hours=24)
    #: name -> callable returning an attrs statistics snapshot, shown by /readyz
    statistics: dict[str, Callable[[], Any]] = attrs.field(factory=dict)


def current_context() -> AppContext:
    """The AppContext of the app handling the current request."""
    context: AppContext = current_app.config["NEXUSD"]
    return context
