"""Settings: frozen attrs groups, loaded with a fixed precedence.

    defaults (named constants below) < TOML file (`--config`) < `NEXUS__SECTION__KEY` environment
    < command-line flags

Every key lives in one section; `config/nexusd.example.toml` lists them all with their defaults.
Unknown sections or keys and values that do not parse stop the process at start (exit code 2)
with a message naming the key, rather than being silently ignored.

Durations are written as Go duration strings (`"100ms"`, `"24h"`), like upstream's config, or as
plain numbers of seconds; sizes as Kubernetes-style quantities (`"64Mi"`) or plain bytes.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from nexusd.core.durations import parse_go_duration
from nexusd.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

ENV_PREFIX = "NEXUS__"

DEFAULT_PORT = 8080
DEFAULT_DATA_DIR = ".nexusd"
DEFAULT_PAYLOAD_VALID_FOR = 24 * 3600.0  # upstream's `payload-valid-for` default (24h)
DEFAULT_MAX_VALID_FOR = 7 * 24 * 3600.0  # S3 SigV4 presigning caps at 7 days
DEFAULT_MAX_PAYLOAD_SIZE = 64 * 1024 * 1024
DEFAULT_INLINE_MAX = 64 * 1024  # a small payload rides in the checkpoint's group commit
DEFAULT_QUEUE_CAPACITY = 10_000
DEFAULT_WORKERS = 8
DEFAULT_SUBMIT_RATE = 50.0  # Job creates per second per shard; client-go's default QPS is 5
DEFAULT_SUBMIT_BURST = 100
DEFAULT_RUNTIME_NAMESPACE = "nexus"


def _doc(text: str, kind: str = "") -> dict[str, str]:
    return {"doc": text, "kind": kind}


@attrs.frozen
class HttpSettings:
    host: str = attrs.field(default="0.0.0.0", metadata=_doc("address the HTTP API binds to"))
    port: int = attrs.field(default=DEFAULT_PORT, metadata=_doc("TCP port of the HTTP API"))
    external_url: str = attrs.field(
        default="",
        metadata=_doc(
            "base URL under which pods reach this process (payload and result URLs); "
            "empty = http://<host>:<port>, with 127.0.0.1 for a wildcard host"
        ),
    )
    max_payload_size: int = attrs.field(
        default=DEFAULT_MAX_PAYLOAD_SIZE,
        metadata=_doc("largest accepted request body; bigger bodies get 413", "size"),
    )
    max_body_memory: int = attrs.field(
        default=512 * 1024 * 1024,
        metadata=_doc(
            "request bodies held in memory at once, all requests together; a body that does "
            "not fit now gets 429 with Retry-After",
            "size",
        ),
    )
    max_batch_runs: int = attrs.field(
        default=1000,
        metadata=_doc("most runs one POST /algorithm/batch/{alg} request may carry (else 413)"),
    )
    max_idempotency_key: int = attrs.field(
        default=255,
        metadata=_doc(
            "longest Idempotency-Key header, in characters, the latest API's run and batch "
            "routes accept (else 400)"
        ),
    )
    keep_alive_timeout: float = attrs.field(
        default=75.0,
        metadata=_doc(
            "how long an idle keep-alive connection stays open; longer than clients keep "
            "theirs (httpx 5 s, aiohttp 15 s), so a client never sends a request on a "
            "connection the server is closing that moment",
            "duration",
        ),
    )
    access_log: bool = attrs.field(
        default=True,
        metadata=_doc(
            "log one line per request (method, path, status, duration, run, client) at INFO "
            "on the nexusd.access logger"
        ),
    )


@attrs.frozen
class NodeSettings:
    host_name: str = attrs.field(
        default="",
        metadata=_doc(
            "this process's name: received_by_host of the runs it accepts, and its heartbeat; "
            "empty = the host name (the pod name in Kubernetes)"
        ),
    )
    heartbeat_interval: float = attrs.field(
        default=10.0,
        metadata=_doc("how often a scheduler or maintainer records that it is alive", "duration"),
    )


@attrs.frozen
class DataSettings:
    dir: Path = attrs.field(
        default=Path(DEFAULT_DATA_DIR),
        metadata=_doc("directory for the SQLite store, payloads, results and the URL key", "path"),
    )


@attrs.frozen
class StoreSettings:
    kind: str = attrs.field(
        default="sqlite",
        metadata=_doc(
            'checkpoint store: "sqlite" (one machine), "postgres" (shared by several '
            'schedulers and receivers) or "memory" (tests)',
            "sqlite|postgres|memory",
        ),
    )
    path: Path | None = attrs.field(
        default=None, metadata=_doc("SQLite file; empty = <data.dir>/checkpoints.sqlite3", "path")
    )
    synchronous: str = attrs.field(
        default="FULL",
        metadata=_doc("SQLite synchronous mode: FULL (fsync each commit) or NORMAL", "FULL|NORMAL"),
    )
    batch_size: int = attrs.field(
        default=256, metadata=_doc("most writes the SQLite writer commits in one transaction")
    )
    commit_timeout: float = attrs.field(
        default=30.0,
        metadata=_doc(
            "longest intake waits, shielded from client disconnects, for the store to confirm "
            "a new run; past it the client gets 503 and the run may still start",
            "duration",
        ),
    )


@attrs.frozen
class PostgresSettings:
    dsn: str = attrs.field(
        default="",
        metadata=_doc(
            "libpq connection string or URL, e.g. postgresql://nexus@db:5432/nexus; the "
            "password can stay out of it (PGPASSWORD, ~/.pgpass)"
        ),
    )
    pool_min: int = attrs.field(default=2, metadata=_doc("connections kept open"))
    pool_max: int = attrs.field(
        default=10, metadata=_doc("most connections, and most concurrent store calls")
    )


@attrs.frozen
class S3Settings:
    endpoint: str = attrs.field(
        default="",
        metadata=_doc("S3 endpoint URL; empty = AWS, https://s3.<region>.amazonaws.com"),
    )
    bucket: str = attrs.field(default="", metadata=_doc("bucket for payloads and results"))
    prefix: str = attrs.field(default="nexus", metadata=_doc("key prefix inside the bucket"))
    region: str = attrs.field(default="us-east-1", metadata=_doc("signing region"))
    path_style: bool = attrs.field(
        default=True,
        metadata=_doc("path-style URLs (endpoint/bucket/key) rather than virtual-host style"),
    )
    access_key_id: str = attrs.field(
        default="",
        metadata=_doc(
            "static credentials; empty = the AWS chain (env, profile, web identity for IRSA)"
        ),
    )
    secret_access_key: str = attrs.field(
        default="", metadata=_doc("static secret key, with access_key_id")
    )


@attrs.frozen
class PayloadSettings:
    kind: str = attrs.field(
        default="filesystem",
        metadata=_doc(
            'payload store: "filesystem" (served by nexusd at /data/v1) or "s3"', "filesystem|s3"
        ),
    )
    dir: Path | None = attrs.field(
        default=None, metadata=_doc("payload and result files; empty = <data.dir>/blobs", "path")
    )
    sign_key_file: Path | None = attrs.field(
        default=None,
        metadata=_doc(
            "HMAC key for signed URLs (made if missing); empty = <data.dir>/url.key", "path"
        ),
    )
    valid_for: float = attrs.field(
        default=DEFAULT_PAYLOAD_VALID_FOR,
        metadata=_doc("lifetime of payload URLs when a run gives no payloadValidFor", "duration"),
    )
    max_valid_for: float = attrs.field(
        default=DEFAULT_MAX_VALID_FOR,
        metadata=_doc("cap on payloadValidFor and on result URL lifetimes", "duration"),
    )
    result_valid_for: float = attrs.field(
        default=DEFAULT_PAYLOAD_VALID_FOR,
        metadata=_doc("lifetime of result upload and download URLs", "duration"),
    )
    inline_max: int = attrs.field(
        default=DEFAULT_INLINE_MAX,
        metadata=_doc(
            'with kind = "filesystem": payloads up to this size are kept in the checkpoint '
            "store, in the run's own write (one durable write per run); larger ones are files",
            "size",
        ),
    )


@attrs.frozen
class KubeSettings:
    kubeconfig: Path | None = attrs.field(
        default=None,
        metadata=_doc("kubeconfig of the cluster; empty = in-cluster, else $KUBECONFIG", "path"),
    )
    context: str = attrs.field(default="", metadata=_doc("kubeconfig context; empty = current"))
    shard_name: str = attrs.field(
        default="",
        metadata=_doc(
            "shard name workgroups refer to (spec.cluster); empty = kubeconfig file name before "
            'its first dot, or "standalone" in-cluster'
        ),
    )
    shards_dir: Path | None = attrs.field(
        default=None,
        metadata=_doc(
            "directory of <shard>.kubeconfig files: more clusters runs can go to, each "
            "named after its file (the part before the first dot)",
            "path",
        ),
    )
    runtime_namespace: str = attrs.field(
        default=DEFAULT_RUNTIME_NAMESPACE,
        metadata=_doc("namespace holding templates, workgroups and the runs' Jobs"),
    )
    request_timeout: float = attrs.field(
        default=30.0, metadata=_doc("timeout of one Kubernetes API call", "duration")
    )
    resync: float = attrs.field(
        default=30.0, metadata=_doc("template/workgroup cache full re-list period", "duration")
    )
    check_node_capacity: bool = attrs.field(
        default=True,
        metadata=_doc(
            "refuse (400) a run whose pod fits no node its workgroup can use (needs list/watch "
            "on nodes; workgroups with capabilities.autoscaled are never refused)"
        ),
    )


@attrs.frozen
class SubmissionSettings:
    queue_capacity: int = attrs.field(
        default=DEFAULT_QUEUE_CAPACITY,
        metadata=_doc("new runs waiting for submission, per shard; when full, new runs get 429"),
    )
    workers: int = attrs.field(
        default=DEFAULT_WORKERS, metadata=_doc("submission workers per shard")
    )
    rate: float = attrs.field(
        default=DEFAULT_SUBMIT_RATE,
        metadata=_doc(
            "most mutating Kubernetes calls per second per shard; a 429 cuts the rate "
            "(throttle_decrease), successes bring it back (throttle_recovery)"
        ),
    )
    burst: int = attrs.field(default=DEFAULT_SUBMIT_BURST, metadata=_doc("token bucket size"))
    budget: str = attrs.field(
        default="shared",
        metadata=_doc(
            '"shared": rate and burst are one budget per shard for every process sharing the '
            'checkpoint store (one store write per batch of calls); "local": each process '
            "has its own",
            "shared|local",
        ),
    )
    max_in_flight: int = attrs.field(
        default=16, metadata=_doc("most mutating Kubernetes calls in flight per shard")
    )
    throttle_decrease: float = attrs.field(
        default=0.7, metadata=_doc("factor the shard's rate is multiplied by on a 429")
    )
    throttle_recovery: float = attrs.field(
        default=5.0,
        metadata=_doc("calls per second the shard's rate regains per second of successes"),
    )
    retry_base_delay: float = attrs.field(
        default=0.1, metadata=_doc("first back-off after a transient API error", "duration")
    )
    retry_max_delay: float = attrs.field(
        default=30.0, metadata=_doc("longest back-off between submission retries", "duration")
    )


@attrs.frozen
class MaintainerSettings:
    interval: float = attrs.field(
        default=30.0,
        metadata=_doc(
            "full reconcile pass over every non-terminal run (watches act sooner)", "duration"
        ),
    )
    rules: Path | None = attrs.field(
        default=None,
        metadata=_doc(
            "TOML classification table; empty = the built-in one (config/maintainer-rules.toml)",
            "path",
        ),
    )
    scheduler_timeout: float = attrs.field(
        default=60.0,
        metadata=_doc(
            "a scheduler silent this long is dead: its BUFFERED runs are resubmitted",
            "duration",
        ),
    )
    buffered_timeout: float = attrs.field(
        default=300.0,
        metadata=_doc(
            "a run BUFFERED this long is resubmitted even if its scheduler is alive", "duration"
        ),
    )
    gc_interval: float = attrs.field(
        default=300.0, metadata=_doc("garbage collection period", "duration")
    )
    once_timeout: float = attrs.field(
        default=600.0,
        metadata=_doc("longest a `maintainer --once` pass may take before it fails", "duration"),
    )
    checkpoint_retention: float = attrs.field(
        default=30 * 24 * 3600.0,
        metadata=_doc("finished runs are deleted this long after they ended", "duration"),
    )
    payload_retention: float = attrs.field(
        default=7 * 24 * 3600.0,
        metadata=_doc(
            "payloads and results are deleted this long after they were written", "duration"
        ),
    )
    job_ttl_slack: float = attrs.field(
        default=60.0,
        metadata=_doc(
            "finished Jobs still present this long after their ttlSecondsAfterFinished are deleted",
            "duration",
        ),
    )
    failed_job_ttl: float = attrs.field(
        default=300.0,
        metadata=_doc(
            "a failed Job (its pods and logs, for kubectl logs) is deleted this long after it "
            "failed, once its run is terminal; as long as Kubernetes keeps a completed Job",
            "duration",
        ),
    )
    queue_capacity: int = attrs.field(
        default=100_000,
        metadata=_doc(
            "most run keys waiting to be reconciled (and most grace timers); beyond it wake-ups "
            "are dropped and the next full pass (interval) catches up"
        ),
    )
    wake_delay: float = attrs.field(
        default=1.0,
        metadata=_doc(
            "how long after a change to a run's Job, pods or Events it is reconciled: the "
            "changes of that time are one reconcile (a pod's start is about ten watch events)",
            "duration",
        ),
    )


@attrs.frozen
class ShutdownSettings:
    grace: float = attrs.field(
        default=10.0,
        metadata=_doc("time to drain work after SIGTERM before cancelling it", "duration"),
    )


@attrs.frozen
class LoggingSettings:
    level: str = attrs.field(
        default="INFO", metadata=_doc("DEBUG, INFO, WARNING or ERROR", "DEBUG|INFO|WARNING|ERROR")
    )
    format: str = attrs.field(default="plain", metadata=_doc("plain or json", "plain|json"))


@attrs.frozen
class DevSettings:
    kubelet: str = attrs.field(
        default="local",
        metadata=_doc(
            "embedded cluster kubelet: local (real processes) or scripted", "local|scripted"
        ),
    )
    manifests: Path | None = attrs.field(
        default=None, metadata=_doc("extra template/workgroup YAML files applied at start", "path")
    )
    shards: int = attrs.field(
        default=1,
        metadata=_doc(
            "embedded clusters: 1 = one cluster that is the controller and the only shard; "
            "N > 1 = a controller cluster and shards shard-1..shard-N, kept in step by the "
            "configuration controller"
        ),
    )


@attrs.frozen
class ControllerSettings:
    """`nexusd controller`: templates, workgroups and what they reference, kept in every
    shard of `kube.shards_dir` (the runtime namespace, `kube.runtime_namespace`, is the one
    watched and mirrored, as upstream's `controller-namespace`)."""

    alias: str = attrs.field(
        default="controller-cluster",
        metadata=_doc(
            "this controller cluster's name: the configuration-owner label on every shard copy"
        ),
    )
    shards_rescan: float = attrs.field(
        default=10.0,
        metadata=_doc(
            "how often the shards directory is read again (shards added, removed, changed)",
            "duration",
        ),
    )
    backoff_base: float = attrs.field(
        default=0.03,
        metadata=_doc("first retry delay of an object that failed to sync", "duration"),
    )
    backoff_max: float = attrs.field(
        default=5.0,
        metadata=_doc("longest retry delay of an object that keeps failing", "duration"),
    )
    sweep_interval: float = attrs.field(
        default=60.0,
        metadata=_doc(
            "how often shard objects labelled with this alias that nothing owns are removed",
            "duration",
        ),
    )


@attrs.frozen
class ElectionSettings:
    """Lease-based leader election: several `nexusd controller` replicas, one active."""

    lease_name: str = attrs.field(
        default="nexusd-controller",
        metadata=_doc("Lease (coordination.k8s.io/v1) in kube.runtime_namespace"),
    )
    identity: str = attrs.field(
        default="",
        metadata=_doc("this replica's name in the Lease; empty = host name + a random suffix"),
    )
    lease_duration: float = attrs.field(
        default=15.0,
        metadata=_doc("how long a lease not renewed keeps others waiting", "duration"),
    )
    renew_deadline: float = attrs.field(
        default=10.0,
        metadata=_doc("the leader stops leading when it could not renew for this long", "duration"),
    )
    retry_period: float = attrs.field(
        default=2.0, metadata=_doc("how often candidates try and the leader renews", "duration")
    )


@attrs.frozen
class AuthSettings:
    """Bearer tokens for the public API (off unless `token_file` or `jwks` is set) and the
    runs' completion tokens (on unless `completion_tokens` is false). See README "Access
    control"."""

    token_file: Path | None = attrs.field(
        default=None,
        metadata=_doc(
            "static bearer tokens, one per line as `<token> [name]` (# comments); re-read "
            "when it changes; empty = none",
            "path",
        ),
    )
    jwks: str = attrs.field(
        default="",
        metadata=_doc(
            "JWKS of the OIDC issuer whose JWTs are accepted: an https:// URL or a file; "
            "empty = no JWTs"
        ),
    )
    issuer: str = attrs.field(
        default="", metadata=_doc("required `iss` of accepted JWTs (required with jwks)")
    )
    audience: str = attrs.field(
        default="", metadata=_doc("required `aud` of accepted JWTs (required with jwks)")
    )
    algorithms: str = attrs.field(
        default="RS256,ES256",
        metadata=_doc(
            "JWT signature algorithms accepted, comma-separated (asymmetric only: RS*, PS*, "
            "ES*, EdDSA)"
        ),
    )
    clock_skew: float = attrs.field(
        default=30.0,
        metadata=_doc("leeway on a JWT's exp, nbf and iat for clocks that disagree", "duration"),
    )
    required_scope: str = attrs.field(
        default="",
        metadata=_doc(
            "a scope every JWT must carry (`scope` or `scp` claim), else 403; empty = any JWT"
        ),
    )
    jwks_refresh: float = attrs.field(
        default=300.0, metadata=_doc("how often the JWKS is fetched (or read) again", "duration")
    )
    jwks_min_refresh: float = attrs.field(
        default=30.0,
        metadata=_doc(
            "shortest time between two JWKS fetches that a token with an unknown key `kid` "
            "triggers (keys rotated at the issuer)",
            "duration",
        ),
    )
    jwks_timeout: float = attrs.field(
        default=10.0, metadata=_doc("timeout of one JWKS fetch", "duration")
    )
    completion_tokens: bool = attrs.field(
        default=True,
        metadata=_doc(
            "put each run's completion token in its pod's receiver URL, and accept a "
            "completion only with it (403 otherwise); false for receivers fronted by "
            "something else. Schedulers and receivers must agree"
        ),
    )
    completion_key_file: Path | None = attrs.field(
        default=None,
        metadata=_doc(
            "HMAC key of the completion tokens, shared by schedulers and receivers (made if "
            "missing); empty = the URL key, payloads.sign_key_file",
            "path",
        ),
    )


@attrs.frozen
class ReceiverSettings:
    url: str = attrs.field(
        default="",
        metadata=_doc(
            "base URL the runs' pods report completions to, given them as "
            "NEXUS__CLIENT__RECEIVER with the run's token path appended (replacing a "
            "template's own value); empty = in nexusd dev the dev process, elsewhere each "
            "template's own NEXUS__CLIENT__RECEIVER with the token appended"
        ),
    )


@attrs.frozen
class WarmSettings:
    lease_duration: float = attrs.field(
        default=30.0,
        metadata=_doc(
            "how long a worker's lease on a run lasts; workers renew it while the run works, "
            "and a run whose lease ran out goes back to the queue as its next attempt",
            "duration",
        ),
    )
    max_wait: float = attrs.field(
        default=20.0,
        metadata=_doc(
            "longest a worker's lease or report request is held open (long poll)", "duration"
        ),
    )
    max_lease_runs: int = attrs.field(
        default=256, metadata=_doc("most runs one lease request hands out")
    )
    reap_interval: float = attrs.field(
        default=2.0,
        metadata=_doc("how often the scheduler looks for expired leases", "duration"),
    )
    max_attempts: int = attrs.field(
        default=3,
        metadata=_doc("leases of one run that may be lost (worker killed) before the run fails"),
    )
    orphan_after: float = attrs.field(
        default=2.0,
        metadata=_doc(
            "a waiting warm run not touched for this long is taken from the store into this "
            "scheduler's pool queue when that queue is empty: runs in no queue (requeued by "
            "the maintainer, a dead scheduler's), and another scheduler's backlog (work "
            "stealing; a run leased twice is leased once, the store decides)",
            "duration",
        ),
    )
    scan_interval: float = attrs.field(
        default=1.0,
        metadata=_doc(
            "how often a pool with an empty queue looks for such runs in the store", "duration"
        ),
    )
    scheduler_url: str = attrs.field(
        default="",
        metadata=_doc(
            "URL the pool workers reach this scheduler at (NEXUS__WORKER__SCHEDULER); empty = "
            "receiver.url, and in nexusd dev the dev process"
        ),
    )
    scale_interval: float = attrs.field(
        default=2.0,
        metadata=_doc(
            "how often the scheduler sizes each warm pool's Deployment (and creates, replaces "
            "or deletes it as its template changes)",
            "duration",
        ),
    )
    scale_up_age: float = attrs.field(
        default=2.0,
        metadata=_doc(
            "a pool whose oldest waiting run has waited longer than this gets one worker more "
            "than its demand needs (up to maxWorkers)",
            "duration",
        ),
    )


@attrs.frozen
class WorkerSettings:
    """`nexusd worker`, in a warm pool's pods (the scheduler sets NEXUS__WORKER__* there)."""

    scheduler: str = attrs.field(
        default="",
        metadata=_doc(
            "URL of the scheduler to lease runs from (required), e.g. http://nexusd:8080"
        ),
    )
    algorithm: str = attrs.field(
        default="", metadata=_doc("the warm template whose runs this worker serves (required)")
    )
    name: str = attrs.field(
        default="",
        metadata=_doc("this worker's name in its leases; empty = the host name (the pod name)"),
    )
    token: str = attrs.field(
        default="",
        metadata=_doc(
            "bearer token of the scheduler's worker API (the pool token its pods get); empty = none"
        ),
    )
    concurrency: int = attrs.field(default=1, metadata=_doc("runs this worker holds at once"))
    runs: int = attrs.field(
        default=0,
        metadata=_doc(
            "runs after which the worker finishes, reports and exits 0, so its container is "
            "restarted fresh (recycled); 0 = never"
        ),
    )
    handler: str = attrs.field(
        default="",
        metadata=_doc(
            "module:function called in-process for each run (nexusd.warm.serve); empty = the "
            "command after -- runs once per run"
        ),
    )
    max_wait: float = attrs.field(
        default=20.0,
        metadata=_doc(
            "longest a lease request waits for a run (long poll; the scheduler caps it at its "
            "warm.max_wait)",
            "duration",
        ),
    )
    request_timeout: float = attrs.field(
        default=10.0,
        metadata=_doc(
            "timeout of one request to the scheduler beyond its long poll's wait, and of a "
            "payload download or result upload; also how long the last report is retried "
            "when the worker is stopped",
            "duration",
        ),
    )
    retry_base_delay: float = attrs.field(
        default=0.1,
        metadata=_doc("first back-off after the scheduler could not be reached", "duration"),
    )
    retry_max_delay: float = attrs.field(
        default=10.0,
        metadata=_doc(
            "longest back-off between retries; requests are retried until they succeed",
            "duration",
        ),
    )
    report_batch: int = attrs.field(
        default=1000, metadata=_doc("most finished or released runs one report carries")
    )
    kill_grace: float = attrs.field(
        default=10.0,
        metadata=_doc(
            "a cancelled or lost run's process group gets SIGTERM, then SIGKILL after this long",
            "duration",
        ),
    )


@attrs.frozen
class Settings:
    http: HttpSettings = HttpSettings()
    node: NodeSettings = NodeSettings()
    data: DataSettings = DataSettings()
    store: StoreSettings = StoreSettings()
    postgres: PostgresSettings = PostgresSettings()
    payloads: PayloadSettings = PayloadSettings()
    s3: S3Settings = S3Settings()
    kube: KubeSettings = KubeSettings()
    submission: SubmissionSettings = SubmissionSettings()
    maintainer: MaintainerSettings = MaintainerSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    logging: LoggingSettings = LoggingSettings()
    dev: DevSettings = DevSettings()
    controller: ControllerSettings = ControllerSettings()
    election: ElectionSettings = ElectionSettings()
    auth: AuthSettings = AuthSettings()
    receiver: ReceiverSettings = ReceiverSettings()
    warm: WarmSettings = WarmSettings()
    worker: WorkerSettings = WorkerSettings()

    # Derived values, so no caller re-implements the "empty = ..." rules.
    @property
    def host_name(self) -> str:
        return self.node.host_name or socket.gethostname()

    @property
    def sqlite_path(self) -> Path:
        return self.store.path or self.data.dir / "checkpoints.sqlite3"

    @property
    def blob_dir(self) -> Path:
        return self.payloads.dir or self.data.dir / "blobs"

    @property
    def sign_key_file(self) -> Path:
        return self.payloads.sign_key_file or self.data.dir / "url.key"

    @property
    def completion_key_file(self) -> Path:
        return self.auth.completion_key_file or self.sign_key_file


_CHOICES = re.compile(r"^[A-Za-z]+(\|[A-Za-z]+)*$")
_NUMBER = re.compile(r"^\s*\d+(\.\d+)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|k|M|G|T)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def _sections() -> dict[str, type[Any]]:
    return {field.name: type(field.default) for field in attrs.fields(Settings)}


def _convert(key: str, field: attrs.Attribute[Any], raw: Any) -> Any:
    """Turn a TOML or environment value into the field's type, or raise ConfigError naming key."""
    kind = field.metadata.get("kind", "")
    try:
        if kind == "duration":
            if isinstance(raw, bool):
                raise ValueError("expected a duration")
            if isinstance(raw, int | float) or _NUMBER.match(str(raw)):
                value: Any = float(raw)
            else:
                value = parse_go_duration(str(raw)).total_seconds()
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if kind == "size":
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            match = _SIZE.match(str(raw))
            if not match:
                raise ValueError("expected bytes or a quantity like 64Mi")
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
        if kind == "path":
            return Path(str(raw)) if str(raw) else None
        if _CHOICES.match(kind):
            choices = kind.split("|")
            if str(raw) not in choices:
                raise ValueError(f"expected one of {', '.join(choices)}")
            return str(raw)
        if field.type in (int, "int"):
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if field.type in (float, "float"):
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            return float(raw)
        if field.type in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "1", "yes"):
                return True
            if str(raw).lower() in ("false", "0", "no"):
                return False
            raise ValueError("expected true or false")
        return str(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}: invalid value {raw!r}: {exc}") from None


def _apply(
    values: dict[str, dict[str, Any]], section: str, key: str, raw: Any, origin: str
) -> None:
    sections = _sections()
    if section not in sections:
        raise ConfigError(f"{origin}: unknown section {section!r}")
    fields = {field.name: field for field in attrs.fields(sections[section])}
    if key not in fields:
        raise ConfigError(f"{origin}: unknown key {section}.{key}")
    values.setdefault(section, {})[key] = _convert(origin, fields[key], raw)


def load_settings(
    *,
    toml_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings: defaults < `toml_path` < `environ` NEXUS__ vars < `overrides`.

    `defaults` (a mode's own defaults) and `overrides` (the CLI's explicit flags) map
    "section.key" to a value.
    """
    values: dict[str, dict[str, Any]] = {}
    for dotted, raw in (defaults or {}).items():
        section, key = dotted.split(".", 1)
        _apply(values, section, key, raw, f"default {dotted}")
    if toml_path is not None:
        try:
            document = tomllib.loads(toml_path.read_text())
        except OSError as exc:
            raise ConfigError(f"--config {toml_path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {toml_path}: not valid TOML: {exc}") from None
        for section, table in document.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{toml_path}: {section} must be a [section] table")
            for key, raw in table.items():
                _apply(values, section, key, raw, f"{toml_path}: {section}.{key}")
    for name, raw in sorted((environ if environ is not None else os.environ).items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        if len(parts) != 2:
            raise ConfigError(f"{name}: expected NEXUS__SECTION__KEY")
        _apply(values, parts[0].lower(), parts[1].lower(), raw, name)
    for dotted, raw in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        _apply(values, section, key, raw, f"--{key.replace('_', '-')}")
    sections = _sections()
    try:
        return Settings(**{name: sections[name](**kv) for name, kv in values.items()})
    except (TypeError, ValueError) as exc:  # pragma: no cover - conversions guard this
        raise ConfigError(str(exc)) from None


def describe() -> list[tuple[str, str, Any, str, str]]:
    """(section, key, default, env name, doc) for every setting, for docs and tests."""
    rows = []
    for section, cls in _sections().items():
        for field in attrs.fields(cls):
            env = f"{ENV_PREFIX}{section.upper()}__{field.name.upper()}"
            rows.append((section, field.name, field.default, env, field.metadata.get("doc", "")))
    return rows
