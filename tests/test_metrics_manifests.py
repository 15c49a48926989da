"""Every Deployment in config/kubernetes tells Prometheus where its /metrics are.

Pure file checks: the pod template's scrape annotations name the container port called
`http` and the path nexusd serves its metrics on (tests/api/test_metrics.py scrapes it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MANIFESTS = Path(__file__).resolve().parent.parent / "config" / "kubernetes"


def deployments() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(MANIFESTS.rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "Deployment"
    ]


def test_every_deployment_is_scraped_on_its_http_port() -> None:
    found = deployments()
    assert {d["metadata"]["name"] for d in found} == {
        "nexusd-scheduler",
        "nexusd-receiver",
        "nexusd-controller",
        "nexusd-maintainer",
    }
    for deployment in found:
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        (http,) = [port for port in container["ports"] if port["name"] == "http"]
        assert pod["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(http["containerPort"]),
            "prometheus.io/path": "/metrics",
        }, deployment["metadata"]["name"]
