"""The writes that make one shard match the controller cluster for one template or workgroup.

Decisions are made on the shard's cache of our labelled copies, so an object that is already
right costs no API call. Every write's answer goes back into that cache. A stale cache shows up
as a 409 on replace; the caller retries the key with back-off while the watch catches up.

A template sync, in order (the first failure stops it):
1. every referenced Secret/ConfigMap must exist in the controller cluster (`ErrResourceMissing`);
2. the template copy is created or updated;
3. each referenced object is copied, owned by the shard template; a pre-existing object that
   is not ours and has no owners (or is another controller's copy) is a rogue
   (`ErrResourceExists`), one owned by other templates is shared (this template is appended
   as owner, the others stay);
4. the copies the template no longer references lose it as owner, and are deleted when no
   owner is left (dereferencing; never in the controller cluster).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from nexusd.core.errors import KubeConflict, KubeNotFound, KubeRejected
from nexusd.kube.client import CONFIGMAPS, SECRETS, TEMPLATES, KubeClient, Resource
from nexusd.syncing.cache import Obj, ObjectCache, name_of
from nexusd.syncing.copies import (
    TEMPLATE_KIND,
    is_managed,
    is_managed_by_another,
    needs_update,
    owner_reference,
    replacement,
    shard_copy,
)
from nexusd.syncing.references import template_references

logger = logging.getLogger(__name__)

#: Resolves a Secret/ConfigMap name in the controller cluster (None: missing).
Lookup = Callable[[Resource, str], Obj | None]


class SyncFailure(Exception):
    """A sync that fails until someone changes something; `reason` is the event reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@attrs.define
