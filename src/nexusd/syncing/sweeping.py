"""The orphan sweep: copies in a shard that no controller object stands for any more.

Deletes and reference changes are normally applied as they happen; the sweep catches what
was missed (a delete made while no controller ran and no finalizer held the object, a copy
written by an older deployment under the same alias). It only ever touches copies labelled
with this controller's alias, and on a shared Secret/ConfigMap only the owners that are ours:
owners that are neither our template copies nor controller templates were there before us.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nexusd.kube.client import CONFIGMAPS, SECRETS, TEMPLATES, WORKGROUPS
from nexusd.syncing.cache import ObjectCache, is_live, name_of
from nexusd.syncing.copies import TEMPLATE_KIND
from nexusd.syncing.references import template_references

if TYPE_CHECKING:
    from nexusd.syncing.shard_writes import ShardWriter
    from nexusd.syncing.status import Key


async def sweep(writer: ShardWriter, *, controller: ObjectCache) -> list[Key]:
    """Remove unreferenced Secret/ConfigMap copies (or our stale owners on shared ones);
    return the template/workgroup keys whose copies have no live source (the caller's key
    processing deletes those, finalizer bookkeeping included)."""
    shard = writer.cache
    stale: list[Key] = [
        ("template", name_of(obj))
        for obj in shard.items(TEMPLATES)
        if not is_live(controller.get(TEMPLATES, name_of(obj)))
    ]
    stale += [
        ("workgroup", name_of(obj))
        for obj in shard.items(WORKGROUPS)
        if not is_live(controller.get(WORKGROUPS, name_of(obj)))
    ]
    needed = referenced(controller)
    for resource in (SECRETS, CONFIGMAPS):
        for obj in shard.items(resource):
            name = name_of(obj)
            users = needed.get((resource.plural, name), set())
            owners = {
                str(ref.get("name"))
                for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
                if ref.get("kind") == TEMPLATE_KIND
            }
            ours = {o for o in owners if shard.get(TEMPLATES, o) or controller.get(TEMPLATES, o)}
            if not users and owners == ours:
                await writer.delete(resource, name)
                continue
            for template in sorted(ours - users):
                current = shard.get(resource, name)
                if current is not None:
                    await writer.drop_owner(resource, current, template)
    return stale


def referenced(controller: ObjectCache) -> dict[tuple[str, str], set[str]]:
    """(plural, name) of every Secret/ConfigMap a live template references -> its users."""
    needed: dict[tuple[str, str], set[str]] = {}
    for template in controller.items(TEMPLATES):
        if not is_live(template):
            continue
        refs = template_references(template)
        for plural, names in ((SECRETS.plural, refs.secrets), (CONFIGMAPS.plural, refs.configmaps)):
            for ref in names:
                needed.setdefault((plural, ref), set()).add(name_of(template))
    return needed
