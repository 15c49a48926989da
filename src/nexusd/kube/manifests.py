"""The algorithm run's Job manifest, built exactly as upstream's `CheckpointedRequest.ToV1Job`
(contract §6.4, core v1.4.4 plus the parent env vars of core HEAD), with nexusd additions:
`NEXUS__RESULT_UPLOAD_URL`, the newer `computeResources.limits/requests` shape (§0.1), the
`secretFileMounts`/`configurationFileMounts`/`storageMounts` volumes of core HEAD (§5.1, built
by `nexusd.kube.mounts`; after the Datadog socket's, which stays first), and the receiver URL
with the run's completion token (`ReceiverUrl`).

Pure functions on plain dicts: input is the applied configuration (the template spec merged
with the run's overrides, see `nexusd.kube.overrides`) and the workgroup spec; output is the
`batch/v1` Job body to POST. Empty optional fields are left out, as Go's `omitempty` does.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Final

import attrs

from nexusd.core.quantities import quantity_amount
from nexusd.kube.mounts import DATADOG_HOST_PATH, DATADOG_MOUNT_PATH, DATADOG_VOLUME, file_volumes
from nexusd.kube.overrides import (
    ENV_ALGORITHM_NAME,
    ENV_LEGACY_RECEIVER,
    ENV_PARENT_ALGORITHM_NAME,
    ENV_PARENT_REQUEST_ID,
    ENV_RECEIVER,
    ENV_RESULT_UPLOAD_URL,
    ENV_SHARD_NAME,
    validate_template_spec,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

LABEL_TEMPLATE_NAME: Final = "science.sneaksanddata.com/algorithm-template-name"
LABEL_NEXUS_VERSION: Final = "science.sneaksanddata.com/nexus-version"
LABEL_NEXUS_COMPONENT: Final = "science.sneaksanddata.com/nexus-component"
COMPONENT_ALGORITHM_RUN: Final = "algorithm-run"

#: Finished Jobs (and, through GC, their child runs) are deleted this long after finishing.
TTL_SECONDS_AFTER_FINISHED: Final = 300
#: Burstable QoS: the CPU request is this share of the CPU limit (upstream `core@ee58d29`).
CPU_REQUEST_FRACTION: Final = 0.1
#: The path segment before a completion token in a receiver URL: `<base>/t/<token>`.
TOKEN_SEGMENT: Final = "t"
REDACTED: Final = "<redacted>"


@attrs.frozen
class ReceiverUrl:
    """The receiver URL a run's pod gets in `NEXUS__CLIENT__RECEIVER`.

    The SDK appends `/algorithm/v1/complete/{alg}/requests/{id}` to the base URL it is given,
    keeping its path (contract §0.1), so a base of `<receiver>/t/<token>` makes an unchanged
    algorithm send the run's completion token without knowing it. `base` empty = the URL the
    template (or the run's override) gives, with the token appended; a template without one
    gets none.
    """

    base: str
    #: the run's completion token; empty = none (completion tokens turned off)
    token: str

    def applied_to(self, url: str) -> str:
        url = url.rstrip("/")
        return f"{url}/{TOKEN_SEGMENT}/{self.token}" if self.token else url


def build_job(
    *,
    request_id: str,
    algorithm: str,
    spec: Mapping[str, Any],
    workgroup: Mapping[str, Any],
    namespace: str,
    payload_url: str,
    result_upload_url: str | None,
    parent_owner: Mapping[str, Any] | None,
    parent: tuple[str, str] | None,
    nexus_version: str,
    checked: bool = False,
    receiver: ReceiverUrl | None = None,
) -> dict[str, Any]:
    """The `batch/v1` Job for one run. `parent` is (parent request id, parent algorithm);
    `receiver` None leaves the template's receiver variables as they are.

    Raises ValueError when `spec` cannot make a Job. `checked` says the caller validated
    `spec` itself (intake keeps a template's verdict while the template is unchanged), which
    saves validating it again for every run.
    """
    problems = [] if checked else validate_template_spec(spec)
    if problems:
        raise ValueError("; ".join(problems))
    runtime = spec.get("runtimeEnvironment") or {}
    labels = {
        LABEL_TEMPLATE_NAME: algorithm,
        LABEL_NEXUS_VERSION: nexus_version,
        LABEL_NEXUS_COMPONENT: COMPONENT_ALGORITHM_RUN,
    }
    metadata: dict[str, Any] = {"name": request_id, "namespace": namespace, "labels": labels}
    template_metadata: dict[str, Any] = {"labels": dict(labels)}
    annotations = runtime.get("annotations")
    if annotations:
        metadata["annotations"] = dict(annotations)
        template_metadata["annotations"] = dict(annotations)
    if parent_owner is not None:
        metadata["ownerReferences"] = [dict(parent_owner)]

    job_spec: dict[str, Any] = {
        "podFailurePolicy": pod_failure_policy(spec, container_name=request_id),
        "template": {
            "metadata": template_metadata,
            "spec": _pod_spec(
                request_id=request_id,
                algorithm=algorithm,
                spec=spec,
                workgroup=workgroup,
                payload_url=payload_url,
                result_upload_url=result_upload_url,
                parent=parent,
                receiver=receiver,
            ),
        },
    }
    if runtime.get("maximumRetries") is not None:
        job_spec["backoffLimit"] = runtime["maximumRetries"]
    if runtime.get("deadlineSeconds") is not None:
        job_spec["activeDeadlineSeconds"] = runtime["deadlineSeconds"]
    job_spec["ttlSecondsAfterFinished"] = TTL_SECONDS_AFTER_FINISHED
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def _pod_spec(
    *,
    request_id: str,
    algorithm: str,
    spec: Mapping[str, Any],
    workgroup: Mapping[str, Any],
    payload_url: str,
    result_upload_url: str | None,
    parent: tuple[str, str] | None,
    receiver: ReceiverUrl | None,
) -> dict[str, Any]:
    runtime = spec.get("runtimeEnvironment") or {}
    return pod_spec(
        spec=spec,
        workgroup=workgroup,
        container_name=request_id,
        command=spec["command"].split(" "),
        args=job_args(spec.get("args") or [], payload_url=payload_url, request_id=request_id),
        env=job_env(
            runtime.get("environmentVariables") or [],
            algorithm=algorithm,
            shard=str(workgroup.get("cluster", "")),
            parent=parent,
            result_upload_url=result_upload_url,
            receiver=receiver,
        ),
        restart_policy="Never",
    )


def pod_spec(
    *,
    spec: Mapping[str, Any],
    workgroup: Mapping[str, Any],
    container_name: str,
    command: list[str],
    args: list[str],
    env: list[dict[str, Any]],
    restart_policy: str,
) -> dict[str, Any]:
    """The pod of a template's runs around one container running `command` with `args` and
    `env`: the template's image, resources, env sources, volumes and service account, the
    workgroup's affinity and tolerations. A Job's pod (one run) and a warm pool's (many runs,
    see `nexusd.kube.pools`) differ only in the arguments."""
    container_spec = spec["container"]
    runtime = spec.get("runtimeEnvironment") or {}
    container: dict[str, Any] = {
        "name": container_name,
        "image": image_reference(container_spec),
        "imagePullPolicy": "IfNotPresent",
        "resources": container_resources(spec["computeResources"]),
        "command": command,
        "args": args,
        "env": env,
    }
    env_from = runtime.get("mappedEnvironmentVariables")
    if env_from:
        container["envFrom"] = [dict(item) for item in env_from]
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if (spec.get("datadogIntegrationSettings") or {}).get("mountDatadogSocket"):
        volumes.append({"name": DATADOG_VOLUME, "hostPath": {"path": DATADOG_HOST_PATH}})
        mounts.append({"name": DATADOG_VOLUME, "mountPath": DATADOG_MOUNT_PATH})
    file_sources, file_mounts = file_volumes(runtime)  # secrets, configurations, storage
    volumes.extend(file_sources)
    mounts.extend(file_mounts)
    if mounts:
        container["volumeMounts"] = mounts
    pod: dict[str, Any] = {"volumes": volumes} if volumes else {}
    pod["containers"] = [container]
    if workgroup.get("affinity"):
        pod["affinity"] = workgroup["affinity"]
    if workgroup.get("tolerations"):
        pod["tolerations"] = list(workgroup["tolerations"])
    if container_spec.get("serviceAccountName"):
        pod["serviceAccountName"] = container_spec["serviceAccountName"]
    pod["restartPolicy"] = restart_policy
    return pod


def image_reference(container: Mapping[str, Any]) -> str:
    """`<registry>/<image>:<versionTag>`."""
    return f"{container['registry']}/{container['image']}:{container['versionTag']}"


def job_args(args: list[str], *, payload_url: str, request_id: str) -> list[str]:
    """Fill `%s` in args mentioning `sas-uri` (payload URL) or else `request-id` (the id)."""
    filled = []
    for arg in args:
        if "sas-uri" in arg:
            filled.append(_printf(arg, payload_url))
        elif "request-id" in arg:
            filled.append(_printf(arg, request_id))
        else:
            filled.append(arg)
    return filled


def _printf(pattern: str, value: str) -> str:
    """Go's `fmt.Sprintf(pattern, value)` for the one `%s` (and `%%`) patterns nexus uses.

    A pattern without `%s` is returned unchanged (Go would append `%!(EXTRA ...)`; intake
    rejects such templates, see `validate_template_spec`).
    """
    parts = pattern.split("%%")
    for index, part in enumerate(parts):
        if "%s" in part:
            parts[index] = part.replace("%s", value, 1)
            break
    return "%".join(parts)


def job_env(
    template_env: list[Mapping[str, Any]],
    *,
    algorithm: str,
    shard: str,
    parent: tuple[str, str] | None,
    result_upload_url: str | None,
    receiver: ReceiverUrl | None = None,
) -> list[dict[str, Any]]:
    """Template env first, then nexus's variables, so that theirs win over duplicates (a run's
    overrides cannot name them, see `nexusd.kube.overrides.NEXUSD_ENV_NAMES`). The receiver
    variables are rewritten where they stand (see `ReceiverUrl`)."""
    env = [dict(item) for item in template_env]
    if receiver is not None:
        _receiver_env(env, receiver)
    env.append({"name": ENV_ALGORITHM_NAME, "value": algorithm})
    env.append({"name": ENV_SHARD_NAME, "value": shard})
    if parent is not None:
        env.append({"name": ENV_PARENT_REQUEST_ID, "value": parent[0]})
        env.append({"name": ENV_PARENT_ALGORITHM_NAME, "value": parent[1]})
    if result_upload_url is not None:
        env.append({"name": ENV_RESULT_UPLOAD_URL, "value": result_upload_url})
    return env


def _receiver_env(env: list[dict[str, Any]], receiver: ReceiverUrl) -> None:
    """Give `NEXUS__CLIENT__RECEIVER` (and the older `NEXUS__RECEIVER_URL`, where the template
    has it) the run's receiver URL. With a configured base it replaces the template's value,
    even one read from a ConfigMap (`valueFrom`), and is added when the template has none."""
    names = (ENV_RECEIVER, ENV_LEGACY_RECEIVER)
    found = False
    for item in env:
        if item.get("name") not in names:
            continue
        found = found or item["name"] == ENV_RECEIVER
        if receiver.base:
            item.pop("valueFrom", None)
            item["value"] = receiver.applied_to(receiver.base)
        elif isinstance(item.get("value"), str) and item["value"]:
            item["value"] = receiver.applied_to(item["value"])
    if receiver.base and not found:
        env.append({"name": ENV_RECEIVER, "value": receiver.applied_to(receiver.base)})


_URL: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_TOKEN_PATH: Final = re.compile(rf"/{TOKEN_SEGMENT}/[^/?#]+$")


def redacted_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """A built Job with what grants access taken out, for `GET /buffer`: the payload URL in
    the args (`--sas-uri=<redacted>`), the result upload URL and the completion token in the
    receiver URL (`.../t/<redacted>`). A new dict; `job` is not modified."""
    copied: dict[str, Any] = {**job, "spec": {**job["spec"]}}
    template = copied["spec"]["template"] = {**job["spec"]["template"]}
    pod = template["spec"] = {**job["spec"]["template"]["spec"]}
    pod["containers"] = [_redacted_container(container) for container in pod["containers"]]
    return copied


def _redacted_container(container: Mapping[str, Any]) -> dict[str, Any]:
    redacted = dict(container)
    if "args" in container:
        redacted["args"] = [
            _URL.sub(REDACTED, arg) if "sas-uri" in arg else arg for arg in container["args"]
        ]
    if "env" not in container:
        return redacted
    env = []
    for item in container["env"]:
        item = dict(item)
        value = item.get("value")
        if item.get("name") == ENV_RESULT_UPLOAD_URL:
            item["value"] = REDACTED
        elif item.get("name") in (ENV_RECEIVER, ENV_LEGACY_RECEIVER) and isinstance(value, str):
            item["value"] = _TOKEN_PATH.sub(f"/{TOKEN_SEGMENT}/{REDACTED}", value)
        env.append(item)
    redacted["env"] = env
    return redacted


def container_resources(resources: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Limits and requests (contract §6.4, plus the newer limits/requests maps of §0.1).

    limits   = cpuLimit, memoryLimit, customResources, then explicit `limits` entries
    requests = the limits, except CPU = 10% of the CPU limit in millicores; then explicit
               `requests` entries override
    """
    limits: dict[str, str] = {}
    if resources.get("cpuLimit"):
        limits["cpu"] = _quantity(resources["cpuLimit"])
    if resources.get("memoryLimit"):
        limits["memory"] = _quantity(resources["memoryLimit"])
    for source in (resources.get("customResources"), resources.get("limits")):
        for name, value in (source or {}).items():
            if value not in ("", None):
                limits[name] = _quantity(value)
    requests = dict(limits)
    if "cpu" in limits:
        requests["cpu"] = cpu_request(limits["cpu"])
    for name, value in (resources.get("requests") or {}).items():
        if value not in ("", None):
            requests[name] = _quantity(value)
    return {"limits": limits, "requests": requests}


