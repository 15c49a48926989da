"""What the HTTP handlers need, gathered in one object stored on the app (no module globals)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import attrs
from quart import current_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.api.auth import BearerAuth
    from nexusd.pipeline.cancelling import Canceller
    from nexusd.pipeline.completing import Completer
    from nexusd.pipeline.intake import Intake
    from nexusd.pipeline.leasing import WarmPools
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.filesystem import FilesystemPayloadStore


@attrs.define
class Readiness:
    """Whether the process takes new work; /readyz answers 503 and intake 503 once it stops."""

    accepting: bool = True


@attrs.define
class AppContext:
    readiness: Readiness
    #: None in a mode without one (the controller), which serves only /healthz and /readyz
    store: CheckpointStore | None = None
    intake: Intake | None = None
    canceller: Canceller | None = None
    completer: Completer | None = None
    #: the scheduler's warm pools, which the worker API serves (`nexusd.api.workers`)
    pools: WarmPools | None = None
    files: FilesystemPayloadStore | None = None
    max_payload_size: int = 64 * 1024 * 1024
    #: most runs one batch request may carry
    max_batch_runs: int = 1000
    #: longest Idempotency-Key header accepted
    max_idempotency_key: int = 255
    result_valid_for: dt.timedelta = dt.timedelta(hours=24)
    #: name -> callable returning an attrs statistics snapshot (or a plain dict), in /readyz
    statistics: dict[str, Callable[[], Any]] = attrs.field(factory=dict)
    #: reasons the process should get no traffic yet besides shutting down (empty = ready)
    not_ready: Callable[[], list[str]] = attrs.field(default=list)
    #: who may call the public API (None: anyone, the default), `nexusd.api.auth`
    bearer: BearerAuth | None = None


def current_context() -> AppContext:
    """The AppContext of the app handling the current request."""
    context: AppContext = current_app.config["NEXUSD"]
    return context


def current_store() -> CheckpointStore:
    """The checkpoint store, for the routes of the modes that have one (only they register
    the routes that read it)."""
    store = current_context().store
    assert store is not None, "a route that reads runs is served by a mode without a store"
    return store
