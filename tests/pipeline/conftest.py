"""Shared fixtures for the pipeline tests (helpers live in :mod:`ticketmail.testing.pipeline_suite`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.testing.pipeline_suite import StepClock


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def memory() -> Iterator[InMemoryBackend]:
    backend = InMemoryBackend()
    yield backend
    backend.close()
