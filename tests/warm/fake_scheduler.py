"""A FAKE of the scheduler's worker API (design §3 "Worker HTTP protocol") for the worker's tests.

What is faked: the scheduler. Its runs are an in-memory dict and queue here, with no store, no
Kubernetes and no lease expiry; it also serves the runs' payload GET and result PUT URLs. What
is real: HTTP over loopback (hypercorn, as nexusd serves), the worker and its httpx client, the
processes command mode starts. The scheduler's own side is tested against the worker in the
e2e tests; this fake lets the worker's behaviour (batching, back-off, cancel, stop) be driven
and observed exactly.
"""

from __future__ import annotations

import base64
import collections
import socket
from typing import Any

import attrs
import trio
from quart import Response, request
from quart_trio import QuartTrio

from nexusd.api.app import serve_http

ALGORITHM = "hello-warm"


@attrs.define
class FakeRun:
    request_id: str
    payload: bytes = b""
    inline: bool = True
    env: dict[str, str] = attrs.Factory(dict)
    attempt: int = 1
    #: queued | leased | done | cancelled
    state: str = "queued"
    holder: str = ""
    outcome: dict[str, Any] | None = None


class FakeScheduler:
    def __init__(self, *, token: str = "", lease_seconds: float = 30.0) -> None:
        self.token = token
        self.lease_seconds = lease_seconds
        self.max_wait = 20.0
        self.runs: dict[str, FakeRun] = {}
        self.queue: collections.deque[str] = collections.deque()
        #: lease runs beyond what a lease asks for (a scheduler bug the worker survives)
        self.overgive = 0
        # What the worker sent, in order.
        self.lease_requests: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.done_items: list[dict[str, Any]] = []
        self.released: list[dict[str, Any]] = []
        self.payload_gets: list[str] = []
        self.results: dict[str, tuple[bytes, str]] = {}
        #: result PUTs answered 503 before one is taken
        self.put_failures = 0
        self.put_attempts = 0
        #: payload GETs of these runs wait until their event is set
        self.payload_gates: dict[str, trio.Event] = {}
        self.url = ""
        self._activity = trio.Event()
        self._sock: socket.socket | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._port = 0
        self.app = self._build_app()

    # --- driving it ---------------------------------------------------------------------------

    def add(self, request_id: str, **fields: Any) -> FakeRun:
        run = self.runs[request_id] = FakeRun(request_id, **fields)
        self.queue.append(request_id)
        self._touch()
        return run

    def cancel(self, request_id: str) -> None:
        self.runs[request_id].state = "cancelled"
        self._touch()

    def lose(self, request_id: str) -> None:
        """Another worker got the run (its lease expired here): attempt + 1."""
        run = self.runs[request_id]
        run.attempt += 1
        run.holder = "someone-else"
        self._touch()

    def done_ids(self) -> list[str]:
        return [item["requestId"] for item in self.done_items]

    async def until(self, predicate: Any, within: float = 15.0) -> None:
        """Wait until `predicate()` holds, re-checking at each request or change."""
        with trio.fail_after(within):
            while not predicate():
                await self._activity.wait()

    # --- serving ------------------------------------------------------------------------------

    async def serve(self, nursery: trio.Nursery) -> str:
        """Serve on a loopback port (the same one again after `down`)."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        sock.listen()
        self._sock = sock
        self._port = sock.getsockname()[1]
        self._stopped = trio.Event()
        self.url = await nursery.start(self._serve, sock)
        return self.url

    async def _serve(self, sock: socket.socket, task_status: trio.TaskStatus[str]) -> None:
        try:
            with trio.CancelScope() as self._scope:
                await serve_http(self.app, sock=sock, access_log=False, task_status=task_status)
        finally:
            self._stopped.set()

    async def down(self) -> None:
        """Stop listening: connections are refused until `serve` again."""
        assert self._scope is not None
        assert self._sock is not None
        self._scope.cancel()
        await self._stopped.wait()
        self._sock.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    # --- the API ------------------------------------------------------------------------------

    def _touch(self) -> None:
        self._activity.set()
        self._activity = trio.Event()

    def _refusal(self, algorithm: str) -> Response | None:
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return Response("Forbidden: bad worker token", status=403, content_type="text/plain")
        if algorithm != ALGORITHM:
            return Response(f"no warm template {algorithm}", status=404, content_type="text/plain")
        return None

    def _lease_one(self, request_id: str, worker: str) -> dict[str, Any]:
        run = self.runs[request_id]
        run.state, run.holder = "leased", worker
        payload_uri = f"{self.url}/payloads/{request_id}"
        upload_uri = f"{self.url}/results/{request_id}"
        return {
            "requestId": request_id,
            "attempt": run.attempt,
            "args": [f"--sas-uri={payload_uri}", f"--request-id={request_id}"],
            "env": {
                "NEXUS__RESULT_UPLOAD_URL": upload_uri,
                "NEXUS__CLIENT__RECEIVER": f"http://receiver.test/t/{run.attempt}.token",
                **run.env,
            },
            "payloadUri": payload_uri,
            "resultUploadUri": upload_uri,
            "payload": base64.b64encode(run.payload).decode() if run.inline else None,
        }

    async def _lease(self, algorithm: str) -> Any:
        if (refusal := self._refusal(algorithm)) is not None:
            return refusal
        body = await request.get_json()
        self.lease_requests.append(body)
        self._touch()
        with trio.move_on_after(min(body["wait"], self.max_wait)):
            while not self.queue:
                await self._activity.wait()
        most = body["max"] + self.overgive
        runs = []
        while self.queue and len(runs) < most:
            runs.append(self._lease_one(self.queue.popleft(), body["worker"]))
        self._touch()
        return {"leaseSeconds": self.lease_seconds, "runs": runs}

    def _record(self, worker: str, item: dict[str, Any]) -> dict[str, str]:
        self.done_items.append(item)
        run = self.runs.get(item["requestId"])
        answer = {"requestId": item["requestId"], "outcome": "refused"}
        if run is None or run.state != "leased":
            return {**answer, "message": f"run is {run.state if run else 'unknown'}"}
        if run.holder != worker or run.attempt != item["attempt"]:
            return {**answer, "message": "lease lost"}
        run.state, run.outcome = "done", item
        return {**answer, "outcome": "recorded", "message": ""}

    def _release(self, worker: str, item: dict[str, Any]) -> None:
        self.released.append(item)
        run = self.runs[item["requestId"]]
        if run.state == "leased" and run.holder == worker and run.attempt == item["attempt"]:
            run.state, run.holder = "queued", ""
            run.attempt += 1
            self.queue.appendleft(run.request_id)

    def _held(self, worker: str, holding: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
        cancelled, lost = [], []
        for item in holding:
            run = self.runs.get(item["requestId"])
            if run is not None and run.state == "cancelled":
                cancelled.append(run.request_id)
            elif (
                run is None
                or run.state != "leased"
                or run.holder != worker
                or run.attempt != item["attempt"]
            ):
                lost.append(item["requestId"])
        return cancelled, lost

    async def _report(self, algorithm: str) -> Any:
        if (refusal := self._refusal(algorithm)) is not None:
            return refusal
        body = await request.get_json()
        self.reports.append(body)
        worker = body["worker"]
        outcomes = [self._record(worker, item) for item in body["done"]]
        for item in body["release"]:
            self._release(worker, item)
        self._touch()
        cancelled, lost = self._held(worker, body["holding"])
        if body["wait"] > 0 and body["holding"] and not cancelled and not lost:
            with trio.move_on_after(min(body["wait"], self.max_wait)):
                while not (cancelled or lost):
                    await self._activity.wait()
                    cancelled, lost = self._held(worker, body["holding"])
        return {
            "leaseSeconds": self.lease_seconds,
            "done": outcomes,
            "cancelled": cancelled,
            "lost": lost,
        }

    async def _payload(self, request_id: str) -> Any:
        self.payload_gets.append(request_id)
        self._touch()
        if request_id in self.payload_gates:
            await self.payload_gates[request_id].wait()
        return Response(self.runs[request_id].payload, content_type="application/octet-stream")

    async def _result(self, request_id: str) -> Any:
        self.put_attempts += 1
        if self.put_attempts <= self.put_failures:
            return Response("busy", status=503)
        self.results[request_id] = (
            await request.get_data(as_text=False),
            request.headers.get("Content-Type", ""),
        )
        self._touch()
        return Response("", status=201)

    def _build_app(self) -> QuartTrio:
        app = QuartTrio("fake-scheduler")
        app.add_url_rule(
            "/worker/v1/pools/<algorithm>/lease", view_func=self._lease, methods=["POST"]
        )
        app.add_url_rule(
            "/worker/v1/pools/<algorithm>/report", view_func=self._report, methods=["POST"]
        )
        app.add_url_rule("/payloads/<request_id>", view_func=self._payload, methods=["GET"])
        app.add_url_rule("/results/<request_id>", view_func=self._result, methods=["PUT"])
        return app