def resource_problems(job: Mapping[str, Any]) -> list[str]:
    """What the API server would refuse in a built Job's resources: a request above its
    limit (the template's and the run's limits and requests meet only here)."""
    problems = []
    for container in job["spec"]["template"]["spec"]["containers"]:
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        for name in sorted(set(limits) & set(requests)):
            if quantity_amount(requests[name]) > quantity_amount(limits[name]):
                problems.append(
                    f"computeResources: the {name} request {requests[name]} is above its "
                    f"limit {limits[name]}"
                )
    return problems


def cpu_request(cpu_limit: str) -> str:
    """10% of the CPU limit in millicores, formatted as Go's `fmt.Sprintf("%.0fm", ...)`.

    A limit under 5m gives "0m", as upstream does: a valid request (requests may be 0, and
    the kubelet then gives the container the smallest CPU share). Any limit validation lets
    through gives at most 2**63-1 millicores, which float64 formats without overflow.
    """
    millis = math.ceil(quantity_amount(cpu_limit) * 1000)  # Quantity.MilliValue rounds up
    return f"{float(millis) * CPU_REQUEST_FRACTION:.0f}m"  # %.0f: round half to even, as Go


def _quantity(value: object) -> str:
    """Quantities are strings in the API (numbers from YAML/JSON are accepted and converted)."""
    return value if isinstance(value, str) else str(value)


