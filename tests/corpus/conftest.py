"""Checks against the public corpora in ``../shared/corpus`` (real mail written by other projects).

The corpora are never copied into this repository. When they are not beside the checkout (and
``TICKETMAIL_CORPUS`` does not point at them), this directory is not collected at all, rather than
skipped, so that a CI run without them stays green and a CI run with them really runs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def corpus_root() -> Path | None:
    """The corpus folder, or ``None`` when it is not available."""
    env = os.environ.get("TICKETMAIL_CORPUS")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "corpus")
    for path in candidates:
        if path.is_dir():
            return path
    return None


if corpus_root() is None:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Path of the shared corpus folder."""
    root = corpus_root()
    assert root is not None
    return root
