"""`nexusd.kube` may import only `nexusd.core` (and itself) from nexusd (ARCHITECTURE §3-4).
Reads the source files; imports nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

KUBE = Path(__file__).resolve().parents[2] / "src" / "nexusd" / "kube"
ALLOWED = ("nexusd.core", "nexusd.kube")
MINE = [
    "__init__.py",
    "client.py",
    "configuration.py",
    "credentials.py",
    "manifests.py",
    "overrides.py",
]


@pytest.mark.parametrize("name", MINE)
def test_kube_imports_only_core(name):
    tree = ast.parse((KUBE / name).read_text())
    imported = [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    ] + [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    internal = [m for m in imported if m == "nexusd" or m.startswith("nexusd.")]
    assert [m for m in internal if not m.startswith(ALLOWED) and m != "nexusd"] == []
