"""Build the quart-trio app for a mode and serve it with hypercorn inside the mode's nursery."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from nexusd.api import (
    completions,
    data,
    docs,
    health,
    metrics,
    results,
    runs,
    versions,
    workers,
)
from nexusd.api.access_log import log_access
from nexusd.api.asgi import BodyBudget, guard
from nexusd.api.auth import protect
from nexusd.api.responses import text
from nexusd.core.errors import StoreError
from nexusd.logs import label_run

if TYPE_CHECKING:
    import socket

    from quart import Response

    from nexusd.api.context import AppContext

logger = logging.getLogger(__name__)


def create_app(context: AppContext, *, scheduler: bool, receiver: bool) -> QuartTrio:
    """The scheduler's routes (runs, results, data URLs) and/or the receiver's (completions),
    each under every API version of `nexusd.api.versions` with its OpenAPI document."""
    app = QuartTrio("nexusd")
    app.config["NEXUSD"] = context
    app.config["MAX_CONTENT_LENGTH"] = context.max_payload_size
    app.register_blueprint(health.blueprint)
    app.register_blueprint(metrics.blueprint)
    stable = [runs.blueprint, results.blueprint] if scheduler else []
    stable += [completions.blueprint] if receiver else []
    if stable:
        experimental = [runs.latest] if scheduler else []
        versions.register(app, stable=stable, experimental=experimental, meta=[docs.blueprint])
    if scheduler and context.files is not None:
        app.register_blueprint(data.blueprint)
    if scheduler:
        app.register_blueprint(workers.blueprint)
    # Bearer tokens and the receiver URLs' completion tokens, before a body is read.
    inner: Any = app.asgi_app  # quart's ASGI types are narrower than a plain callable
    protected: Any = protect(inner, bearer=context.bearer)
    app.asgi_app = protected  # type: ignore[method-assign]

    @app.before_request
    async def label_the_run() -> None:
        # Lines logged about this request name its run (nexusd.logs), from the route's path.
        args = request.view_args
        if args:
            label_run(request_id=args.get("request_id"), algorithm=args.get("algorithm"))

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        # Framework errors (404 route, 405, 413) as text/plain like the rest of the API.
        message = error.description or error.name
        if error.code == 413:
            message = f"Request body is larger than the limit of {context.max_payload_size} bytes"
        return text(error.code or 500, message)

    @app.errorhandler(StoreError)
    async def store_error(error: StoreError) -> Response:
        # Transient for the client: the SDKs retry 5xx, and nothing was accepted.
        logger.error("checkpoint store failed: %s", error)
        return text(503, f"The checkpoint store is unavailable: {error}", {"Retry-After": "5"})

    return app


async def serve_http(
    app: QuartTrio,
    *,
    sock: socket.socket,
    shutdown: trio.Event | None = None,
    stopped: trio.Event | None = None,
    grace: float = 10.0,
    max_body_memory: int = 512 * 1024 * 1024,
    keep_alive_timeout: float = 75.0,
    access_log: bool = True,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on an already bound, listening socket; `started(url)` once hypercorn accepts
    connections. Request bodies are bounded per request (the app's `MAX_CONTENT_LENGTH`) and
    together (`max_body_memory`), see `nexusd.api.asgi`. Idle keep-alive connections are
    closed after `keep_alive_timeout` (hypercorn's 5 s default equals httpx's own expiry, so
    a client reusing a connection at that moment got "Server disconnected"). With `access_log`,
    every request is logged on `nexusd.access` (`nexusd.api.access_log`).

    Setting `shutdown` stops it gracefully: the listening socket is closed (new connections
    are refused, not left waiting in the backlog), idle keep-alive connections are closed, and
    requests in flight get up to `grace` seconds to finish before they are cancelled; then
    `stopped` is set and this returns. Cancelling it stops it at once.
    """
    config = Config()
    # hypercorn takes ownership of (and closes) the descriptor it is given; the caller keeps sock.
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = grace
    config.keep_alive_timeout = keep_alive_timeout

    async def trigger() -> None:
        assert shutdown is not None
        await shutdown.wait()
        sock.close()  # hypercorn closes its duplicate; the socket stops listening with both

    asgi: Any = app  # hypercorn's and quart's ASGI types are narrower than a plain callable
    guarded: Any = guard(
        asgi, max_body=app.config["MAX_CONTENT_LENGTH"], budget=BodyBudget(max_body_memory)
    )
    if access_log:
        guarded = log_access(guarded)

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(
            guarded,
            config,
            shutdown_trigger=trigger if shutdown is not None else None,
            task_status=task_status,
        )

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(run)
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        logger.info("serving HTTP on %s", url)
        task_status.started(url)
        del binds
    logger.info("HTTP server stopped")
    if stopped is not None:
        stopped.set()
