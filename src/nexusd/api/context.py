"""What the HTTP handlers need, gathered in one object stored on the app (no module globals)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.pipeline.cancelling import Canceller
    from nexusd.pipeline.completing import Completer
    from nexusd.pipeline.intake import Intake
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.filesystem import FilesystemPayloadStore


@attrs.define
class Readiness:
    """Why the process is or is not ready; /readyz answers 503 while any reason is set."""

    reasons: set[str] = attrs.field(factory=set)
    accepting: bool = True

    def block(self, reason: str) -> None:
        self.reasons.add(reason)

    def unblock(self, reason: str) -> None:
        self.reasons.discard(reason)


@attrs.define
class AppContext:
    store: CheckpointStore
    readiness: Readiness
    intake: Intake | None = None
    canceller: Canceller | None = None
    completer: Completer | None = None
    files: FilesystemPayloadStore | None = None
    max_payload_size: int = 64 * 1024 * 1024
    result_valid_for: dt.timedelta = dt.timedelta(hours=24)
    #: name -> callable returning an attrs statistics snapshot, shown by /readyz
    statistics: dict[str, Callable[[], Any]] = attrs.field(factory=dict)
