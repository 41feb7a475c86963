"""Filters and rules on any header, and the silent `drop` action (spam marked by the mail server)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.model import Address, InboundEmail, MailboxContext, Provenance, message_view
from ticketmail.pipeline import Pipeline
from ticketmail.rules import evaluate, load_rules
from ticketmail.rules.config import RulesConfigError
from ticketmail.rules.filters import Filter, HeaderTest

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
CTX = MailboxContext(name="support")


def message(*headers: tuple[str, str], subject: str = "Cheap watches") -> InboundEmail:
    return InboundEmail(
        message_id="m1@example.org",
        from_=Address("someone@example.org"),
        subject=subject,
        text="hello",
        headers=headers,
    )


def decide(rules: dict, msg: InboundEmail):
    return evaluate(msg, load_rules(rules, source="rules.toml"), context=CTX, now=NOW)


@pytest.mark.parametrize(
    ("entry", "headers", "hit"),
    [
        ("X-Spam-Flag: YES", [("X-Spam-Flag", "YES")], True),
        ("X-Spam-Flag: YES", [("x-spam-flag", " yes ")], True),  # name and value case-insensitive, trimmed
        ("x-spam-flag: yes", [("X-SPAM-FLAG", "YES")], True),
        ("X-Spam-Flag: YES", [("X-Spam-Flag", "NO")], False),
        ("X-Spam-Flag: YES", [("X-Spam-Flag", "NO"), ("X-Spam-Flag", "YES")], True),  # every value counts
        ("X-Spam-Flag", [("X-Spam-Flag", "whatever")], True),  # present
        ("X-Spam-Flag", [("X-Other", "YES")], False),
        ({"name": "X-Spam-Status", "op": "starts_with", "value": "yes,"}, [("X-Spam-Status", "Yes, score=7.1")], True),
        ({"name": "X-Spam-Status", "op": "starts_with", "value": "yes,"}, [("X-Spam-Status", "No, score=0.1")], False),
        ({"name": "X-Spam-Score", "op": "regex", "value": r"^\d{2,}"}, [("X-Spam-Score", "12.5")], True),
        ({"name": "X-Spam-Flag", "value": "yes", "case_sensitive": True}, [("X-Spam-Flag", "YES")], False),
        ({"name": "X-Spam-Flag", "op": "not_equals", "value": "NO"}, [], False),  # absent header never matches
    ],
)
def test_ignore_filter_on_headers(entry, headers, hit) -> None:
    rules = {"filters": [{"name": "spam", "type": "ignore", "headers": [entry]}]}
    decision = decide(rules, message(*headers))
    assert (decision.action == "ignore") is hit
    if hit:
        (reason,) = [r for r in decision.reasons if r.code == "filter.ignore"]
        assert reason.source == "spam"
        assert "matched header" in reason.message
        name = entry.split(":")[0] if isinstance(entry, str) else entry["name"]
        assert reason.value is not None
        assert reason.value.lower().startswith(name.lower() + ": ")


def test_allow_filter_on_a_header() -> None:
    rules = {"filters": [{"name": "internal", "type": "allow", "headers": ["X-Internal: 1"]}]}
    assert decide(rules, message(("X-Internal", "1"))).action == "accept"
    assert decide(rules, message()).action == "ignore"


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ("Bad Name: x", "headers[0]"),
        (":x", "headers[0]"),
        ({"name": "X-A", "op": "nope", "value": "x"}, "headers[0]"),
        ({"name": "X-A", "op": "regex", "value": "(a+)+$"}, "headers[0]"),
        ({"name": "X-A", "op": "contains"}, "headers[0].op"),
        ({"name": "X-A", "extra": 1}, "headers[0]"),
        (3, "headers[0]"),
    ],
)
def test_bad_header_entries_fail_at_load(entry, where) -> None:
    with pytest.raises(RulesConfigError, match=re.escape(f"rules.toml: filters[0].{where}")):
        load_rules({"filters": [{"name": "f", "type": "ignore", "headers": [entry]}]}, source="rules.toml")


def test_rule_drop_ignores_silently_with_its_reason() -> None:
    rules = {
        "rules": [
            {
                "name": "spam",
                "conditions": [{"field": "header:x-spam-flag", "op": "equals", "value": "yes"}],
                "actions": {"drop": True, "drop_reason": "marked as spam by the mail server"},
            },
            {"name": "later", "actions": {"department": "Sales"}},
        ]
    }
    decision = decide(rules, message(("X-Spam-Flag", "YES")))
    assert decision.action == "ignore"
    assert not decision.autorespond
    assert not decision.may_open_ticket
    assert [r.code for r in decision.reasons if r.code.startswith("rule.")] == ["rule.match", "rule.drop"]
    assert decision.reasons[-1].message == "marked as spam by the mail server"
    assert "department" not in decision.attributes  # the run ended at the drop
    assert decide(rules, message(("X-Spam-Flag", "NO"))).action == "accept"


def test_drop_and_reject_together_is_an_error() -> None:
    with pytest.raises(RulesConfigError, match="drop and reject"):
        load_rules({"rules": [{"name": "r", "actions": {"drop": True, "reject": True}}]}, source="r.toml")


def test_rule_header_field_names_are_checked() -> None:
    with pytest.raises(RulesConfigError, match="conditions"):
        load_rules({"rules": [{"name": "r", "conditions": [{"field": "header:a b", "op": "equals", "value": "x"}]}]})


def test_dropped_spam_is_recorded_acknowledged_and_opens_nothing() -> None:
    backend = InMemoryBackend()
    rules = load_rules(
        {"filters": [{"name": "spam", "type": "ignore", "headers": ["X-Spam-Flag: YES"]}]}, source="rules.toml"
    )
    pipeline = Pipeline(backend, rules=rules, clock=lambda: NOW)
    raw = (
        b"From: Forged <ceo@victim.example>\r\nTo: help@desk.example\r\nSubject: Invoice\r\n"
        b"Message-ID: <spam1@x>\r\nX-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=9.9\r\n\r\nPay now\r\n"
    )
    outcome = pipeline.process_email(raw, provenance=Provenance("support", "imap", "1:1"))
    assert outcome.action == "ignored"
    assert outcome.acknowledge
    assert backend.list_tickets() == []
    assert backend.quarantined() == []  # a deliberate drop keeps nothing
    (audit,) = list(backend.audit_log())
    assert audit.action == "ignored"
    assert ("filter.ignore", "Ignore filter 'spam' matched header", "X-Spam-Flag: YES") in audit.reasons


@given(
    name=st.sampled_from(["X-Spam-Flag", "x-spam-flag", "X-SPAM-FLAG"]),
    values=st.lists(st.sampled_from(["YES", "yes", " Yes ", "NO", "", "YESS"]), max_size=4),
)
def test_header_test_matches_like_a_rule_condition(name: str, values: list[str]) -> None:
    """A filter header entry and a `header:` rule condition agree on every message."""
    msg = message(*((name, v) for v in values))
    by_filter = Filter("f", "ignore", headers=(HeaderTest("X-Spam-Flag", "yes"),)).match(message_view(msg))
    by_rule = decide(
        {"rules": [{"name": "r", "conditions": [{"field": "header:X-Spam-Flag", "op": "equals", "value": "yes"}]}]},
        msg,
    )
    assert (by_filter is not None) == any(r.code == "rule.match" for r in by_rule.reasons)
