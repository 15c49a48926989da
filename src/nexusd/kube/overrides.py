"""Per-run configuration overrides and the validation of templates and overrides.

`merge_overrides` applies a run's `customConfiguration` to its template's spec, giving the
"applied configuration" the Job is built from (contract §5.3, `NexusAlgorithmSpec.Merge`):
an override wins when it is non-empty, and only these fields can be overridden:

    container.image / registry / versionTag
    computeResources.cpuLimit / memoryLimit
    computeResources.limits / requests      (newer SDK shape, contract §0.1; key by key)
    workgroupRef.name / group / kind        (recorded only: routing uses the template's)
    runtimeEnvironment.deadlineSeconds / maximumRetries   (set = wins, even 0)

Everything else in the override is ignored, as upstream does.

The Go scheduler dereferences template fields without checks and crashes on a template that
lacks them, or panics on an unparsable quantity (`resource.MustParse`). `validate_template_spec`
and `validate_overrides` return human-readable problems instead, so intake can answer 400.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from kubernetes.utils.quantity import parse_quantity

#: Container fields a run may override.
CONTAINER_OVERRIDES: Final = ("image", "registry", "versionTag")
#: computeResources scalar fields a run may override.
RESOURCE_OVERRIDES: Final = ("cpuLimit", "memoryLimit")
#: computeResources maps (ResourceList) a run may override key by key.
RESOURCE_LIST_OVERRIDES: Final = ("limits", "requests")
WORKGROUP_REF_FIELDS: Final = ("name", "group", "kind")
RUNTIME_OVERRIDES: Final = ("deadlineSeconds", "maximumRetries")
INT32_MAX: Final = 2**31 - 1


def merge_overrides(
    template_spec: Mapping[str, Any], overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The applied configuration: a new dict, the inputs are not modified."""
    merged: dict[str, Any] = copy.deepcopy(dict(template_spec))
    if not overrides:
        return merged
    _coalesce(merged, overrides, "container", CONTAINER_OVERRIDES)
    _coalesce(merged, overrides, "computeResources", RESOURCE_OVERRIDES)
    _coalesce(merged, overrides, "workgroupRef", WORKGROUP_REF_FIELDS)
    runtime = overrides.get("runtimeEnvironment")
    if isinstance(runtime, Mapping):
        for key in RUNTIME_OVERRIDES:
            if runtime.get(key) is not None:
                _section(merged, "runtimeEnvironment")[key] = runtime[key]
    resources = overrides.get("computeResources")
    if isinstance(resources, Mapping):
        for key in RESOURCE_LIST_OVERRIDES:
            values = resources.get(key)
            if isinstance(values, Mapping) and values:
                target = _section(merged, "computeResources").setdefault(key, {})
                target.update(
                    {name: value for name, value in values.items() if value not in ("", None)}
                )
    return merged


def _coalesce(
    merged: dict[str, Any], overrides: Mapping[str, Any], section: str, keys: tuple[str, ...]
) -> None:
    """Copy each non-empty `overrides[section][key]` over the template's value."""
    source = overrides.get(section)
    if not isinstance(source, Mapping):
        return
    for key in keys:
        value = source.get(key)
        if value not in ("", None):
            _section(merged, section)[key] = value


