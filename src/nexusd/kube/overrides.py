"""Per-run configuration overrides and the validation of templates and overrides.

`merge_overrides` applies a run's `customConfiguration` to its template's spec, giving the
"applied configuration" the Job is built from (contract §5.3, `NexusAlgorithmSpec.Merge`):
an override wins when it is non-empty, and only these fields can be overridden:

    container.image / registry / versionTag
    computeResources.cpuLimit / memoryLimit
    computeResources.limits / requests      (newer SDK shape, contract §0.1; key by key)
    workgroupRef.name / group / kind        (recorded only: routing uses the template's)
    runtimeEnvironment.deadlineSeconds / maximumRetries   (set = wins, even 0 retries)
    runtimeEnvironment.environmentVariables (nexusd only: [{"name", "value"}] merged by name)

A template with `container.allowImageOverride: false` refuses container overrides that change
its image (`refused_overrides`). Everything else in the override is ignored, as upstream does.
Upstream ignores the environment variables too; nexusd applies them: a template variable of
the same name is replaced where it stands, new ones follow the template's. A run gives literal
values only (no `valueFrom`: it must not read the namespace's Secrets or ConfigMaps) and cannot
set the variables nexusd sets on every Job (`NEXUSD_ENV_NAMES`).

The Go scheduler dereferences template fields without checks and crashes on a template that
lacks them, or panics on an unparsable quantity (`resource.MustParse`). `validate_template_spec`
and `validate_overrides` return human-readable problems instead, so intake can answer 400. They
also refuse the field values the API server would refuse when the Job is created (a zero
deadline, a quantity Kubernetes cannot hold, an invalid variable or resource name), because a
run accepted with such a value could only end SCHEDULING_FAILED later. Any JSON-like input,
however ill-typed or deep, gives problems and never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from nexusd.core.images import part_problem, reference_problem
from nexusd.core.quantities import quantity_problem, shown
from nexusd.kube.mounts import mount_problems
from nexusd.kube.warmpool import warm_pool_problems

if TYPE_CHECKING:
    from collections.abc import Iterable

#: Container fields a run may override.
CONTAINER_OVERRIDES: Final = ("image", "registry", "versionTag")
#: computeResources scalar fields a run may override.
RESOURCE_OVERRIDES: Final = ("cpuLimit", "memoryLimit")
#: computeResources maps (ResourceList) a run may override key by key.
RESOURCE_LIST_OVERRIDES: Final = ("limits", "requests")
WORKGROUP_REF_FIELDS: Final = ("name", "group", "kind")
RUNTIME_OVERRIDES: Final = ("deadlineSeconds", "maximumRetries")
#: The least value of each: Kubernetes wants activeDeadlineSeconds > 0, backoffLimit >= 0.
RUNTIME_MINIMUMS: Final = {"deadlineSeconds": 1, "maximumRetries": 0}
INT32_MAX: Final = 2**31 - 1

ENV_ALGORITHM_NAME: Final = "NEXUS__ALGORITHM_NAME"
ENV_SHARD_NAME: Final = "NEXUS__SHARD_NAME"
ENV_PARENT_REQUEST_ID: Final = "NEXUS__PARENT_REQUEST_ID"
ENV_PARENT_ALGORITHM_NAME: Final = "NEXUS__PARENT_ALGORITHM_NAME"
ENV_RESULT_UPLOAD_URL: Final = "NEXUS__RESULT_UPLOAD_URL"
#: The receiver base URL the SDK reports to (contract §10.2), and its older name.
ENV_RECEIVER: Final = "NEXUS__CLIENT__RECEIVER"
ENV_LEGACY_RECEIVER: Final = "NEXUS__RECEIVER_URL"
#: Template field saying whether runs may override the container image (default: they may).
ALLOW_IMAGE_OVERRIDE: Final = "allowImageOverride"
#: What `nexusd.kube.manifests.job_env` sets on every Job; a run cannot override them.
NEXUSD_ENV_NAMES: Final = frozenset(
    {
        ENV_ALGORITHM_NAME,
        ENV_SHARD_NAME,
        ENV_PARENT_REQUEST_ID,
        ENV_PARENT_ALGORITHM_NAME,
        ENV_RESULT_UPLOAD_URL,
    }
)

#: Nesting allowed in a spec or an override. The deepest field nexusd reads is 6 levels down
#: (runtimeEnvironment.environmentVariables[i].valueFrom.secretKeyRef.name); refusing deeper
#: input keeps every recursive walker after validation (JSON encoding of the checkpoint, logs)
#: far from Python's recursion limit.
MAX_NESTING: Final = 32
_STANDARD_RESOURCES: Final = ("cpu", "memory", "ephemeral-storage")
_QUALIFIED_NAME: Final = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
)
# Env names: IsEnvVarName, which every API server accepts, for runs (nexusd cannot know the
# shard's version); the relaxed rule of Kubernetes >= 1.32 (printable ASCII but '=') for
# templates, which their authors write for their own clusters.
_ENV_NAME: Final = re.compile(r"(?!\.\.)(?!\.\Z)[-._a-zA-Z][-._a-zA-Z0-9]*")
_RELAXED_ENV_NAME: Final = re.compile(r"[ -<>-~]+")
_MAX_EXIT_CODES: Final = 255  # values per podFailurePolicy rule


def merge_overrides(
    template_spec: Mapping[str, Any], overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The applied configuration: a new dict, the inputs are not modified."""
    merged: dict[str, Any] = _copied(dict(template_spec))
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
        _merge_env(merged, runtime.get("environmentVariables"))
    resources = overrides.get("computeResources")
    if isinstance(resources, Mapping):
        for key in RESOURCE_LIST_OVERRIDES:
            values = resources.get(key)
            if isinstance(values, Mapping) and values:
                target = _section(_section(merged, "computeResources"), key)
                target.update(
                    {name: value for name, value in values.items() if value not in ("", None)}
                )
    return merged