def pod_failure_policy(spec: Mapping[str, Any], *, container_name: str) -> dict[str, Any]:
    """Ignore disruptions; FailJob on fatal exit codes; Ignore transient ones. Empty lists
    are skipped (Kubernetes rejects `values: []`, upstream's bug fixed in core `e902190`), and
    the codes are sorted and unique, as Kubernetes requires of `values` (upstream sends them
    as written, so `[139, 137]` makes every Job of the template invalid)."""
    rules: list[dict[str, Any]] = [
        {
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
        }
    ]
    behaviour = spec.get("errorHandlingBehaviour") or {}
    for key, action in (("fatalExitCodes", "FailJob"), ("transientExitCodes", "Ignore")):
        codes = behaviour.get(key)
        if codes:
            rules.append(
                {
                    "action": action,
                    "onExitCodes": {
                        "containerName": container_name,
                        "operator": "In",
                        "values": sorted(set(codes)),
                    },
                }
            )
    return {"rules": rules}


def parent_owner_reference(job: Mapping[str, Any]) -> dict[str, Any]:
    """The ownerReference a child run's Job gets to its parent run's Job (cascading delete)."""
    metadata = job["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": metadata["name"],
        "uid": metadata["uid"],
        "blockOwnerDeletion": True,
    }


def dry_run_owner_reference(parent_id: str) -> dict[str, Any]:
    """Upstream's placeholder reference for dry runs: the parent id as both name and uid."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": parent_id, "uid": parent_id}
