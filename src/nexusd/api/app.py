"""Build the quart-trio app for a mode and serve it with hypercorn inside the mode's nursery."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from nexusd.api import completions, data, health, results, runs
from nexusd.api.responses import text

if TYPE_CHECKING:
    import socket

    from quart import Response

    from nexusd.api.context import AppContext

logger = logging.getLogger(__name__)


def create_app(context: AppContext, *, scheduler: bool, receiver: bool) -> QuartTrio:
    """The scheduler's routes (runs, results, data URLs) and/or the receiver's (completions)."""
    app = QuartTrio("nexusd")
    app.config["NEXUSD"] = context
    app.config["MAX_CONTENT_LENGTH"] = context.max_payload_size
    app.register_blueprint(health.blueprint)
    if scheduler:
        app.register_blueprint(runs.blueprint)
        app.register_blueprint(results.blueprint)
        if context.files is not None:
            app.register_blueprint(data.blueprint)
    if receiver:
        app.register_blueprint(completions.blueprint)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        # Framework errors (404 route, 405, 413) as text/plain like the rest of the API.
        message = error.description or error.name
        if error.code == 413:
            message = f"Request body is larger than the limit of {context.max_payload_size} bytes"
        return text(error.code or 500, message)

    return app


async def serve_http(
    app: QuartTrio,
    *,
    sock: socket.socket,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on an already bound, listening socket until cancelled or `shutdown` is set;
    `started(url)` once hypercorn accepts connections."""
    config = Config()
    # hypercorn takes ownership of (and closes) the descriptor it is given; the caller keeps sock.
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    trigger: Any = shutdown.wait if shutdown is not None else None

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(app, config, shutdown_trigger=trigger, task_status=task_status)

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(run)
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        logger.info("serving HTTP on %s", url)
        task_status.started(url)
        del binds
