"""Switching single automatic-mail signals off (`settings.ignore_signals`).

Why: `X-Loop` is set by procmail recipes and list software, and a person's mail forwarded through such a
recipe carries it; a desk that gets real mail that way must be able to switch that one signal off without
losing the others. Bounce evidence (DSN, reporter sender) cannot be switched off.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.model import MailboxContext
from ticketmail.parsing.mime import parse_email
from ticketmail.rules import SWITCHABLE_SIGNALS, RulesConfigError, classify_automatic, evaluate, load_rules
from ticketmail.testing.pipeline_suite import build_mail

NOW = dt.datetime(2024, 3, 4, 12, 0, tzinfo=dt.timezone.utc)


def forwarded_with_x_loop() -> bytes:
    raw = build_mail(body="Please help, the printer is broken.\n")
    return raw.replace(b"\nSubject:", b"\nX-Loop: alice@example.org\nSubject:", 1)


def test_x_loop_alone_is_automatic_by_default() -> None:
    email = parse_email(forwarded_with_x_loop())
    automatic = classify_automatic(email)
    assert automatic is not None
    assert [r.code for r in automatic.reasons] == ["auto.loop"]
    decision = evaluate(email, load_rules({}), context=MailboxContext(), now=NOW)
    assert not decision.may_open_ticket


@pytest.mark.parametrize("name", ["auto.loop", "loop", " auto.loop "])
def test_switched_off_x_loop_lets_the_person_open_a_ticket(name: str) -> None:
    email = parse_email(forwarded_with_x_loop())
    assert classify_automatic(email, ignore=[name]) is None
    rules = load_rules({"settings": {"ignore_signals": [name]}})
    assert rules.ignore_signals == frozenset({"loop"})
    decision = evaluate(email, rules, context=MailboxContext(), now=NOW)
    assert decision.automatic is None
    assert decision.may_open_ticket
    assert decision.autorespond


def test_other_signals_still_count_when_one_is_off() -> None:
    raw = forwarded_with_x_loop().replace(b"\nSubject:", b"\nAuto-Submitted: auto-replied\nSubject:", 1)
    automatic = classify_automatic(parse_email(raw), ignore=["auto.loop"])
    assert automatic is not None
    assert [r.code for r in automatic.reasons] == ["auto.auto_submitted"]


def test_bounce_evidence_cannot_be_switched_off() -> None:
    with pytest.raises(ValueError, match="'dsn'"):
        classify_automatic(parse_email(forwarded_with_x_loop()), ignore=["auto.dsn"])
    with pytest.raises(RulesConfigError, match=r"settings\.ignore_signals.*'reporter_sender'"):
        load_rules({"settings": {"ignore_signals": ["reporter_sender"]}})
    with pytest.raises(RulesConfigError, match=r"settings\.ignore_signals"):
        load_rules({"settings": {"ignore_signals": "auto.loop"}})  # a string, not a list


@given(st.sets(st.sampled_from(sorted(SWITCHABLE_SIGNALS))))
def test_switching_off_only_removes_those_reasons(off: set[str]) -> None:
    raw = build_mail(subject="Automatic reply: away", body="I am out of the office until Monday.\n").replace(
        b"\nSubject:",
        b"\nX-Loop: a@example.org\nAuto-Submitted: auto-replied\nPrecedence: bulk\n"
        b"X-Auto-Response-Suppress: All\nList-Id: <l.example>\nSubject:",
        1,
    )
    email = parse_email(raw)
    full = classify_automatic(email)
    assert full is not None
    reduced = classify_automatic(email, ignore=off)
    expected = [r for r in full.reasons if r.code.removeprefix("auto.") not in off]
    kept = [] if reduced is None else list(reduced.reasons)
    # oof_body is only looked for once an auto-reply signal is present, so it may drop out with them.
    assert [r for r in kept if r.code != "auto.oof_body"] == [r for r in expected if r.code != "auto.oof_body"]
    assert (reduced is None) == (not kept)
