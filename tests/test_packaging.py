"""The sdist is complete (its tests and docs build can run from it) and the version has one source."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import ticketmail

ROOT = Path(__file__).resolve().parents[1]


def _tracked_files() -> set[str]:
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("not a git checkout (an unpacked sdist): nothing to compare with")
    return {line for line in result.stdout.splitlines() if (ROOT / line).is_file()}


@pytest.mark.slow
def test_sdist_holds_every_tracked_file_and_its_tests_run_from_it(tmp_path: Path) -> None:
    tracked = _tracked_files()
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (archive,) = tmp_path.glob("ticketmail-*.tar.gz")
    assert archive.name == f"ticketmail-{ticketmail.__version__}.tar.gz"
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        tar.extractall(tmp_path / "unpacked", filter="data")
    missing = sorted(tracked - names)
    assert not missing, f"the sdist lacks {len(missing)} tracked file(s): {missing[:20]}"
    # Tests that read the examples, the docs and the scripts pass from the unpacked tree.
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_public_api.py", "tests/cli"],
        cwd=unpacked,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_the_version_has_one_source() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject
    assert 'path = "src/ticketmail/__init__.py"' in pyproject
    from importlib.metadata import version

    assert version("ticketmail") == ticketmail.__version__
