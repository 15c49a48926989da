"""What a template needs in a shard besides itself: the Secrets and ConfigMaps it names.

A run's pod gets its environment and files from the template's `runtimeEnvironment`; every
object named there must exist in the shard the run goes to, so the sync engine copies exactly
these. Upstream read only the env entries; the file mounts (`secretFileMounts`,
`configurationFileMounts`: source object name -> VolumeMount) are read too, because a run whose
mounted Secret is missing in its shard never starts.

Pure functions over the template's JSON: no I/O, sorted, de-duplicated results.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs


@attrs.frozen
class References:
    """The names of the Secrets and ConfigMaps a template references, each sorted."""

    secrets: tuple[str, ...] = ()
    configmaps: tuple[str, ...] = ()


def template_references(template: Mapping[str, Any]) -> References:
    """Every Secret and ConfigMap the template's `spec.runtimeEnvironment` names."""
    spec = template.get("spec")
    environment = spec.get("runtimeEnvironment") if isinstance(spec, Mapping) else None
    if not isinstance(environment, Mapping):
        return References()
    secrets: set[str] = set()
    configmaps: set[str] = set()
    for source in _mappings(environment.get("mappedEnvironmentVariables")):
        secrets.update(_ref_name(source.get("secretRef")))
        configmaps.update(_ref_name(source.get("configMapRef")))
    for variable in _mappings(environment.get("environmentVariables")):
        value_from = variable.get("valueFrom")
        if isinstance(value_from, Mapping):
            secrets.update(_ref_name(value_from.get("secretKeyRef")))
            configmaps.update(_ref_name(value_from.get("configMapKeyRef")))
    secrets.update(_mount_sources(environment.get("secretFileMounts")))
    configmaps.update(_mount_sources(environment.get("configurationFileMounts")))
    return References(secrets=tuple(sorted(secrets)), configmaps=tuple(sorted(configmaps)))


def _mappings(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, Mapping))


def _ref_name(ref: Any) -> Iterator[str]:
    if isinstance(ref, Mapping) and isinstance(ref.get("name"), str) and ref["name"]:
        yield ref["name"]


def _mount_sources(mounts: Any) -> Iterator[str]:
    """The D5 shape is a map keyed by the source object's name; a list of `{name: ...}`
    entries is accepted too, since hand-written manifests use both."""
    if isinstance(mounts, Mapping):
        yield from (name for name in mounts if isinstance(name, str) and name)
    else:
        for mount in _mappings(mounts):
            yield from _ref_name(mount)
