"""What stands between hypercorn and the Quart app: the request-body memory budget, and sends
that cancellation cannot interrupt.

Body budget. Quart reads a request's whole body into memory as it arrives, whatever the handler
does, so the only place to bound the memory of concurrent uploads is before the app sees the
request. A request announcing a `Content-Length` beyond `http.max_payload_size` is answered 413
at once, without reading the body; one that does not fit in what is left of
`http.max_body_memory` (the bytes of all bodies being held right now) is answered 429 with
`Retry-After`, so 100 clients posting 60 MiB each get told to come back instead of exhausting
the process. A body sent without a length (chunked) takes its bytes from the budget as they
arrive and waits for room, which stops reading the socket: TCP back-pressure instead of memory.
The bytes go back to the budget when the request is answered.

Shielded sends. quart-trio cancels a request's task group as soon as the request is answered
and its disconnect message is read; that message is delivered from inside hypercorn's `send`
of the response's last chunk, so the cancellation lands inside hypercorn's bookkeeping and the
HTTP/1.1 connection is never recycled: it is neither reused nor closed, and a graceful shutdown
waits out its whole grace period for it. Shielding `send` lets hypercorn finish its bookkeeping;
hypercorn already shields the socket write itself, so nothing can block longer than before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    App = Callable[[Scope, Receive, Send], Awaitable[None]]

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class BodyBudget:
    """The bytes of request bodies held at once, across every request of the process."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the body memory limit must be at least one byte")
        self.limit = limit
        self.used = 0
        self._freed = trio.lowlevel.ParkingLot()

    def try_take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    async def take(self, size: int) -> None:
        """Wait until `size` bytes fit (a chunk larger than the whole budget waits for an
        empty budget, then goes through alone)."""
        while self.used and self.used + size > self.limit:
            await self._freed.park()
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size
        self._freed.unpark_all()


def guard(app: App, *, max_body: int, budget: BodyBudget) -> App:
    """`app` behind the body budget and with shielded sends (see the module docstring)."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def shielded_send(message: Message) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        if scope["method"] not in _WITH_BODY:
            await app(scope, receive, shielded_send)
            return
        length = _content_length(scope)
        if length is None:
            await _metered(app, scope, receive, shielded_send, budget)
        elif length > max_body:
            await _refuse(send, 413, f"Request body is larger than the limit of {max_body} bytes")
        elif not budget.try_take(length):
            await _refuse(
                send,
                429,
                f"The server is holding {budget.used} bytes of request bodies and its limit is "
                f"{budget.limit} (http.max_body_memory); this {length}-byte body does not fit "
                "now. Please retry shortly.",
                retry_after=1,
            )
        else:
            try:
                await app(scope, receive, shielded_send)
            finally:
                budget.give(length)

    return guarded


async def _metered(
    app: App, scope: Scope, receive: Receive, send: Send, budget: BodyBudget
) -> None:
    """A body of unknown length: every chunk takes its bytes from the budget before the app
    sees it, waiting for room."""
    held = 0

    async def metered_receive() -> Message:
        nonlocal held
        message = await receive()
        size = len(message.get("body", b"")) if message["type"] == "http.request" else 0
        if size:
            await budget.take(size)
            held += size
        return message

    try:
        await app(scope, metered_receive, send)
    finally:
        budget.give(held)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                return None  # h11 refuses a malformed length before we get here
    return None


async def _refuse(send: Send, status: int, message: str, *, retry_after: int = 0) -> None:
    """Answer without reading the body; the connection is closed after the answer, since the
    unread body would otherwise be taken for the next request."""
    body = message.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after:
        headers.append((b"retry-after", str(retry_after).encode()))
    with trio.CancelScope(shield=True):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
