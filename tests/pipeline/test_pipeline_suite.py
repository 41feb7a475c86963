"""The shipped pipeline state machine, run against both shipped backends."""

from __future__ import annotations

import os
import tempfile
import uuid

import pytest

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.testing.pipeline_suite import pipeline_machine

TestInMemoryPipeline = pipeline_machine(InMemoryBackend).TestCase

_TMP = tempfile.mkdtemp(prefix="ticketmail-suite-")


def _sqlite() -> SQLiteBackend:
    return SQLiteBackend(os.path.join(_TMP, f"{uuid.uuid4().hex}.sqlite3"))


TestSQLitePipeline = pytest.mark.slow(pipeline_machine(_sqlite, steps=30).TestCase)
