"""Apply manifests to a cluster, like `kubectl apply` for the kinds nexusd installs.

`nexusd dev` uses this to install the CRDs, the bundled `hello` algorithm and the user's
`--manifests` directory (templates, workgroups and the Secrets and ConfigMaps they reference),
through the same HTTP client as everything else.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import yaml

from nexusd.core.errors import ConfigError, KubeConflict
from nexusd.kube.client import (
    CONFIGMAPS,
    CRDS,
    SECRETS,
    TEMPLATES,
    WORKGROUPS,
    KubeClient,
    Resource,
)

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

KINDS: dict[str, Resource] = {
    "CustomResourceDefinition": CRDS,
    "NexusAlgorithmTemplate": TEMPLATES,
    "NexusAlgorithmWorkgroup": WORKGROUPS,
    # what templates reference (env, file mounts); `nexusd controller` copies them to shards
    "Secret": SECRETS,
    "ConfigMap": CONFIGMAPS,
}


def parse_documents(text: str, *, source: str) -> list[dict[str, Any]]:
    """The YAML documents of `text`, each checked to be an applicable kind with a name."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    for document in documents:
        kind = document.get("kind") if isinstance(document, dict) else None
        if kind not in KINDS:
            raise ConfigError(
                f"{source}: cannot apply kind {kind!r}; expected one of {', '.join(KINDS)}"
            )
        if not (document.get("metadata") or {}).get("name"):
            raise ConfigError(f"{source}: a {kind} without metadata.name")
    return documents


def read_directory(directory: Path) -> list[dict[str, Any]]:
    """Every document of every `*.yaml` / `*.yml` file in `directory`, in file-name order."""
    if not directory.is_dir():
        raise ConfigError(f"dev.manifests: {directory} is not a directory")
    documents = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        documents.extend(parse_documents(path.read_text(), source=str(path)))
    return documents


async def apply(client: KubeClient, document: dict[str, Any], *, namespace: str) -> dict[str, Any]:
    """Create the object, or replace it if it exists (last write wins, as kubectl replace)."""
    resource = KINDS[document["kind"]]
    target_namespace = namespace if resource.namespaced else None
    body = dict(document)
    metadata = dict(body.get("metadata") or {})
    if resource.namespaced:
        metadata["namespace"] = namespace
    body["metadata"] = metadata
    try:
        created = await client.create(resource, namespace=target_namespace, body=body)
    except KubeConflict:
        current = await client.get(resource, namespace=target_namespace, name=metadata["name"])
        metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        created = await client.replace(
            resource, namespace=target_namespace, name=metadata["name"], body=body
        )
    logger.info("applied %s %s", document["kind"], metadata["name"])
    return created
