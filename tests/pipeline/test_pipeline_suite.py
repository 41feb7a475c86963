"""The shipped pipeline state machine, run against both shipped backends."""

from __future__ import annotations

import os
import tempfile
import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from ticketmail.backends.base import Entry
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.testing.pipeline_suite import pipeline_machine

TestInMemoryPipeline = pipeline_machine(InMemoryBackend).TestCase

_TMP = tempfile.mkdtemp(prefix="ticketmail-suite-")


def _sqlite() -> SQLiteBackend:
    return SQLiteBackend(os.path.join(_TMP, f"{uuid.uuid4().hex}.sqlite3"))


TestSQLitePipeline = pytest.mark.slow(pipeline_machine(_sqlite, steps=30).TestCase)


class _ForgetfulBackend(InMemoryBackend):
    """A deliberately broken backend: a thread never shows its latest entry."""

    def entries(self, number: str) -> list[Entry]:
        return list(super().entries(number))[:-1]


def test_a_broken_backend_fails_with_the_values_involved() -> None:
    """The shipped machine's failure names what differed and both values, without assertion rewriting."""
    machine = pipeline_machine(_ForgetfulBackend, steps=5)
    quick = settings(max_examples=20, derandomize=True, database=None, deadline=None, stateful_step_count=5)
    with pytest.raises(AssertionError) as info:
        run_state_machine_as_test(machine, settings=quick)
    message = str(info.value)
    assert "the message ids on ticket" in message, message
    assert "got [" in message, message
    assert "expected [" in message, message


def test_the_suite_settings_suit_slow_backends() -> None:
    """No per-example deadline (a network database is slow) and the too_slow health check off."""
    machine = pipeline_machine(InMemoryBackend, steps=7)
    chosen = machine.TestCase.settings
    assert chosen.deadline is None
    assert HealthCheck.too_slow in chosen.suppress_health_check
    assert chosen.stateful_step_count == 7
    mine = settings(max_examples=3)
    assert pipeline_machine(InMemoryBackend, settings=mine).TestCase.settings is mine
