"""Refused mail is kept with its bytes, and an operator's retry under new rules decides it again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ticketmail.backends.base import Backend
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.model import Provenance
from ticketmail.pipeline import Pipeline
from ticketmail.rules import load_rules
from ticketmail.testing.pipeline_suite import StepClock

MAIL = (
    b"From: Bob <bob@partner.example>\r\nTo: support@example.com\r\nSubject: BUY NOW our new printers\r\n"
    b"Message-ID: <offer-1@partner.example>\r\n\r\nA real partner, wrongly refused.\r\n"
)
STRICT = load_rules(
    {
        "rules": [
            {
                "name": "no-ads",
                "conditions": [{"field": "subject", "op": "contains", "value": "buy now"}],
                "actions": {"reject": True, "reject_reason": "advertising"},
            }
        ]
    }
)


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    store: Backend = InMemoryBackend() if request.param == "memory" else SQLiteBackend(tmp_path / "t.sqlite3")
    yield store
    store.close()


def test_rejected_mail_is_kept_and_a_retry_decides_it_again(backend: Backend) -> None:
    prov = Provenance("support", "imap", "7:1")
    strict = Pipeline(backend, rules=STRICT, clock=StepClock())
    first = strict.process_email(MAIL, provenance=prov)
    assert (first.action, first.acknowledge) == ("rejected", True)
    (record,) = backend.quarantined()
    assert (record.raw, record.reason_code, record.provenance) == (MAIL, "rejected", prov)
    # the mailbox copy coming again (a lost acknowledgement) is a duplicate: kept once, not twice
    assert strict.process_email(MAIL, provenance=prov).action == "duplicate"
    assert len(backend.quarantined()) == 1

    # refused again under the same rules: still kept (a new row for the new decision), never lost
    again = strict.retry_quarantined(record)
    assert again.action == "rejected"
    (kept,) = backend.quarantined()
    assert kept.raw == MAIL

    # the rule was wrong: with the fixed rules the retry opens the ticket and the message leaves the quarantine
    relaxed = Pipeline(backend, clock=StepClock())
    outcome = relaxed.retry_quarantined(kept)
    assert outcome.action == "created"
    assert backend.quarantined() == []
    assert [t.subject for t in backend.list_tickets()] == ["BUY NOW our new printers"]
    # a stale record retried again, or the mailbox copy again: no second ticket
    assert relaxed.retry_quarantined(kept).action == "duplicate"
    assert relaxed.process_email(MAIL, provenance=prov).action == "duplicate"
    assert len(backend.list_tickets()) == 1
