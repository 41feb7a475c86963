"""Developer sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``corpus``, ``benchmarks``."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
CORPUS = ROOT.parent / "shared" / "corpus"


@nox.session(python=False if os.environ.get("TICKETMAIL_NO_VENV") else None)
def tests(session: nox.Session) -> None:
    """Install system packages the integration tests need (Dovecot), then run the whole suite."""
    session.run("bash", "scripts/system-deps", external=True)
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
def tests_all(session: nox.Session) -> None:
    """The suite on every supported Python (those installed)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-x", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy")  # ticketmail.testing uses hypothesis and pytest types
    session.run("mypy", "--strict", "src/ticketmail")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ (strict: broken links fail)."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
    # One docstring style: no Sphinx roles or reST literals may reach the rendered pages.
    session.run("python", "scripts/check-docs-html", "site")


@nox.session
def corpus(session: nox.Session) -> None:
    """Check the parsers against the public corpora in ../shared/corpus (skipped when absent)."""
    if not CORPUS.is_dir():
        session.skip(f"no corpus at {CORPUS}")
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "tests/corpus", *session.posargs, env={"TICKETMAIL_CORPUS": str(CORPUS)})


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Run every benchmark script and print its figures."""
    session.run("bash", "scripts/system-deps", external=True)
    session.install("-e", ".[test]")
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
