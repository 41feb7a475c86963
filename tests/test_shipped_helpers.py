"""The shipped test helpers explain their failures in a user's project, as in the project's own suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_USER_TEST = '''
import pathlib

from ticketmail.backends import InMemoryBackend
from ticketmail.testing.conformance import BackendConformance


class ForgetfulBackend(InMemoryBackend):
    """A deliberately broken backend: it never lists its tickets."""

    def list_tickets(self, *, limit=None, offset=0):
        return []


class TestForgetful(BackendConformance):
    def make_backend(self, directory: pathlib.Path):
        return ForgetfulBackend()
'''


def test_conformance_failure_shows_the_values_compared(tmp_path: Path) -> None:
    """pytest does not rewrite asserts in installed modules; the plugin entry point registers ours."""
    project = tmp_path / "user_project"
    project.mkdir()
    (project / "test_user_backend.py").write_text(_USER_TEST, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "test_create_and_read_back", "."],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "assert [] == ['AB12CD34']" in out, out
