"""Cluster credentials: what nexusd needs to open an HTTPS connection to one API server.

The `kubernetes` package does the hard part (kubeconfig merging, contexts, inline certificate
data written to temporary files, exec plugins, in-cluster service-account files); this module
only copies the outcome into a frozen `ClusterCredentials` that `KubeClient` turns into an
`httpx.AsyncClient`. Its HTTP client is never used.

Loading reads files and may run an exec plugin, so it is blocking: async callers run
`load_credentials` in a thread (`trio.to_thread.run_sync`). So is `ClusterCredentials.refresh_token`
(an exec plugin or the rotated in-cluster token file), which `KubeClient` calls in a thread.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from nexusd.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

#: Where the in-cluster service-account token lives (mounted by the kubelet).
IN_CLUSTER_TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@attrs.frozen
class ClusterCredentials:
    """How to reach and authenticate to one Kubernetes API server.

    `verify` is False only when the kubeconfig says `insecure-skip-tls-verify: true`.
    `refresh_token`, when set, is a BLOCKING callable returning the current bearer token (exec
    plugins, rotated in-cluster tokens); callers run it in a thread.
    """

    server: str
    ca_file: str | None = None
    verify: bool = True
    client_cert_file: str | None = None
    client_key_file: str | None = None
    token: str | None = None
    source: str = ""
    refresh_token: Callable[[], str | None] | None = attrs.field(default=None, eq=False, repr=False)

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The `verify=` value for httpx: an SSL context, or False when verification is off.

        Blocking (reads the CA and client certificate files); call it when building a client.
        """
        if not self.server.startswith("https://"):
            return True  # plain HTTP (the embedded dev cluster): no TLS at all
        if not self.verify:
            if self.client_cert_file is None:
                return False
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert_file is not None:
            context.load_cert_chain(self.client_cert_file, self.client_key_file)
        return context


def load_credentials(kubeconfig: Path | None, *, context: str | None = None) -> ClusterCredentials:
    """Load credentials for one cluster. Blocking.

    `kubeconfig` None means: in-cluster when `KUBERNETES_SERVICE_HOST` is set, otherwise the
    default kubeconfig (`KUBECONFIG`, else `~/.kube/config`). Any failure is a `ConfigError`
    naming the file.
    """
    # Imported here: the kubernetes package is slow to import and only needed at start.
    from kubernetes import config as kube_config
    from kubernetes.client import Configuration

    configuration = Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        source = "in-cluster service account"
        try:
            kube_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except Exception as exc:  # the loaders raise ConfigException, OSError, ValueError...
            raise ConfigError(f"cannot load in-cluster Kubernetes credentials: {exc}") from exc
    else:
        path = kubeconfig if kubeconfig is not None else _default_kubeconfig()
        source = str(path)
        try:
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(path),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        except Exception as exc:
            raise ConfigError(f"cannot load kubeconfig {path}: {exc}") from exc
    return _from_configuration(configuration, source=source)


def _default_kubeconfig() -> Path:
    """The kubeconfig kubectl would use: the first file of `KUBECONFIG`, else ~/.kube/config."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((part for part in env.split(os.pathsep) if part), None)
    return Path(first).expanduser() if first else Path("~/.kube/config").expanduser()


def _from_configuration(configuration: Any, *, source: str) -> ClusterCredentials:
    """Copy the fields nexusd uses out of a `kubernetes.client.Configuration`."""
    server = str(configuration.host or "").rstrip("/")
    if not server:
        raise ConfigError(f"{source}: no cluster server URL")
    refresh: Callable[[], str | None] | None = None
    if configuration.refresh_api_key_hook is not None:
        refresh = _token_refresher(configuration)
    return ClusterCredentials(
        server=server,
        ca_file=configuration.ssl_ca_cert or None,
        verify=bool(configuration.verify_ssl),
        client_cert_file=configuration.cert_file or None,
        client_key_file=configuration.key_file or None,
        token=_bearer_token(configuration),
        source=source,
        refresh_token=refresh,
    )


def _bearer_token(configuration: Any) -> str | None:
    """The token without its `Bearer ` prefix (the loaders store 'Bearer x' or 'bearer x')."""
    raw = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
    if not raw:
        return None
    scheme, _, token = str(raw).partition(" ")
    return token if scheme.lower() == "bearer" and token else str(raw)


def _token_refresher(configuration: Any) -> Callable[[], str | None]:
    """A blocking callable that runs the loader's refresh hook and returns the current token."""

    def refresh() -> str | None:
        configuration.refresh_api_key_hook(configuration)
        return _bearer_token(configuration)

    return refresh