class ShardWriter:
    """Writes to one shard's namespace; `wrote` tells whether anything changed there."""

    client: KubeClient
    namespace: str
    alias: str
    cache: ObjectCache
    #: the shard's name, for the log
    shard: str = ""
    wrote: bool = False

    async def sync_template(self, template: Mapping[str, Any], lookup: Lookup) -> None:
        """Steps 1-4 of the module docstring."""
        name = name_of(template)
        refs = template_references(template)
        wanted = [(SECRETS, n) for n in refs.secrets] + [(CONFIGMAPS, n) for n in refs.configmaps]
        sources = {(resource, ref): lookup(resource, ref) for resource, ref in wanted}
        for (_resource, ref), source in sources.items():
            if source is None:
                raise SyncFailure(
                    "ErrResourceMissing",
                    f'Resource "{ref}" referenced by NexusAlgorithmTemplate "{name}" '
                    "is missing in the controller cluster",
                )
        copy = await self.ensure(TEMPLATES, shard_copy(template, alias=self.alias))
        owner = owner_reference(copy)
        for (resource, ref), source in sources.items():
            assert source is not None
            try:
                await self._ensure_referenced(resource, source, owner)
            except KubeRejected as exc:
                raise SyncFailure(
                    "ErrResourceSyncError",
                    f'Synchronization/update of a resource "{ref}" referenced by '
                    f'NexusAlgorithmTemplate "{name}" failed with a fatal error {exc}',
                ) from exc
        for resource in (SECRETS, CONFIGMAPS):
            keep = refs.secrets if resource is SECRETS else refs.configmaps
            for obj in self.cache.items(resource):
                if name_of(obj) not in keep and _owned_by(obj, name):
                    await self.drop_owner(resource, obj, name)

    async def delete_template(self, name: str) -> None:
        """Release the template's copies (shared ones keep their other owners), then delete
        its copy: not left to the shard's garbage collector, so it is done when we say so.
        A shard template that is not our copy is left alone, and so is what it owns."""
        if self.cache.get(TEMPLATES, name) is None:
            return
        for resource in (SECRETS, CONFIGMAPS):
            for obj in self.cache.items(resource):
                if _owned_by(obj, name):
                    await self.drop_owner(resource, obj, name)
        await self.delete(TEMPLATES, name)

    async def ensure(self, resource: Resource, desired: Obj) -> Obj:
        """Create `desired`, or update the shard object if it differs; returns the shard's."""
        current = self.cache.get(resource, name_of(desired))
        if current is None:
            current, created = await self._create_or_get(resource, desired)
            if created:
                return current
        if needs_update(current, desired):
            return await self._replace(resource, replacement(current, desired))
        return current

    async def delete(self, resource: Resource, name: str) -> None:
        """Delete our copy `name` if the shard has it."""
        if self.cache.get(resource, name) is None:
            return
        with contextlib.suppress(KubeNotFound):
            await self.client.delete(resource, namespace=self.namespace, name=name)
        self.cache.discard(resource, name)
        self.wrote = True
        logger.info("shard %s: deleted %s %s", self.shard, resource.kind, name)

    async def drop_owner(self, resource: Resource, obj: Obj, template: str) -> None:
        """Remove `template` from the copy's owners; delete the copy when none is left."""
        owners = [ref for ref in _owners(obj) if not _is_template_ref(ref, template)]
        if not owners:
            await self.delete(resource, name_of(obj))
            return
        metadata = {**obj["metadata"], "ownerReferences": owners}
        await self._replace(resource, {**obj, "metadata": metadata})

    async def _ensure_referenced(
        self, resource: Resource, source: Obj, owner: dict[str, Any]
    ) -> None:
        name = name_of(source)
        current = self.cache.get(resource, name)
        if current is None:
            desired = shard_copy(source, alias=self.alias, owners=[owner])
            current, created = await self._create_or_get(resource, desired)
            if created:
                return
        if not is_managed(current, self.alias) and (
            not _owners(current) or is_managed_by_another(current, self.alias)
        ):
            # Another controller's copy counts as foreign too: taking it over would make
            # the two controllers rewrite it in turn.
            raise SyncFailure(
                "ErrResourceExists",
                f'Resource "{name}" already exists and is not managed by any '
                "Machine Learning Algorithm",
            )
        others = [ref for ref in _owners(current) if not _is_template_ref(ref, owner["name"])]
        desired = shard_copy(source, alias=self.alias, owners=[*others, owner])
        if not needs_update(current, desired):
            return
        if resource is SECRETS and current.get("type", "Opaque") != desired["type"]:
            # A Secret's type is immutable: the copy is replaced as a whole.
            await self.delete(resource, name)
            await self._create_or_get(resource, desired)
            return
        await self._replace(resource, replacement(current, desired))

    async def _create_or_get(self, resource: Resource, desired: Obj) -> tuple[Obj, bool]:
        """Create; on AlreadyExists return the shard's object (it may not be ours) and False."""
        try:
            created = await self.client.create(resource, namespace=self.namespace, body=desired)
        except KubeConflict:
            existing = await self.client.get(
                resource, namespace=self.namespace, name=name_of(desired)
            )
            if is_managed(existing, self.alias):
                self.cache.put(resource, existing)
            return existing, False
        self.cache.put(resource, created)
        self.wrote = True
        logger.info("shard %s: created %s %s", self.shard, resource.kind, name_of(desired))
        return created, True

    async def _replace(self, resource: Resource, body: Obj) -> Obj:
        """PUT `body` (carrying the resourceVersion it was decided on: 409 if stale)."""
        updated = await self.client.replace(
            resource, namespace=self.namespace, name=name_of(body), body=body
        )
        self.cache.put(resource, updated)
        self.wrote = True
        logger.info("shard %s: updated %s %s", self.shard, resource.kind, name_of(body))
        return updated


def _owners(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


def _is_template_ref(ref: Mapping[str, Any], template: str) -> bool:
    return ref.get("kind") == TEMPLATE_KIND and ref.get("name") == template


def _owned_by(obj: Mapping[str, Any], template: str) -> bool:
    return any(_is_template_ref(ref, template) for ref in _owners(obj))