def _section(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """`spec[name]` as a dict, created when missing (a template may omit optional sections)."""
    section = spec.get(name)
    if not isinstance(section, dict):
        section = {}
        spec[name] = section
    return section


# --- validation -------------------------------------------------------------------------------


def validate_overrides(overrides: object) -> list[str]:
    """Problems with a run's `customConfiguration` (empty list = fine). None is fine."""
    if overrides is None:
        return []
    where = "customConfiguration"
    if not isinstance(overrides, Mapping):
        return [f"{where}: must be a JSON object"]
    problems: list[str] = []
    container = _optional_object(overrides, "container", where, problems)
    for key in CONTAINER_OVERRIDES:
        _optional_string(container, key, f"{where}.container", problems)
    resources = _optional_object(overrides, "computeResources", where, problems)
    for key in RESOURCE_OVERRIDES:
        _optional_quantity(resources, key, f"{where}.computeResources", problems)
    for key in RESOURCE_LIST_OVERRIDES:
        _resource_list(resources, key, f"{where}.computeResources", problems)
    ref = _optional_object(overrides, "workgroupRef", where, problems)
    for key in WORKGROUP_REF_FIELDS:
        _optional_string(ref, key, f"{where}.workgroupRef", problems)
    runtime = _optional_object(overrides, "runtimeEnvironment", where, problems)
    for key in RUNTIME_OVERRIDES:
        _optional_int(runtime, key, f"{where}.runtimeEnvironment", problems)
    return problems


def validate_template_spec(spec: object) -> list[str]:
    """Problems with a NexusAlgorithmTemplate spec (or an applied configuration) that would
    make the Job impossible to build or invalid; empty list = fine."""
    where = "spec"
    if not isinstance(spec, Mapping):
        return [f"{where}: must be an object"]
    problems: list[str] = []
    _required_string(spec, "command", where, problems)
    args = spec.get("args")
    if args is not None:
        if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
            problems.append(f"{where}.args: must be a list of strings")
        else:
            for index, arg in enumerate(args):
                _check_placeholder(arg, f"{where}.args[{index}]", problems)
    container = _required_object(spec, "container", where, problems)
    if container is not None:
        for key in CONTAINER_OVERRIDES:
            _required_string(container, key, f"{where}.container", problems)
        _optional_string(container, "serviceAccountName", f"{where}.container", problems)
    _validate_resources(spec, where, problems)
    ref = _required_object(spec, "workgroupRef", where, problems)
    if ref is not None:
        for key in WORKGROUP_REF_FIELDS:
            _required_string(ref, key, f"{where}.workgroupRef", problems)
    _validate_runtime(spec, where, problems)
    errors = _optional_object(spec, "errorHandlingBehaviour", where, problems)
    for key in ("fatalExitCodes", "transientExitCodes"):
        codes = errors.get(key)
        if codes is not None and not (
            isinstance(codes, list) and all(_is_int(code) for code in codes)
        ):
            problems.append(f"{where}.errorHandlingBehaviour.{key}: must be a list of integers")
    datadog = _optional_object(spec, "datadogIntegrationSettings", where, problems)
    mount = datadog.get("mountDatadogSocket")
    if mount is not None and not isinstance(mount, bool):
        problems.append(f"{where}.datadogIntegrationSettings.mountDatadogSocket: must be a boolean")
    return problems


def validate_workgroup_spec(spec: object) -> list[str]:
    """Problems with a NexusAlgorithmWorkgroup spec; empty list = fine."""
    where = "spec"
    if not isinstance(spec, Mapping):
        return [f"{where}: must be an object"]
    problems: list[str] = []
    _required_string(spec, "cluster", where, problems)
    _optional_string(spec, "description", where, problems)
    tolerations = spec.get("tolerations")
    if tolerations is not None and not (
        isinstance(tolerations, list) and all(isinstance(item, Mapping) for item in tolerations)
    ):
        problems.append(f"{where}.tolerations: must be a list of objects")
    _optional_object(spec, "affinity", where, problems)
    return problems


def _validate_resources(spec: Mapping[str, Any], where: str, problems: list[str]) -> None:
    resources = _required_object(spec, "computeResources", where, problems)
    if resources is None:
        return
    here = f"{where}.computeResources"
    raw_limits = resources.get("limits")
    limits: Mapping[str, Any] = raw_limits if isinstance(raw_limits, Mapping) else {}
    for key, name in (("cpuLimit", "cpu"), ("memoryLimit", "memory")):
        # The newer shape may give the limit as computeResources.limits.cpu/memory instead.
        if resources.get(key) in ("", None) and limits.get(name) in ("", None):
            problems.append(f"{here}.{key} is required")
        else:
            _optional_quantity(resources, key, here, problems)
    custom = resources.get("customResources")
    if custom is not None:
        if not isinstance(custom, Mapping):
            problems.append(f"{here}.customResources: must be an object")
        else:
            for name in custom:
                _optional_quantity(custom, name, f"{here}.customResources", problems)
    for key in RESOURCE_LIST_OVERRIDES:
        _resource_list(resources, key, here, problems)


def _validate_runtime(spec: Mapping[str, Any], where: str, problems: list[str]) -> None:
    runtime = _optional_object(spec, "runtimeEnvironment", where, problems)
    here = f"{where}.runtimeEnvironment"
    for key in RUNTIME_OVERRIDES:
        _optional_int(runtime, key, here, problems)
    for key in ("environmentVariables", "mappedEnvironmentVariables"):
        items = runtime.get(key)
        if items is not None and not (
            isinstance(items, list) and all(isinstance(item, Mapping) for item in items)
        ):
            problems.append(f"{here}.{key}: must be a list of objects")
    for index, item in enumerate(runtime.get("environmentVariables") or []):
        if isinstance(item, Mapping) and not isinstance(item.get("name"), str):
            problems.append(f"{here}.environmentVariables[{index}].name is required")
    annotations = runtime.get("annotations")
    if annotations is not None and not (
        isinstance(annotations, Mapping) and all(isinstance(v, str) for v in annotations.values())
    ):
        problems.append(f"{here}.annotations: must be a map of strings")


def _check_placeholder(arg: str, where: str, problems: list[str]) -> None:
    """An arg that gets the payload URL or request id must have exactly one `%s` to fill."""
    if "sas-uri" not in arg and "request-id" not in arg:
        return
    if arg.replace("%%", "").count("%s") != 1:
        problems.append(f"{where}: {arg!r} must contain exactly one %s placeholder")


def _required_object(
    parent: Mapping[str, Any], key: str, where: str, problems: list[str]
) -> Mapping[str, Any] | None:
    value = parent.get(key)
    if value is None:
        problems.append(f"{where}.{key} is required")
        return None
    if not isinstance(value, Mapping):
        problems.append(f"{where}.{key}: must be an object")
        return None
    return value


def _optional_object(
    parent: Mapping[str, Any], key: str, where: str, problems: list[str]
) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"{where}.{key}: must be an object")
        return {}
    return value


