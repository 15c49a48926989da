"""Intake under cancellation: cancelled at every point where it can be, a run is either not
accepted at all, or stored AND queued; a dry run is written once, already COMPLETED.

Real: `Intake` with the SQLite store (writer thread, group commit) and the filesystem payload
store on disk. Not there: Kubernetes (no parent runs here, so intake never calls a cluster; the
shard's client is never used) and HTTP (a client disconnect is the cancellation of the task
that runs `accept`, which is what hypercorn does to a handler). The points are enumerated with
a trio Instrument: after the accepting task's k-th step (it is then parked at its k-th
checkpoint), its cancel scope is cancelled.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from nexusd.core.clock import SystemClock
from nexusd.core.lifecycle import Stage
from nexusd.kube.client import TEMPLATES, WORKGROUPS
from nexusd.kube.configuration import ConfigurationCache
from nexusd.kube.shards import Shard
from nexusd.pipeline.idempotency import accept_once, key_for
from nexusd.pipeline.intake import Intake, IntakeError, RunRef, parse_request
from nexusd.pipeline.queueing import VirtualQueue
from nexusd.stores.filesystem import FilesystemPayloadStore
from nexusd.stores.memory import MemoryCheckpointStore
from nexusd.stores.signing import UrlSigner
from nexusd.stores.sqlite import SqliteCheckpointStore
from tests.conftest import template
from tests.servers.clusters import WORKGROUP

if TYPE_CHECKING:
    from pathlib import Path

    from nexusd.core.records import NewRun

HOST = "scheduler-0"
BODY = b'{"algorithmParameters": {"n": 1}, "tag": "cancel"}'


class CancelAfterSteps(trio.abc.Instrument):
    """Cancel `scope` once `task` has run `steps` steps (it is parked at a checkpoint then)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.task: trio.lowlevel.Task | None = None
        self.scope: trio.CancelScope | None = None
        self.taken = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task and self.scope is not None:
            self.taken += 1
            if self.taken == self.steps:
                self.scope.cancel()


def make_intake(store: Any, tmp_path: Path, *, inline_max: int) -> Intake:
    cache = ConfigurationCache()
    cache.replace_all(TEMPLATES, [template("algo")])
    cache.replace_all(WORKGROUPS, [WORKGROUP])
    clock = SystemClock()
    shard = Shard(name="dev", client=None, namespace="nexus")  # type: ignore[arg-type]
    return Intake(
        store=store,
        payloads=FilesystemPayloadStore(
            root=tmp_path / "blobs", signer=UrlSigner(b"k" * 32, clock), base_url="http://n"
        ),
        configuration=cache,
        shards={"dev": shard},
        queues={"dev": VirtualQueue(100)},
        clock=clock,
        host_name=HOST,
        nexus_version="test",
        default_valid_for=3600,
        max_valid_for=7200,
        result_valid_for=3600,
        inline_max=inline_max,
    )


async def stored(store: SqliteCheckpointStore) -> list[Any]:
    return [
        checkpoint
        for stage in Stage
        for checkpoint in await store.by_host_and_stage(host=HOST, stage=stage)
    ]