def _copied(value: Any) -> Any:
    """A deep copy of JSON-like data, without recursion: a template may be nested deeper than
    Python's recursion limit allows `copy.deepcopy` to go."""
    root = [value]
    pending: list[tuple[Any, Any]] = [(root, 0)]
    while pending:
        parent, key = pending.pop()
        node = parent[key]
        if isinstance(node, Mapping):
            parent[key] = members = dict(node)
            pending.extend((members, child) for child in members)
        elif isinstance(node, list):
            parent[key] = items = list(node)
            pending.extend((items, index) for index in range(len(items)))
    return root[0]


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


def _merge_env(merged: dict[str, Any], items: object) -> None:
    """A run's variables replace the template's of the same name in place; new ones follow."""
    if not isinstance(items, list):
        return
    wanted: dict[str, dict[str, str]] = {}
    for item in items:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            value = item.get("value")
            if value is None or isinstance(value, str):
                wanted[item["name"]] = {"name": item["name"], "value": value or ""}
    if not wanted:
        return
    runtime = _section(merged, "runtimeEnvironment")
    current = runtime.get("environmentVariables")
    env = list(current) if isinstance(current, list) else []
    replaced = set()
    for index, item in enumerate(env):
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str) and name in wanted:
            env[index] = dict(wanted[name])
            replaced.add(name)
    env.extend(item for name, item in wanted.items() if name not in replaced)
    runtime["environmentVariables"] = env


