"""Checks, one entry point: `nox` runs lint, typecheck, imports and tests; `nox -s perf` the
benchmarks."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "imports", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
LINTED = ["src", "tests", "noxfile.py"]


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("mypy>=1.11", "types-PyYAML", "-e", ".[test]")
    session.run("mypy")


@nox.session(python=PYTHON)
def imports(session: nox.Session) -> None:
    """The layering of ARCHITECTURE.md §4, checked by import-linter (contracts in pyproject)."""
    session.install("import-linter>=2.1", "-e", ".")
    session.run("lint-imports")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def perf(session: nox.Session) -> None:
    """Benchmarks under tests/perf; they print their figures."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/perf", "-s", "--timeout=1800", *session.posargs)
