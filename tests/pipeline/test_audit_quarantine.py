"""The decision log in words, and operator actions on the quarantine (retry exactly once, discard)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from ticketmail.audit import AuditQuery, describe_provenance, select_audit
from ticketmail.backends.base import Backend
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.errors import BackendError, InvalidValueError, MalformedEmailError
from ticketmail.model import InboundEmail, Provenance
from ticketmail.pipeline import Pipeline
from ticketmail.testing.pipeline_suite import StepClock

MAIL = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: Printer on fire\r\n"
    b"Message-ID: <fire-1@example.org>\r\n"
    b"X-Spam-Flag: NO\r\n"
    b"X-Unrelated: not kept\r\n"
    b"\r\n"
    b"The printer on floor 2 is on fire.\r\n"
)


def _broken_parser(raw: bytes) -> InboundEmail:
    raise MalformedEmailError("the parser of the day could not read this message")


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    store: Backend = InMemoryBackend() if request.param == "memory" else SQLiteBackend(tmp_path / "t.sqlite3")
    yield store
    store.close()


def test_audit_record_says_where_from_who_and_why(backend: Backend) -> None:
    pipeline = Pipeline(backend, clock=StepClock())
    prov = Provenance("file", "file", "ab" * 32, label="incoming/01-printer.eml")
    outcome = pipeline.process_email(MAIL, provenance=prov)
    assert outcome.action == "created"
    (record,) = list(backend.audit_log())
    assert record.id is not None
    assert record.origin == "file incoming/01-printer.eml"
    assert record.sender == "alice@example.org"
    assert record.subject == "Printer on fire"
    names = [name.lower() for name, _ in record.headers]
    assert "x-spam-flag" in names
    assert "from" in names
    assert "message-id" in names
    assert "x-unrelated" not in names
    assert record.ticket == outcome.ticket


def test_provenance_label_is_not_identity() -> None:
    a = Provenance("file", "file", "k", label="a.eml")
    b = Provenance("file", "file", "k", label="b.eml")
    assert a == b
    assert hash(a) == hash(b)
    assert describe_provenance(Provenance("support", "imap", "7:13")) == "IMAP support, UID 13 (UIDVALIDITY 7)"
    assert describe_provenance(Provenance("support", "pop3", "u-1")) == "POP3 support, UIDL u-1"
    assert describe_provenance(None) == "unknown origin"


def test_select_audit_filters_newest_first(backend: Backend) -> None:
    pipeline = Pipeline(backend, clock=StepClock())
    for i in range(5):
        raw = MAIL.replace(b"fire-1", f"fire-{i}".encode()).replace(b"alice@", b"bob@" if i % 2 else b"alice@")
        pipeline.process_email(raw, provenance=Provenance("support" if i < 3 else "sales", "imap", f"1:{i}"))
    records = list(backend.audit_log())
    newest = select_audit(records, AuditQuery(limit=2))
    assert [r.id for r in newest] == [records[-1].id, records[-2].id]
    assert {r.provenance.mailbox for r in select_audit(records, AuditQuery(mailbox="sales")) if r.provenance} == {
        "sales"
    }
    assert all(r.sender == "bob@example.org" for r in select_audit(records, AuditQuery(sender="BOB")))
    assert [r.message_id for r in select_audit(records, AuditQuery(message_id="<fire-3@example.org>"))] == [
        "fire-3@example.org"
    ]
    assert select_audit(records, AuditQuery(since=records[-1].at)) == [records[-1]]
    with pytest.raises(InvalidValueError):
        AuditQuery(outcome="exploded")


def test_retry_succeeds_exactly_once(backend: Backend) -> None:
    prov = Provenance("support", "imap", "9:1")
    failed = Pipeline(backend, clock=StepClock(), parser=_broken_parser).process_email(MAIL, provenance=prov)
    assert failed.action == "failed"
    (record,) = backend.quarantined()
    fixed = Pipeline(backend, clock=StepClock())
    outcome = fixed.retry_quarantined(record)
    assert outcome.action == "created"
    assert backend.quarantined() == []
    assert len(backend.list_tickets()) == 1
    assert fixed.is_processed(prov)
    # The same (stale) record again, or the mailbox copy arriving later, is a duplicate: no second ticket.
    assert fixed.retry_quarantined(record).action == "duplicate"
    assert fixed.process_email(MAIL, provenance=prov).action == "duplicate"
    assert len(backend.list_tickets()) == 1


def test_retry_that_fails_again_stays_quarantined(backend: Backend) -> None:
    prov = Provenance("support", "imap", "9:2")
    broken = Pipeline(backend, clock=StepClock(), parser=_broken_parser)
    broken.process_email(MAIL, provenance=prov)
    (record,) = backend.quarantined()
    assert broken.retry_quarantined(record).action == "failed"
    (again,) = backend.quarantined()
    assert again.id == record.id
    assert again.attempts == 2
    assert backend.list_tickets() == []


def test_retry_is_all_or_nothing(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """When taking the row out of the quarantine fails, the ticket it would have opened is rolled back too."""
    prov = Provenance("support", "imap", "9:3")
    Pipeline(backend, clock=StepClock(), parser=_broken_parser).process_email(MAIL, provenance=prov)
    (record,) = backend.quarantined()
    with backend.unit_of_work() as uow:
        unit_type = type(uow)

    def refuse(self: object, quarantine_id: int) -> None:
        raise BackendError("disk full")

    monkeypatch.setattr(unit_type, "remove_quarantined", refuse)
    fixed = Pipeline(backend, clock=StepClock())
    with pytest.raises(BackendError):
        fixed.retry_quarantined(record)
    monkeypatch.undo()
    assert backend.list_tickets() == []
    assert [q.id for q in backend.quarantined()] == [record.id]
    assert not fixed.is_processed(prov)


def test_discard_leaves_an_audit_record(backend: Backend) -> None:
    prov = Provenance("support", "pop3", "u-7")
    pipeline = Pipeline(backend, clock=StepClock(), parser=_broken_parser)
    pipeline.process_email(MAIL, provenance=prov)
    (record,) = backend.quarantined()
    assert record.id is not None
    assert pipeline.discard_quarantined(record.id, note="spam, discarded")
    assert not pipeline.discard_quarantined(record.id)
    assert backend.quarantined() == []
    last = list(backend.audit_log())[-1]
    assert last.action == "discarded"
    assert last.reasons[0][:2] == ("quarantine.discarded", "spam, discarded")
    assert last.origin == "POP3 support, UIDL u-7"


def test_retry_refuses_a_record_not_read_from_the_backend(backend: Backend) -> None:
    from ticketmail.backends.base import QuarantineRecord

    record = QuarantineRecord(_dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc), MAIL, "x", "y", None)
    with pytest.raises(InvalidValueError):
        Pipeline(backend).retry_quarantined(record)
