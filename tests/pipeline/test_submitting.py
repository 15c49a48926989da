"""The submitter: one Job per run, conditional RUNNING, retries and permanent failures.

Real in the first group: a SQLite store and the embedded cluster over HTTP. FAKED in the second
group: the API server, through `httpx.MockTransport` answering with a script of status codes
(429 with Retry-After, 503, 422), because the embedded cluster has no fault injection yet; the
client, throttle and submitter are the production code. Time is trio's autojump clock there.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from nexusd.core.clock import ManualClock, SystemClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, SubmissionEntry
from nexusd.devcluster import DevCluster, DevClusterConfig, run_dev_cluster
from nexusd.devcluster.objects import status_body
from nexusd.kube.client import JOBS, KubeClient
from nexusd.kube.credentials import ClusterCredentials, load_credentials
from nexusd.kube.manifests import build_job
from nexusd.kube.shards import Shard
from nexusd.kube.throttling import ShardThrottle
from nexusd.pipeline.intake import RunRef
from nexusd.pipeline.queueing import VirtualQueue
from nexusd.pipeline.submitting import LAUNCH_FAILED, Submitter, run_submitter
from nexusd.stores.memory import MemoryCheckpointStore
from nexusd.stores.sqlite import SqliteCheckpointStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from nexusd.stores.checkpoints import CheckpointStore

SPEC = {
    "command": "python",
    "args": ["main.py", "--sas-uri=%s", "--request-id=%s"],
    "container": {"registry": "example.test", "image": "algo", "versionTag": "1"},
    "computeResources": {"cpuLimit": "1000m", "memoryLimit": "1Gi"},
    "workgroupRef": {"name": "default", "group": "g", "kind": "NexusAlgorithmWorkgroup"},
    "runtimeEnvironment": {
        "maximumRetries": 0,
        "annotations": {"devcluster.nexusd.io/duration": "60"},
    },
}


async def buffer_run(store: CheckpointStore, request_id: str) -> RunRef:
    job = build_job(
        request_id=request_id,
        algorithm="algo",
        spec=SPEC,
        workgroup={"cluster": "dev", "description": "d"},
        namespace="nexus",
        payload_url="http://127.0.0.1:1/payload",
        result_upload_url=None,
        parent_owner=None,
        parent=None,
        nexus_version="test",
    )
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    await store.create(
        checkpoint=Checkpoint(
            algorithm="algo",
            id=request_id,
            lifecycle_stage=Stage.BUFFERED,
            received_at=now,
            last_modified=now,
        ),
        submission=SubmissionEntry(algorithm="algo", id=request_id, cluster="dev", template=job),
    )
    return RunRef(algorithm="algo", request_id=request_id)


def make_submitter(store: CheckpointStore, client: KubeClient) -> Submitter:
    return Submitter(
        store=store,
        shard=Shard(name="dev", client=client, namespace="nexus"),
        throttle=ShardThrottle(rate=1000, burst=1000),
        queue=VirtualQueue(100),
        clock=SystemClock(),
        retry_base_delay=0.1,
        retry_max_delay=2.0,
    )


async def submit_until_settled(submitter: Submitter, ref: RunRef) -> None:
    """Run the workers until the run has left BUFFERED (retries go through the queue)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_submitter(
                submitter=submitter, workers=2, task_status=task_status
            )
        )
        submitter.queue.reserve_nowait().put(ref)
        with trio.fail_after(60):
            while True:
                checkpoint = await submitter.store.get(
                    algorithm=ref.algorithm, request_id=ref.request_id
                )
                assert checkpoint is not None
                if checkpoint.lifecycle_stage is not Stage.BUFFERED:
                    break
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


# --- against the embedded cluster -------------------------------------------------------


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> DevCluster:
    handle: DevCluster = await nursery.start(
        lambda task_status: run_dev_cluster(
            config=DevClusterConfig(state_dir=tmp_path / "cluster"), task_status=task_status
        )
    )
    return handle


@pytest.fixture
async def client(cluster: DevCluster) -> AsyncIterator[KubeClient]:
    credentials = load_credentials(cluster.kubeconfig_path)
    kube = KubeClient(credentials=credentials)
    yield kube
    await kube.aclose()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteCheckpointStore]:
    async with await SqliteCheckpointStore.open(
        path=tmp_path / "c.sqlite3", clock=SystemClock()
    ) as sqlite:
        yield sqlite


async def test_submit_creates_the_job_and_marks_running(
    store: SqliteCheckpointStore, client: KubeClient, cluster: DevCluster
) -> None:
    ref = await buffer_run(store, "run-1")
    submitter = make_submitter(store, client)
    await submitter.submit(ref)
    checkpoint = await store.get(algorithm="algo", request_id="run-1")
    assert checkpoint is not None
    assert checkpoint.lifecycle_stage is Stage.RUNNING
    job = await client.get(JOBS, namespace="nexus", name="run-1")
    assert checkpoint.job_uid == job["metadata"]["uid"]
    assert checkpoint.sent_at is not None
    assert cluster.request_counts[("create", "jobs", 201)] == 1