async def accept_cancelled_after(
    intake: Intake, steps: int, *, dry_run: bool, key: str | None = None
) -> str | None:
    """Run one `accept` as a handler would (with an Idempotency-Key: `accept_once`), cancelled
    after `steps` steps; its request id if the handler finished."""
    instrument = CancelAfterSteps(steps)
    result: list[str] = []

    async def accept() -> None:
        """What the HTTP handler does: read the body, accept, answer (a checkpoint each)."""
        instrument.task = trio.lowlevel.current_task()
        with trio.CancelScope() as scope:
            instrument.scope = scope
            await trio.lowlevel.checkpoint()  # the body arrives
            request = parse_request(BODY, default_valid_for=3600, max_valid_for=7200)
            if key is None:
                request_id = await intake.accept(algorithm="algo", request=request, dry_run=dry_run)
            else:
                idempotency = await key_for(intake, key, BODY, route="run", dry_run=dry_run)
                request_id, _ = await accept_once(
                    intake,
                    algorithm="algo",
                    request=request,
                    dry_run=dry_run,
                    idempotency=idempotency,
                )
            await trio.lowlevel.checkpoint()  # the answer goes out
            result.append(request_id)

    trio.lowlevel.add_instrument(instrument)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
    finally:
        trio.lowlevel.remove_instrument(instrument)
    return result[0] if result else None


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "idempotency-key"])
@pytest.mark.parametrize("inline_max", [64 * 1024, 0], ids=["inline-payload", "payload-file"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
async def test_a_cancelled_accept_leaves_nothing_or_a_stored_and_queued_run(
    tmp_path: Path, inline_max: int, dry_run: bool, keyed: bool
) -> None:
    async with await SqliteCheckpointStore.open(
        path=tmp_path / "c.sqlite3", clock=SystemClock()
    ) as store:
        intake = make_intake(store, tmp_path, inline_max=inline_max)
        queue = intake.queues["dev"]
        outcomes = set()
        for steps in range(1, 200):
            before = len(await stored(store))
            key = f"key-{steps}" if keyed else None  # a new request each time
            request_id = await accept_cancelled_after(intake, steps, dry_run=dry_run, key=key)
            runs = await stored(store)
            new = len(runs) - before
            queued = len(queue)
            assert queue.statistics().reserved == 0  # no reservation leaks
            if dry_run:
                assert queued == 0
                assert all(run.lifecycle_stage is Stage.COMPLETED for run in runs)
            else:
                assert new == queued, (steps, new, queued)  # stored and queued, or neither
                assert all(run.lifecycle_stage is Stage.BUFFERED for run in runs)
            if request_id is not None:
                assert new == 1
                outcomes.add("accepted")
                break
            outcomes.add("stored" if new else "not accepted")
            while len(queue):
                await queue.get()
        # cancelled before the write, the run is not accepted; cancelled during or after it,
        # it is stored (and queued) even though the client never hears its id
        assert outcomes == {"not accepted", "stored", "accepted"}, outcomes


class SlowStore(MemoryCheckpointStore):
    """A memory store that stores runs `DELAY` seconds after being asked (the one fake here: a
    store that does not answer in time), whether or not the caller is still waiting, as
    SQLite's writer thread does with a queued write."""

    DELAY = 10.0

    def __init__(self, *, clock: SystemClock, nursery: trio.Nursery) -> None:
        super().__init__(clock=clock)
        self._nursery = nursery

    async def create_many(self, *, runs: Any) -> None:
        done = trio.Event()

        async def later() -> None:
            await trio.sleep(self.DELAY)
            await MemoryCheckpointStore.create_many(self, runs=runs)
            done.set()

        self._nursery.start_soon(later)
        await done.wait()


async def test_a_store_that_does_not_answer_in_time_is_a_503_and_the_run_still_goes_out(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    store = SlowStore(clock=SystemClock(), nursery=nursery)
    intake = attrs.evolve(make_intake(store, tmp_path, inline_max=1024), commit_timeout=2)
    request = parse_request(BODY, default_valid_for=3600, max_valid_for=7200)
    with pytest.raises(IntakeError, match="did not confirm run") as refused:
        await intake.accept(algorithm="algo", request=request, dry_run=False)
    assert refused.value.status == 503
    # queued without its manifest: the submitter reads the run first and skips it if absent
    ref: RunRef = await intake.queues["dev"].get()
    assert ref.template is None
    await trio.sleep(SlowStore.DELAY)
    assert await store.pending_submission(algorithm="algo", request_id=ref.request_id)


def _dry(run: NewRun) -> bool:
    return run.checkpoint.job_uid == "dry-run"


async def test_a_dry_run_is_one_write_already_completed(tmp_path: Path) -> None:
    writes: list[list[NewRun]] = []

    class Recording(MemoryCheckpointStore):
        async def create_many(self, *, runs: Any) -> None:
            writes.append(list(runs))
            await super().create_many(runs=runs)

        async def transition(self, **kwargs: Any) -> Any:
            raise AssertionError("a dry run is written once")

    store = Recording(clock=SystemClock())
    intake = make_intake(store, tmp_path, inline_max=1024)
    request = parse_request(BODY, default_valid_for=3600, max_valid_for=7200)
    request_id = await intake.accept(algorithm="algo", request=request, dry_run=True)
    [[run]] = writes
    assert _dry(run)
    assert run.checkpoint.lifecycle_stage is Stage.COMPLETED
    assert run.checkpoint.sent_at is not None
    assert run.checkpoint.sent_at - run.checkpoint.received_at < dt.timedelta(seconds=1)
    assert run.submission is not None  # /buffer shows the Job that would have run
    assert len(intake.queues["dev"]) == 0
    assert (await store.get(algorithm="algo", request_id=request_id)) is not None
