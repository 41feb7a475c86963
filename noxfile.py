"""Developer sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``corpus``, ``benchmarks``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
CORPUS = ROOT.parent / "shared" / "corpus"
# The Python versions ticketmail supports (pyproject's requires-python and classifiers say the same).
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def _interpreter(version: str) -> str | None:
    """A working interpreter for `version`: `pythonX.Y` on PATH, else a pyenv build of it."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{version}.*/bin/python"))
    for candidate in filter(None, candidates):
        probe = subprocess.run(  # noqa: S603 - an interpreter found on PATH or in pyenv, asked its version
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def oldest_and_newest() -> list[tuple[str, str]]:
    """(version, interpreter) for the oldest and the newest supported Python on this machine."""
    found = [(version, path) for version in SUPPORTED if (path := _interpreter(version))]
    return list(dict.fromkeys([found[0], found[-1]])) if found else []


@nox.session(python=False if os.environ.get("TICKETMAIL_NO_VENV") else None)
def tests(session: nox.Session) -> None:
    """Install system packages the integration tests need (Dovecot), then run the whole suite."""
    session.run("bash", "scripts/system-deps", external=True)
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=False)
def tests_versions(session: nox.Session) -> None:
    """The whole suite again on the oldest and the newest supported Python found (PATH or pyenv).

    Run after `tests` (which installs the system packages). Each interpreter gets its own virtualenv under
    `.nox/`. In CI (`CI=true`) finding no supported interpreter at all is a failure.
    """
    targets = oldest_and_newest()
    if not targets:
        if os.environ.get("CI") == "true":
            session.error(f"no supported Python ({', '.join(SUPPORTED)}) found")
        session.skip("no supported Python found")
    for version, interpreter in targets:
        env_dir = ROOT / ".nox" / f"suite-{version}"
        session.log(f"Python {version}: {interpreter}")
        session.run(interpreter, "-m", "venv", "--clear", str(env_dir), external=True)
        session.run(str(env_dir / "bin" / "pip"), "install", "-q", "-e", ".[test]", external=True)
        session.run(str(env_dir / "bin" / "pytest"), "-q", "-p", "no:cacheprovider", *session.posargs, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check (complexity included) and the structure check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    # Small rooms: modules <= 500 lines, functions <= 60 lines, no import circle (complexity is ruff's C90).
    session.run("python", "scripts/check-structure", "src/ticketmail")


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