def _section(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """`spec[name]` as a dict, created when missing (a template may omit optional sections)."""
    section = spec.get(name)
    if not isinstance(section, dict):
        section = {}
        spec[name] = section
    return section


def refused_overrides(template_spec: Mapping[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """The run's container overrides its template does not allow (empty list = none).

    A template with `container.allowImageOverride: false` pins its image: a run may still name
    the template's own registry, image or tag (the SDK sends `versionTag` with every custom
    configuration), but not another one.
    """
    container = template_spec.get("container")
    if not isinstance(container, Mapping) or container.get(ALLOW_IMAGE_OVERRIDE, True):
        return []
    wanted = overrides.get("container")
    if not isinstance(wanted, Mapping):
        return []
    return [
        f"customConfiguration.container.{key}: this algorithm's template does not allow "
        f"runs to change its container image (spec.container.{ALLOW_IMAGE_OVERRIDE} is false)"
        for key in CONTAINER_OVERRIDES
        if wanted.get(key) not in ("", None) and wanted.get(key) != container.get(key)
    ]


# --- validation -------------------------------------------------------------------------------


def validate_overrides(overrides: object) -> list[str]:
    """Problems with a run's `customConfiguration` (empty list = fine). None is fine."""
    if overrides is None:
        return []
    where = "customConfiguration"
    if not isinstance(overrides, Mapping):
        return [f"{where}: must be a JSON object"]
    if _too_deep(overrides):
        return [f"{where}: nested more than {MAX_NESTING} levels deep"]
    problems: list[str] = []
    container = _optional_object(overrides, "container", where, problems)
    for key in CONTAINER_OVERRIDES:
        _image_part(container, key, f"{where}.container", problems, required=False)
    resources = _optional_object(overrides, "computeResources", where, problems)
    for key in RESOURCE_OVERRIDES:
        _scalar_limit(resources, key, f"{where}.computeResources", problems)
    for key in RESOURCE_LIST_OVERRIDES:
        _resource_list(resources, key, f"{where}.computeResources", problems)
    ref = _optional_object(overrides, "workgroupRef", where, problems)
    for key in WORKGROUP_REF_FIELDS:
        _optional_string(ref, key, f"{where}.workgroupRef", problems)
    runtime = _optional_object(overrides, "runtimeEnvironment", where, problems)
    for key in RUNTIME_OVERRIDES:
        _runtime_int(runtime, key, f"{where}.runtimeEnvironment", problems)
    _env_overrides(runtime, f"{where}.runtimeEnvironment.environmentVariables", problems)
    return problems


def validate_template_spec(spec: object) -> list[str]:
    """Problems with a NexusAlgorithmTemplate spec (or an applied configuration) that would
    make the Job impossible to build or invalid; empty list = fine."""
    where = "spec"
    if not isinstance(spec, Mapping):
        return [f"{where}: must be an object"]
    if _too_deep(spec):
        return [f"{where}: nested more than {MAX_NESTING} levels deep"]
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
        found = len(problems)
        for key in CONTAINER_OVERRIDES:
            _image_part(container, key, f"{where}.container", problems, required=True)
        if len(problems) == found:  # the parts are strings: is the whole a reference?
            image = f"{container['registry']}/{container['image']}:{container['versionTag']}"
            problem = reference_problem(image)
            if problem:
                problems.append(f"{where}.container: {shown(image)} is no image: {problem}")
        _optional_string(container, "serviceAccountName", f"{where}.container", problems)
        allow = container.get(ALLOW_IMAGE_OVERRIDE)
        if allow is not None and not isinstance(allow, bool):
            problems.append(f"{where}.container.{ALLOW_IMAGE_OVERRIDE}: must be a boolean")
    _validate_resources(spec, where, problems)
    ref = _required_object(spec, "workgroupRef", where, problems)
    if ref is not None:
        for key in WORKGROUP_REF_FIELDS:
            _required_string(ref, key, f"{where}.workgroupRef", problems)
    _validate_runtime(spec, where, problems)
    errors = _optional_object(spec, "errorHandlingBehaviour", where, problems)
    for key in ("fatalExitCodes", "transientExitCodes"):
        _exit_codes(errors.get(key), f"{where}.errorHandlingBehaviour.{key}", problems)
    datadog = _optional_object(spec, "datadogIntegrationSettings", where, problems)
    mount = datadog.get("mountDatadogSocket")
    if mount is not None and not isinstance(mount, bool):
        problems.append(f"{where}.datadogIntegrationSettings.mountDatadogSocket: must be a boolean")
    problems.extend(mount_problems(spec, where))  # file and storage mounts (kube/mounts.py)
    problems.extend(warm_pool_problems(spec))  # the warm pool (kube/warmpool.py)
    return problems


def validate_workgroup_spec(spec: object) -> list[str]:
    """Problems with a NexusAlgorithmWorkgroup spec; empty list = fine."""
    where = "spec"
    if not isinstance(spec, Mapping):
        return [f"{where}: must be an object"]
    if _too_deep(spec):
        return [f"{where}: nested more than {MAX_NESTING} levels deep"]
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
            _scalar_limit(resources, key, here, problems)
    for key in ("customResources", *RESOURCE_LIST_OVERRIDES):
        _resource_list(resources, key, here, problems)


def _validate_runtime(spec: Mapping[str, Any], where: str, problems: list[str]) -> None:
    runtime = _optional_object(spec, "runtimeEnvironment", where, problems)
    here = f"{where}.runtimeEnvironment"
    for key in RUNTIME_OVERRIDES:
        _runtime_int(runtime, key, here, problems)
    for key in ("environmentVariables", "mappedEnvironmentVariables"):
        items = runtime.get(key)
        if items is not None and not (
            isinstance(items, list) and all(isinstance(item, Mapping) for item in items)
        ):
            problems.append(f"{here}.{key}: must be a list of objects")
    items = runtime.get("environmentVariables")
    for index, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, Mapping):
            _env_item(item, f"{here}.environmentVariables[{index}]", _RELAXED_ENV_NAME, problems)
    annotations = runtime.get("annotations")
    if annotations is not None and not (
        isinstance(annotations, Mapping) and all(isinstance(v, str) for v in annotations.values())
    ):
        problems.append(f"{here}.annotations: must be a map of strings")


def _env_overrides(runtime: Mapping[str, Any], where: str, problems: list[str]) -> None:
    """A run's variables: literal, valid, distinct names that nexusd does not set itself."""
    items = runtime.get("environmentVariables")
    if items is None:
        return
    if not isinstance(items, list):
        problems.append(f'{where}: must be a list of {{"name": ..., "value": ...}} objects')
        return
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        here = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f'{here}: must be an object {{"name": ..., "value": ...}}')
            continue
        if item.get("valueFrom") is not None:
            problems.append(
                f"{here}.valueFrom: a run cannot read the namespace's Secrets or ConfigMaps; "
                "give a literal value (the algorithm's template may use valueFrom)"
            )
        if not _env_item(item, here, _ENV_NAME, problems):
            continue
        name = item["name"]
        if name in NEXUSD_ENV_NAMES:
            problems.append(
                f"{here}.name: {name} is set by nexusd on every Job and cannot be overridden"
            )
        elif name in first:
            problems.append(f"{here}.name: {name!r} is already given at [{first[name]}]")
        first.setdefault(name, index)


def _env_item(
    item: Mapping[str, Any], where: str, rule: re.Pattern[str], problems: list[str]
) -> bool:
    """Check one EnvVar's name against `rule` and its value; True when the name is valid."""
    value = item.get("value")
    if value is not None and not isinstance(value, str):
        problems.append(f"{where}.value: must be a string")
    elif value is not None and "\x00" in value:
        problems.append(f"{where}.value: must not contain NUL characters")
    name = item.get("name")
    if name is None or name == "":
        problems.append(f"{where}.name is required")
    elif not isinstance(name, str):
        problems.append(f"{where}.name: must be a string")
    elif rule.fullmatch(name) is None:
        allowed = (
            "printable ASCII characters other than '='"
            if rule is _RELAXED_ENV_NAME
            else "letters, digits, '_', '-' and '.', not starting with a digit or '..'"
        )
        problems.append(
            f"{where}.name: {shown(name)} is not an environment variable name ({allowed})"
        )
    else:
        return True
    return False


def _exit_codes(codes: object, where: str, problems: list[str]) -> None:
    """Exit codes for a podFailurePolicy `In` rule: non-zero int32s, at most 255 different."""
    if codes is None:
        return
    if not isinstance(codes, list) or not all(_is_int(code) for code in codes):
        problems.append(f"{where}: must be a list of integers")
        return
    for index, code in enumerate(codes):
        if code == 0 or not -(2**31) <= code <= INT32_MAX:
            problems.append(f"{where}[{index}]: {shown(code)} must be a non-zero 32-bit integer")
    if len(set(codes)) > _MAX_EXIT_CODES:
        problems.append(f"{where}: at most {_MAX_EXIT_CODES} different exit codes")


def _check_placeholder(arg: str, where: str, problems: list[str]) -> None:
    """An arg that gets the payload URL or request id must have exactly one `%s` to fill."""
    if "sas-uri" not in arg and "request-id" not in arg:
        return
    if arg.replace("%%", "").count("%s") != 1:
        problems.append(f"{where}: {shown(arg)} must contain exactly one %s placeholder")


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


def _image_part(
    parent: Mapping[str, Any], key: str, where: str, problems: list[str], *, required: bool
) -> None:
    """Registry, image and tag make `<registry>/<image>:<tag>`: each in its grammar there."""
    before = len(problems)
    if required:
        _required_string(parent, key, where, problems)
    else:
        _optional_string(parent, key, where, problems)
    value = parent.get(key)
    if len(problems) == before and isinstance(value, str) and value:
        problem = part_problem(key, value)
        if problem:
            problems.append(f"{where}.{key}: {shown(value)} {problem}")


def _runtime_int(parent: Mapping[str, Any], key: str, where: str, problems: list[str]) -> None:
    """deadlineSeconds / maximumRetries: Go int32s (JSON 1.0 is none: Go's decoder refuses it
    too) that Kubernetes accepts as activeDeadlineSeconds / backoffLimit."""
    value = parent.get(key)
    minimum = RUNTIME_MINIMUMS[key]
    if value is None or (_is_int(value) and minimum <= value <= INT32_MAX):
        return
    wanted = (
        f"a positive integer (at most {INT32_MAX})"
        if minimum
        else f"an integer from 0 to {INT32_MAX}"
    )
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        wanted += f", written without a fraction: {int(value)}"
    problems.append(f"{where}.{key}: {shown(value)} must be {wanted}")


def _scalar_limit(parent: Mapping[str, Any], key: str, where: str, problems: list[str]) -> None:
    """cpuLimit / memoryLimit: a quantity of cpu / memory, used as a limit."""
    value = parent.get(key)
    if value is None or value == "":
        return
    problem = quantity_problem(value, "cpu" if key == "cpuLimit" else "memory", limit=True)
    if problem:
        problems.append(f"{where}.{key}: {problem}")


def _resource_list(parent: Mapping[str, Any], key: str, where: str, problems: list[str]) -> None:
    """A map of resource name to quantity: `limits`, `requests` or `customResources` (limits)."""
    values = parent.get(key)
    if values is None:
        return
    if not isinstance(values, Mapping):
        problems.append(f"{where}.{key}: must be an object of resource name to quantity")
        return
    for name, value in values.items():
        here = f"{where}.{key}.{_key(name)}"
        if not _is_resource_name(name):
            problems.append(
                f"{here}: not a container resource Kubernetes accepts (cpu, memory, "
                "ephemeral-storage, hugepages-<size>, or a prefixed name like nvidia.com/gpu)"
            )
        elif value is not None and value != "":
            problem = quantity_problem(value, name, limit=key != "requests")
            if problem:
                problems.append(f"{here}: {problem}")


def _is_resource_name(name: object) -> bool:
    """apimachinery's validateContainerResourceName: a standard resource or a prefixed one."""
    if not isinstance(name, str):
        return False
    prefix, slash, base = name.partition("/")
    if not slash:
        return name in _STANDARD_RESOURCES or (
            name.startswith("hugepages-") and _QUALIFIED_NAME.fullmatch(name) is not None
        )
    # An extended resource must also make a valid quota name, `requests.<name>`.
    return (
        len(prefix) <= 253 - len("requests.")
        and _DNS_SUBDOMAIN.fullmatch(prefix) is not None
        and _QUALIFIED_NAME.fullmatch(base) is not None
        and not prefix.startswith("requests.")
    )


# --- helpers ----------------------------------------------------------------------------------


def _too_deep(value: object) -> bool:
    """True when more than MAX_NESTING objects and lists nest; walked level by level, so that
    this check itself cannot exceed the recursion limit."""
    level = [value]
    for _ in range(MAX_NESTING):
        level = [child for node in level for child in _children(node)]
    return any(isinstance(node, Mapping | list | tuple) for node in level)


def _children(node: object) -> Iterable[object]:
    if isinstance(node, Mapping):
        return node.values()
    if isinstance(node, list | tuple):
        return node
    return ()


def _key(name: object) -> str:
    """A map key as a path component: itself when it is short and printable."""
    if isinstance(name, str) and len(name) <= 80 and name.isprintable():
        return name
    return shown(name)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
