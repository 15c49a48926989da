"""Kubernetes I/O: credentials, the async REST client over httpx (list/watch with
resourceVersion, bookmarks and 410 re-lists), Job manifests, override merging and validation,
and the template/workgroup cache. Imports nothing of nexusd but `nexusd.core`.
"""