def _required_string(parent: Mapping[str, Any], key: str, where: str, problems: list[str]) -> None:
    value = parent.get(key)
    if value is None or value == "":
        problems.append(f"{where}.{key} is required")
    elif not isinstance(value, str):
        problems.append(f"{where}.{key}: must be a string")


def _optional_string(parent: Mapping[str, Any], key: str, where: str, problems: list[str]) -> None:
    value = parent.get(key)
    if value is not None and not isinstance(value, str):
        problems.append(f"{where}.{key}: must be a string")


def _optional_int(parent: Mapping[str, Any], key: str, where: str, problems: list[str]) -> None:
    value = parent.get(key)
    if value is None:
        return
    if not _is_int(value) or not 0 <= value <= INT32_MAX:
        problems.append(f"{where}.{key}: {value!r} must be a non-negative integer")


def _optional_quantity(
    parent: Mapping[str, Any], key: str, where: str, problems: list[str]
) -> None:
    value = parent.get(key)
    if value is None or value == "":
        return
    if not is_quantity(value):
        problems.append(f"{where}.{key}: {value!r} is not a Kubernetes quantity")


def _resource_list(parent: Mapping[str, Any], key: str, where: str, problems: list[str]) -> None:
    values = parent.get(key)
    if values is None:
        return
    if not isinstance(values, Mapping):
        problems.append(f"{where}.{key}: must be an object of resource name to quantity")
        return
    for name in values:
        _optional_quantity(values, name, f"{where}.{key}", problems)


def is_quantity(value: object) -> bool:
    """True for a string (or number) Kubernetes accepts as a resource amount (>= 0)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return False
    if isinstance(value, str) and value != value.strip():
        return False
    try:
        quantity = parse_quantity(value)  # type: ignore[no-untyped-call]
    except (ValueError, ArithmeticError):
        return False
    return bool(quantity >= 0)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
