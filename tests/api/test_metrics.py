"""`GET /metrics` of real processes after real work, and the Grafana dashboard's metric names.

Real: `nexusd dev --kubelet scripted` and `nexusd receiver` started as processes of their own
(fresh registries, so every count is exact), scraped over HTTP on loopback; SQLite, payload
files, the embedded cluster over HTTP; the test posts the completion an algorithm's SDK would.
The queue, throttle and controller gauges are read from in-process `nexusd dev`s (the gauges
are those of the latest submitter or shard of a name). Nothing is faked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import promql_parser
import trio
from prometheus_client.parser import text_string_to_metric_families

from nexusd.devcluster import ANNOTATION_DURATION, ANNOTATION_EXIT_CODE
from tests.conftest import template, wait_for_stage, write_manifests
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    import httpx

    from tests.conftest import StartNexus

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "nexusd.json"
#: the sample names each family type exposes
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "untyped": ("",),
}

Sample = tuple[str, dict[str, str], float]


async def scrape(http: httpx.AsyncClient, url: str) -> list[Sample]:
    response = await http.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for n, ls, v in samples if n == name and labels.items() <= ls.items())


def exposed_families(text: str) -> dict[str, set[str]]:
    """Every family the exposition declares, with the sample names it may have (whether or
    not it has samples yet)."""
    return {
        family.name: {family.name + suffix for suffix in SUFFIXES[family.type]}
        for family in text_string_to_metric_families(text)
    }


async def submit(http: httpx.AsyncClient, url: str, algorithm: str) -> httpx.Response:
    return await http.post(f"{url}/algorithm/v1/run/{algorithm}", json={"algorithmParameters": {}})


async def test_a_dev_process_counts_what_its_runs_went_through(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    manifests = write_manifests(
        tmp_path / "manifests",
        template("slow", annotations={ANNOTATION_DURATION: "120"}),
        template(
            "fatal-42",
            annotations={ANNOTATION_EXIT_CODE: "42"},
            errorHandlingBehaviour={"fatalExitCodes": [42], "transientExitCodes": []},
        ),
    )
    env = {
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__HTTP__HOST": "127.0.0.1",
        "NEXUS__DEV__MANIFESTS": str(manifests),
        "NEXUS__LOGGING__LEVEL": "WARNING",
        # The test reports as the algorithm would, without the token its pod is given.
        "NEXUS__AUTH__COMPLETION_TOKENS": "false",
    }
    async with nexusd_process(
        "dev", "--kubelet", "scripted", env=env, cwd=tmp_path, log=tmp_path / "dev.log"
    ) as nexus:
        url = nexus.url
        slow = (await submit(http, url, "slow")).json()["requestId"]
        await wait_for_stage(http, url, "slow", slow, "RUNNING")
        report = {"resultUri": "https://example.test/result", "errorCause": "", "errorDetails": ""}
        complete = f"{url}/algorithm/v1/complete/slow/requests/{slow}"
        assert (await http.post(complete, json=report)).status_code == 202
        again = await http.post(complete, json=report)  # a retrying SDK: changes nothing
        assert again.status_code < 500, again.text
        fatal = (await submit(http, url, "fatal-42")).json()["requestId"]
        await wait_for_stage(http, url, "fatal-42", fatal, "FAILED")
        samples = await scrape(http, url)

    assert value(samples, "nexusd_runs_accepted_total", algorithm="slow") == 1
    assert value(samples, "nexusd_runs_accepted_total", algorithm="fatal-42") == 1
    assert value(samples, "nexusd_runs_accepted_total") == 2
    transitions = "nexusd_run_transitions_total"
    assert value(samples, transitions, from_stage="BUFFERED", to_stage="RUNNING") == 2
    assert value(samples, transitions, from_stage="unknown", to_stage="COMPLETED") == 1
    assert value(samples, transitions, from_stage="RUNNING", to_stage="FAILED") == 1
    assert value(samples, "nexusd_completions_total", outcome="completed") == 1
    assert value(samples, "nexusd_completions_total", outcome="ignored") == 1
    verdicts = "nexusd_maintainer_verdicts_total"
    assert value(samples, verdicts, rule="job-pod-failure-policy", stage="FAILED") == 1
    assert value(samples, "nexusd_submission_latency_seconds_count", shard="dev") == 2
    assert 0 < value(samples, "nexusd_submission_latency_seconds_sum", shard="dev") < 30
    assert value(samples, "nexusd_submissions_total", shard="dev", outcome="created") == 2
    assert value(samples, "nexusd_kube_requests_total", verb="create", resource="jobs") == 2
    assert (
        value(samples, "nexusd_kube_requests_total", verb="create", resource="jobs", code="201")
        == 2
    )
    assert value(samples, "nexusd_kube_requests_total", verb="watch", resource="pods") >= 1
    store = "nexusd_store_operation_duration_seconds_count"
    assert value(samples, store, operation="create_many") == 2
    assert value(samples, store, operation="transition") >= 4
    assert value(samples, "nexusd_queue_depth", shard="dev") == 0
    assert value(samples, "nexusd_queue_capacity", shard="dev") > 0
    assert value(samples, "nexusd_throttle_rate_per_second", shard="dev") > 0
    assert value(samples, "nexusd_throttled_total", shard="dev") == 0
    assert value(samples, "process_cpu_seconds_total") > 0
    # Never a request id as a label.
    for name, labels, _ in samples:
        assert not {slow, fatal} & set(labels.values()), (name, labels)


async def test_a_receiver_process_serves_its_metrics(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    env = {
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__HTTP__HOST": "127.0.0.1",
        "NEXUS__AUTH__COMPLETION_TOKENS": "false",  # to reach the store without a run's token
    }
    async with nexusd_process("receiver", env=env, cwd=tmp_path, log=tmp_path / "r.log") as r:
        report = {"resultUri": "", "errorCause": "", "errorDetails": ""}
        unknown = await http.post(f"{r.url}/algorithm/v1/complete/hello/requests/nope", json=report)
        assert unknown.status_code == 404, unknown.text
        samples = await scrape(http, r.url)
    store = "nexusd_store_operation_duration_seconds_count"
    assert value(samples, store, operation="transition") == 1
    assert value(samples, "nexusd_completions_total") == 0
    assert value(samples, "nexusd_queue_depth") == 0  # a receiver has no queues
    assert value(samples, "nexusd_kube_requests_total") == 0  # nor a cluster


async def test_a_full_queue_shows_in_its_gauges_and_429_counter(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    # Two tokens at start, then one per 100 s: the scaler creates the hello-warm pool's
    # Deployment with one, the first run is submitted with the other, the only worker waits
    # for a token with the second, the third fills the queue, the fourth is refused.
    nexus = await start_nexus(
        **{
            "submission.rate": 0.01,
            "submission.burst": 2,
            "submission.queue_capacity": 1,
            "submission.workers": 1,
            "submission.budget": "local",
        }
    )
    before = await scrape(http, nexus.url)
    first = [(await submit(http, nexus.url, "hello")).status_code for _ in range(2)]
    with trio.fail_after(10):
        while value(await scrape(http, nexus.url), "nexusd_throttle_waiting", shard="dev") < 1:
            await trio.sleep(0.02)
    then = [(await submit(http, nexus.url, "hello")).status_code for _ in range(2)]
    assert (first, then) == ([202, 202], [202, 429])
    after = await scrape(http, nexus.url)
    assert value(after, "nexusd_throttle_waiting", shard="dev") == 1
    full = "nexusd_queue_full_total"
    assert value(after, full, shard="dev") - value(before, full, shard="dev") == 1
    assert value(after, "nexusd_queue_depth", shard="dev", lane="normal") == 1
    assert value(after, "nexusd_queue_depth", shard="dev", lane="priority") == 0
    # `nexusd dev` has two queues per shard: the scheduler's and the maintainer's (recovery).
    assert value(after, "nexusd_queue_capacity", shard="dev") == 2
    assert value(after, "nexusd_queue_oldest_age_seconds", shard="dev") > 0
    assert value(after, "nexusd_throttle_ceiling_per_second", shard="dev") == 0.01


async def test_the_controller_reports_each_shards_sync_state(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    nexus = await start_nexus(**{"dev.shards": 2})  # a controller cluster and two shards
    with trio.fail_after(30):
        while True:
            samples = await scrape(http, nexus.url)
            synced = {
                labels["shard"]: v
                for name, labels, v in samples
                if name == "nexusd_sync_objects" and labels["state"] == "synced"
            }
            if len(synced) == 2 and all(synced.values()):
                break
            await trio.sleep(0.05)
    for shard in synced:
        assert value(samples, "nexusd_sync_shard_reachable", shard=shard) == 1
        assert value(samples, "nexusd_sync_objects", shard=shard, state="failed") == 0
        assert value(samples, "nexusd_sync_last_success_timestamp_seconds", shard=shard) > 0


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def metric_names(node: Any) -> set[str]:
    """The metric names a parsed PromQL expression selects."""
    if isinstance(node, promql_parser.VectorSelector):
        return {node.name} if node.name else set()
    children = []
    for attribute in ("expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None:
            children.append(child)
    children += list(getattr(node, "args", None) or [])
    return set().union(*map(metric_names, children)) if children else set()


async def test_every_dashboard_panel_uses_only_exposed_metrics(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    nexus = await start_nexus()
    families = exposed_families((await http.get(f"{nexus.url}/metrics")).text)
    exposed = set().union(*families.values())
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    used: set[str] = set()
    for expr in expressions:
        # Grafana's interval variables are not PromQL; any duration stands in for them.
        parsed = promql_parser.parse(expr.replace("$__rate_interval", "5m"))
        names = metric_names(parsed)
        assert names, f"no metric in {expr!r}"
        assert names <= exposed, f"{expr!r} uses {sorted(names - exposed)}, not exposed"
        used |= names
    readme = (ROOT / "README.md").read_text()
    for family, names in families.items():
        if family.startswith("nexusd_"):
            assert names & used, f"no panel shows {family}"
            assert re.search(rf"`{family}(_total)?`", readme), f"README misses {family}"
