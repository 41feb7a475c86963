"""Hooks: one callable or many, called in order, failures logged and counted, never raised."""

from __future__ import annotations

import logging

import pytest

from ticketmail.hooks import HookEvent, Hooks
from ticketmail.pipeline import Outcome


def test_single_callable_or_sequence() -> None:
    def one(event: HookEvent) -> None:
        pass

    assert Hooks(ticket_created=one).ticket_created == (one,)
    assert Hooks(ticket_created=[one, one]).ticket_created == (one, one)
    assert Hooks().message_failed == ()


def test_dispatch_runs_every_hook_and_counts_failures(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def first(event: HookEvent) -> None:
        calls.append("first")
        raise ValueError("boom")

    def second(event: HookEvent) -> None:
        calls.append("second")

    hooks = Hooks(entry_appended=[first, second])
    event = HookEvent("entry_appended", Outcome("appended", ticket="ABC123"))
    with caplog.at_level(logging.ERROR, logger="ticketmail.hooks"):
        assert hooks.dispatch(event) == 1
    assert calls == ["first", "second"]
    assert "ABC123" in caplog.text
    assert "entry_appended" in caplog.text
    # other kinds are untouched
    assert hooks.dispatch(HookEvent("ticket_created", Outcome("created"))) == 0
    assert calls == ["first", "second"]
