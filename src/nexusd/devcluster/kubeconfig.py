"""The kubeconfig the embedded cluster writes: the only way nexusd, kubectl and tests reach it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    import pathlib

CLUSTER_NAME = "devcluster"
USER_NAME = "devcluster-admin"
#: Any bearer token is accepted; this one just makes clients send an Authorization header.
TOKEN = "devcluster-token"


def kubeconfig_document(*, server: str, namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {"server": server}}],
        "users": [{"name": USER_NAME, "user": {"token": TOKEN}}],
        "contexts": [
            {
                "name": CLUSTER_NAME,
                "context": {"cluster": CLUSTER_NAME, "user": USER_NAME, "namespace": namespace},
            }
        ],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }


def write_kubeconfig(path: pathlib.Path, *, server: str, namespace: str) -> pathlib.Path:
    """Write atomically (rename), readable only by the owner like ~/.kube/config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(kubeconfig_document(server=server, namespace=namespace)))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path
