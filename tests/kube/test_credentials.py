"""Loading cluster credentials with the `kubernetes` package's loaders from real kubeconfig
files written to tmp_path. The in-cluster case points the loader's service-account file paths
at tmp files (the only thing faked: there is no pod here). Certificates come from the openssl
command line when it is installed."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexusd.core.errors import ConfigError
from nexusd.kube.credentials import ClusterCredentials, load_credentials


def write_kubeconfig(
    path: Path,
    clusters: dict[str, dict[str, Any]],
    current: str,
    users: dict[str, dict[str, Any]] | None = None,
) -> Path:
    users = users or {name: {"token": f"token-{name}"} for name in clusters}
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in clusters],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(autouse=True)
def not_in_a_pod(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


def test_token_and_insecure_skip_tls_verify(tmp_path):
    path = write_kubeconfig(
        tmp_path / "shard-0.kubeconfig",
        {"shard-0": {"server": "https://10.0.0.1:6443", "insecure-skip-tls-verify": True}},
        "shard-0",
    )
    credentials = load_credentials(path)
    assert credentials.server == "https://10.0.0.1:6443"
    assert credentials.token == "token-shard-0"
    assert credentials.verify is False
    assert credentials.ssl_context() is False
    assert credentials.source == str(path)


def test_context_selection(tmp_path):
    path = write_kubeconfig(
        tmp_path / "config",
        {"a": {"server": "http://a.example"}, "b": {"server": "http://b.example/"}},
        "a",
    )
    assert load_credentials(path).server == "http://a.example"
    chosen = load_credentials(path, context="b")
    assert chosen.server == "http://b.example"
    assert chosen.token == "token-b"
    assert chosen.verify is True


def test_plain_http_needs_no_tls(tmp_path):
    path = write_kubeconfig(tmp_path / "config", {"dev": {"server": "http://127.0.0.1:1"}}, "dev")
    assert load_credentials(path).ssl_context() is True


def test_missing_file_is_a_config_error_naming_it(tmp_path):
    missing = tmp_path / "nope.kubeconfig"
    with pytest.raises(ConfigError, match=r"nope\.kubeconfig"):
        load_credentials(missing)


def test_unknown_context_is_a_config_error(tmp_path):
    path = write_kubeconfig(tmp_path / "config", {"a": {"server": "http://a"}}, "a")
    with pytest.raises(ConfigError, match="config"):
        load_credentials(path, context="zzz")


def test_garbage_file_is_a_config_error(tmp_path):
    path = tmp_path / "broken.kubeconfig"
    path.write_text("this: [is not a kubeconfig")
    with pytest.raises(ConfigError, match=r"broken\.kubeconfig"):
        load_credentials(path)


def test_default_kubeconfig_from_environment(tmp_path, monkeypatch):
    path = write_kubeconfig(tmp_path / "env-config", {"e": {"server": "http://env.example"}}, "e")
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert load_credentials(None).server == "http://env.example"


def test_in_cluster_service_account(tmp_path, monkeypatch):
    from kubernetes.config import incluster_config

    token_file = tmp_path / "token"
    token_file.write_text("sa-token-1")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token_file))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca_file))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    credentials = load_credentials(None)
    assert credentials.server == "https://10.96.0.1:443"
    assert credentials.token == "sa-token-1"
    assert credentials.ca_file == str(ca_file)
    assert credentials.verify is True
    assert credentials.refresh_token is not None
    assert credentials.refresh_token() == "sa-token-1"


def test_in_cluster_without_service_account_is_a_config_error(tmp_path, monkeypatch):
    from kubernetes.config import incluster_config

    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "none"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigError, match="in-cluster"):
        load_credentials(None)


def test_explicit_kubeconfig_wins_over_in_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    path = write_kubeconfig(tmp_path / "config", {"x": {"server": "http://x.example"}}, "x")
    assert load_credentials(path).server == "http://x.example"


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=nexusd-test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_client_certificate_and_ca_from_inline_data(tmp_path, certificate):
    cert, key = certificate
    encoded = {p: base64.b64encode(p.read_bytes()).decode() for p in (cert, key)}
    path = write_kubeconfig(
        tmp_path / "config",
        {"c": {"server": "https://kube.example", "certificate-authority-data": encoded[cert]}},
        "c",
        users={"c": {"client-certificate-data": encoded[cert], "client-key-data": encoded[key]}},
    )
    credentials = load_credentials(path)
    assert credentials.token is None
    assert credentials.ca_file is not None
    assert credentials.client_cert_file is not None
    assert Path(credentials.client_cert_file).read_bytes() == cert.read_bytes()
    context = credentials.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_insecure_with_client_certificate_keeps_the_certificate(certificate):
    cert, key = certificate
    credentials = ClusterCredentials(
        server="https://kube.example",
        verify=False,
        client_cert_file=str(cert),
        client_key_file=str(key),
    )
    context = credentials.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
