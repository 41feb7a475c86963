"""Typed custom fields end to end: a form payload and rule values reach the backend as JSON values."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.model import Choice
from ticketmail.parsing.fields import Form, FormField
from ticketmail.parsing.json import parse_json
from ticketmail.pipeline import Pipeline
from ticketmail.rules import load_rules

FORM = Form(
    (
        FormField("phone", "phone"),
        FormField("product", "choice", choices={"p1": "Printer", "p2": "Scanner"}),
        FormField("colours", "choice", choices={"r": "Red", "g": "Green"}, multiple=True),
        FormField("budget", "number"),
        FormField("seats", "number"),
        FormField("urgent", "bool"),
        FormField("order_date", "date"),
        FormField("callback", "datetime"),
        FormField("notes", "memo"),
    )
)

PAYLOAD = {
    "email": "alice@example.org",
    "name": "Alice",
    "subject": "Scanner order",
    "message": "Please quote.",
    "phone": "3185558634X123",
    "product": "Scanner",
    "colours": ["r", "Green"],
    "budget": "12.5",
    "seats": 3,
    "urgent": "true",
    "order_date": "2026-05-01",
    "callback": "2026-05-02T14:30:00+02:00",
    "notes": "  two lines\r\nof notes ",
}

EXPECTED = {
    "phone": "3185558634X123",
    "product": {"key": "p2", "label": "Scanner"},
    "colours": [{"key": "r", "label": "Red"}, {"key": "g", "label": "Green"}],
    "budget": 12.5,
    "seats": 3,
    "urgent": True,
    "order_date": "2026-05-01",
    "callback": "2026-05-02T14:30:00+02:00",
    "notes": "two lines\nof notes",
}

T0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path):
    store = InMemoryBackend() if request.param == "memory" else SQLiteBackend(tmp_path / "t.sqlite3")
    yield store
    store.close()


def _exact(value: object) -> object:
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return (type(value).__name__, value)


def test_form_values_are_stored_typed(backend) -> None:
    request = parse_json(json.dumps(PAYLOAD).encode(), form=FORM)
    assert request.custom_fields["product"] == Choice("p2", "Scanner")
    outcome = Pipeline(backend, clock=lambda: T0).process_request(request)
    assert outcome.action == "created"
    ticket = backend.get_ticket(outcome.ticket)
    assert ticket is not None
    stored = dict(ticket.custom_fields)
    assert _exact(stored) == _exact(EXPECTED)
    # and they survive a JSON round trip (what `show --json` and the API print) unchanged
    assert json.loads(json.dumps(stored)) == EXPECTED


def test_rule_values_keep_their_toml_types(backend) -> None:
    rules = load_rules(
        {
            "rules": [
                {
                    "name": "vip",
                    "conditions": [{"field": "from", "op": "contains", "value": "@example.org"}],
                    "actions": {
                        "custom": {
                            "tier": 2,
                            "vip": True,
                            "weight": 0.5,
                            "label": "gold",
                            "since": dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc),
                        }
                    },
                }
            ]
        },
        source="<test>",
    )
    raw = b"From: Bob <bob@example.org>\r\nTo: help@desk.example\r\nSubject: hi\r\nMessage-ID: <r1@x>\r\n\r\nhello\r\n"
    pipeline = Pipeline(backend, rules=rules, clock=lambda: T0)
    from ticketmail.model import Provenance

    outcome = pipeline.process_email(raw, provenance=Provenance("mb", "file", "r1"))
    assert outcome.action == "created", outcome
    ticket = backend.get_ticket(outcome.ticket)
    assert ticket is not None
    assert _exact(dict(ticket.custom_fields)) == _exact(
        {"tier": 2, "vip": True, "weight": 0.5, "label": "gold", "since": "2026-01-01T12:00:00+00:00"}
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), [1, float("-inf")]])
def test_rules_refuse_values_with_no_json_form(bad: object) -> None:
    from ticketmail.rules.config import RulesConfigError

    data = {"rules": [{"name": "r", "conditions": [], "actions": {"custom": {"x": bad}}}]}
    with pytest.raises(RulesConfigError, match=r"custom\.x"):
        load_rules(data, source="rules.toml")
