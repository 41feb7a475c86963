"""Helpers for the rules tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ticketmail.model import InboundEmail
from ticketmail.parsing.mime import parse_email


@pytest.fixture(scope="session")
def parse() -> Callable[[bytes], InboundEmail]:
    """Raw bytes -> InboundEmail, with the project's parser (the real thing, no test double)."""
    return parse_email