async def test_a_completion_that_overtakes_running_is_kept(
    store: SqliteCheckpointStore, client: KubeClient
) -> None:
    ref = await buffer_run(store, "fast")
    # the receiver's report lands before the submitter records RUNNING
    await store.transition(
        algorithm="algo",
        request_id="fast",
        to=Stage.COMPLETED,
        changes={"result_uri": "https://r"},
    )
    await make_submitter(store, client).submit(ref)
    checkpoint = await store.get(algorithm="algo", request_id="fast")
    assert checkpoint is not None
    assert checkpoint.lifecycle_stage is Stage.COMPLETED
    assert checkpoint.result_uri == "https://r"


async def test_a_run_cancelled_while_queued_gets_no_job(
    store: SqliteCheckpointStore, client: KubeClient, cluster: DevCluster
) -> None:
    ref = await buffer_run(store, "cancelled")
    await store.transition(algorithm="algo", request_id="cancelled", to=Stage.CANCELLED)
    await make_submitter(store, client).submit(ref)
    assert cluster.request_counts[("create", "jobs", 201)] == 0


async def test_an_existing_job_counts_as_submitted(
    store: SqliteCheckpointStore, client: KubeClient
) -> None:
    ref = await buffer_run(store, "twice")
    entry = await store.get_submission(algorithm="algo", request_id="twice")
    assert entry is not None
    existing = await client.create(JOBS, namespace="nexus", body=entry.template)
    submitter = make_submitter(store, client)
    await submitter.submit(ref)
    checkpoint = await store.get(algorithm="algo", request_id="twice")
    assert checkpoint is not None
    assert checkpoint.lifecycle_stage is Stage.RUNNING
    assert checkpoint.job_uid == existing["metadata"]["uid"]
    assert submitter.statistics().already_existed == 1


# --- against a scripted API server (FAKED, see the module docstring) ----------------------


class Script:
    """Answers Job creates with the given responses in order, then 201."""

    def __init__(self, *responses: tuple[int, dict[str, str], Any]) -> None:
        self.responses = list(responses)
        self.creates: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.creates.append(trio.current_time())
        if self.responses:
            code, headers, body = self.responses.pop(0)
            if isinstance(body, str):
                return httpx.Response(code, headers=headers, text=body)
            return httpx.Response(code, headers=headers, json=body)
        job = json.loads(request.content)
        job["metadata"]["uid"] = "uid-1"
        return httpx.Response(201, json=job)


@pytest.fixture
def scripted() -> Iterator[Any]:
    def make(script: Script) -> KubeClient:
        credentials = ClusterCredentials(server="http://api.test")
        return KubeClient(credentials=credentials, transport=httpx.MockTransport(script))

    return make


async def test_transient_errors_are_retried_and_429_waits_retry_after(
    autojump_clock: trio.testing.MockClock, scripted: Any
) -> None:
    script = Script(
        (429, {"Retry-After": "3"}, "Too many requests, please try again later.\n"),
        (503, {}, status_body(503, "ServiceUnavailable", "etcd is down")),
    )
    store = MemoryCheckpointStore(clock=ManualClock())
    ref = await buffer_run(store, "retried")
    submitter = make_submitter(store, scripted(script))
    await submit_until_settled(submitter, ref)
    checkpoint = await store.get(algorithm="algo", request_id="retried")
    assert checkpoint is not None
    assert checkpoint.lifecycle_stage is Stage.RUNNING
    assert len(script.creates) == 3
    assert script.creates[1] - script.creates[0] >= 3.0  # Retry-After honoured
    assert submitter.statistics().retries == 2
    assert submitter.throttle.statistics().throttled == 1  # the 429 slowed the shard down
    assert submitter.throttle.rate < 1000


async def test_a_permanent_refusal_fails_the_run_with_the_api_message(
    autojump_clock: trio.testing.MockClock, scripted: Any
) -> None:
    message = 'Job.batch "bad" is invalid: spec.template.spec.containers[0].image: Required value'
    script = Script((422, {}, status_body(422, "Invalid", message)))
    store = MemoryCheckpointStore(clock=ManualClock())
    ref = await buffer_run(store, "bad")
    await submit_until_settled(make_submitter(store, scripted(script)), ref)
    checkpoint = await store.get(algorithm="algo", request_id="bad")
    assert checkpoint is not None
    assert checkpoint.lifecycle_stage is Stage.SCHEDULING_FAILED
    assert checkpoint.algorithm_failure_cause == LAUNCH_FAILED
    assert checkpoint.algorithm_failure_details == message
    assert len(script.creates) == 1


async def test_a_run_claimed_by_another_host_is_theirs_to_submit(
    store: SqliteCheckpointStore, client: KubeClient, cluster: DevCluster
) -> None:
    ref = await buffer_run(store, "claimed")
    submitter = attrs.evolve(make_submitter(store, client), owner="scheduler-a")
    # buffer_run stores the run with no host; a maintainer claims it for itself
    claimed = await store.claim(
        algorithm="algo", request_id="claimed", from_host="", to_host="maintainer-0"
    )
    assert claimed is not None
    await submitter.submit(ref)
    assert cluster.request_counts[("create", "jobs", 201)] == 0
