"""A template's file and storage mounts: their validation and the pod volumes they become.

Three maps in `runtimeEnvironment` (core HEAD, contract §5.1), each from a source name to a
VolumeMount-like object (`mountPath` required; `subPath`, `subPathExpr`, `readOnly`,
`recursiveReadOnly`, `mountPropagation` optional; a `name` is ignored, nexusd names volumes):

    secretFileMounts         Secret name     -> a `secret` volume (secretName = the key)
    configurationFileMounts  ConfigMap name  -> a `configMap` volume (name = the key)
    storageMounts            PVC claim name  -> a `persistentVolumeClaim` volume (claimName =
                                               the key); with `emptyDir` ({} or {medium,
                                               sizeLimit}) the key only names a scratch volume

Volume names are DNS-1123 labels derived from the kind and the source name: a readable,
sanitised part and a short hash of the exact name, so that `db.creds` and `db-creds` (equal
once sanitised) still get two volumes, and the same template always gives the same Job.

`mount_problems` refuses, naming the field, what would make the Job invalid or the container
surprising: a missing or relative `mountPath`, `/` itself, two mounts on one path, a mount on
the Datadog socket's path when that socket is mounted or on the service account token's, a
`subPath` that is absolute or climbs out with `..`, ill-typed values, and source names
Kubernetes could not hold. Nested mounts (`/data` and `/data/cache`) are fine, as they are to
Kubernetes. Any JSON-like input gives problems, never an exception. `file_volumes` trusts a
spec that passed.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping
from typing import Any, Final

from nexusd.core.quantities import quantity_problem, shown

DATADOG_VOLUME: Final = "dsdsocket"
DATADOG_HOST_PATH: Final = "/var/run/datadog/"
DATADOG_MOUNT_PATH: Final = "/var/run/datadog"
#: Where Kubernetes' ServiceAccount admission mounts the API token into every container (the
#: pod's service account, nexusd sets no automountServiceAccountToken): a volume mounted there
#: too makes the pod invalid, so the Job could never start a pod.
SERVICE_ACCOUNT_MOUNT_PATH: Final = "/var/run/secrets/kubernetes.io/serviceaccount"

SECRET_FILE_MOUNTS: Final = "secretFileMounts"
CONFIGURATION_FILE_MOUNTS: Final = "configurationFileMounts"
STORAGE_MOUNTS: Final = "storageMounts"
#: runtimeEnvironment key -> the prefix of its volumes' names (the order volumes are listed in).
MOUNT_KINDS: Final = {
    SECRET_FILE_MOUNTS: "secret",
    CONFIGURATION_FILE_MOUNTS: "config",
    STORAGE_MOUNTS: "storage",
}
#: VolumeMount fields copied into the container (`name` is nexusd's).
VOLUME_MOUNT_FIELDS: Final = (
    "mountPath",
    "subPath",
    "subPathExpr",
    "readOnly",
    "recursiveReadOnly",
    "mountPropagation",
)
_STRING_FIELDS: Final = ("subPathExpr", "recursiveReadOnly", "mountPropagation")
_MAX_LABEL: Final = 63
_HASH_CHARS: Final = 8
_DNS_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
)
_MAX_SUBDOMAIN: Final = 253


def volume_name(kind: str, source: str) -> str:
    """`<prefix>-<sanitised source>-<8 hex of sha256(kind/source)>`, at most 63 characters."""
    prefix = MOUNT_KINDS.get(kind, "volume")
    digest = hashlib.sha256(f"{kind}/{source}".encode()).hexdigest()[:_HASH_CHARS]
    room = _MAX_LABEL - len(prefix) - len(digest) - 2
    readable = re.sub(r"[^a-z0-9]+", "-", source.lower())[:room].strip("-")
    return "-".join(part for part in (prefix, readable, digest) if part)


def file_volumes(runtime: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the container's volumeMounts for a validated runtimeEnvironment,
    by kind (secrets, configurations, storage) and by source name; empty when none."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for kind in MOUNT_KINDS:
        for source, mount in sorted((runtime.get(kind) or {}).items()):
            name = volume_name(kind, source)
            volumes.append({"name": name, **_volume_source(kind, source, mount)})
            mounts.append(
                {"name": name, **{k: mount[k] for k in VOLUME_MOUNT_FIELDS if k in mount}}
            )
    return volumes, mounts


def _volume_source(kind: str, source: str, mount: Mapping[str, Any]) -> dict[str, Any]:
    if kind == SECRET_FILE_MOUNTS:
        return {"secret": {"secretName": source}}
    if kind == CONFIGURATION_FILE_MOUNTS:
        return {"configMap": {"name": source}}
    if "emptyDir" in mount:
        return {"emptyDir": dict(mount["emptyDir"] or {})}
    return {"persistentVolumeClaim": {"claimName": source}}


def mount_problems(spec: Mapping[str, Any], where: str) -> list[str]:
    """Problems with the mounts of a template spec (`where` = its path, e.g. "spec")."""
    runtime = spec.get("runtimeEnvironment")
    if not isinstance(runtime, Mapping):
        return []  # reported by the runtimeEnvironment check
    problems: list[str] = []
    # normalised mountPath -> what claimed it
    paths = {SERVICE_ACCOUNT_MOUNT_PATH: "Kubernetes (the service account token)"}
    datadog = spec.get("datadogIntegrationSettings")
    if isinstance(datadog, Mapping) and datadog.get("mountDatadogSocket") is True:
        paths[DATADOG_MOUNT_PATH] = "the Datadog socket (datadogIntegrationSettings)"
    for kind in MOUNT_KINDS:
        here = f"{where}.runtimeEnvironment.{kind}"
        entries = runtime.get(kind)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            problems.append(f"{here}: must be an object of source name to volume mount")
            continue
        for source, mount in entries.items():
            field = f"{here}.{_key(source)}"
            _source_name(kind, source, field, problems)
            if not isinstance(mount, Mapping):
                problems.append(f'{field}: must be an object {{"mountPath": ...}}')
                continue
            _mount_fields(kind, source, mount, field, paths, problems)
    return problems


def _source_name(kind: str, source: object, field: str, problems: list[str]) -> None:
    if not isinstance(source, str) or not source:
        problems.append(f"{field}: the source name must be a non-empty string")
    elif kind == STORAGE_MOUNTS:
        return  # an emptyDir's key only names it; a claim name is checked with the mount
    elif len(source) > _MAX_SUBDOMAIN or not _DNS_SUBDOMAIN.fullmatch(source):
        what = "Secret" if kind == SECRET_FILE_MOUNTS else "ConfigMap"
        problems.append(
            f"{field}: {shown(source)} is no {what} name (lower-case letters, digits, '-' "
            "and '.', at most 253 characters)"
        )


def _mount_fields(
    kind: str,
    source: object,
    mount: Mapping[str, Any],
    field: str,
    paths: dict[str, str],
    problems: list[str],
) -> None:
    _mount_path(mount.get("mountPath"), f"{field}.mountPath", paths, problems)
    sub_path = mount.get("subPath")
    if sub_path is not None:
        if not isinstance(sub_path, str):
            problems.append(f"{field}.subPath: must be a string")
        elif sub_path.startswith("/") or ".." in sub_path.split("/"):
            problems.append(
                f"{field}.subPath: {shown(sub_path)} must be a relative path without '..'"
            )
    read_only = mount.get("readOnly")
    if read_only is not None and not isinstance(read_only, bool):
        problems.append(f"{field}.readOnly: must be a boolean")
    for key in _STRING_FIELDS:
        if mount.get(key) is not None and not isinstance(mount[key], str):
            problems.append(f"{field}.{key}: must be a string")
    if kind == STORAGE_MOUNTS:
        _storage_source(source, mount, field, problems)


def _mount_path(path: object, field: str, paths: dict[str, str], problems: list[str]) -> None:
    if path in (None, ""):
        problems.append(f"{field} is required")
        return
    if not isinstance(path, str):
        problems.append(f"{field}: must be a string")
        return
    if not path.startswith("/") or "\0" in path:
        problems.append(f"{field}: {shown(path)} must be an absolute path")
        return
    normal = posixpath.normpath(path)
    if normal.startswith("//"):  # POSIX keeps a leading "//"; the container's kernel does not
        normal = "/" + normal.lstrip("/")
    if normal == "/":
        problems.append(f"{field}: {shown(path)} would hide the container's whole filesystem")
    elif normal in paths:
        problems.append(f"{field}: {shown(path)} is already mounted by {paths[normal]}")
    else:
        paths[normal] = field


def _storage_source(
    source: object, mount: Mapping[str, Any], field: str, problems: list[str]
) -> None:
    """storageMounts: a claim name (the key) unless `emptyDir` is given."""
    if "emptyDir" in mount:
        empty_dir = mount["emptyDir"]
        if empty_dir is not None and not isinstance(empty_dir, Mapping):
            problems.append(f"{field}.emptyDir: must be an object (medium, sizeLimit)")
        elif isinstance(empty_dir, Mapping):
            medium = empty_dir.get("medium")
            if medium not in (None, "", "Memory") and not (
                isinstance(medium, str) and medium.startswith("HugePages")
            ):
                problems.append(
                    f'{field}.emptyDir.medium: {shown(medium)} must be "", "Memory" or '
                    '"HugePages[-<size>]"'
                )
            size = empty_dir.get("sizeLimit")
            problem = None if size is None else quantity_problem(size, "memory", limit=False)
            if problem:
                problems.append(f"{field}.emptyDir.sizeLimit: {problem}")
        return
    if not isinstance(source, str):
        return  # reported by _source_name
    if len(source) > _MAX_SUBDOMAIN or not _DNS_SUBDOMAIN.fullmatch(source):
        problems.append(
            f"{field}: {shown(source)} is no PersistentVolumeClaim name (lower-case letters, "
            "digits, '-' and '.'); give emptyDir for a scratch volume"
        )


def _key(name: object) -> str:
    """A map key as a path component: itself when it is short and printable."""
    if isinstance(name, str) and len(name) <= 80 and name.isprintable():
        return name
    return shown(name)
