"""The conformance checks of stored values: custom fields, times, the audit log and the quarantine.

`BackendConformance` inherits them; they use its `backend` fixture.
"""

from __future__ import annotations

import datetime as _dt

import attrs
import pytest

from ticketmail.backends.base import (
    AuditRecord,
    Backend,
    QuarantineAdmin,
    QuarantineRecord,
)
from ticketmail.errors import TicketmailError
from ticketmail.model import Choice, Phone
from ticketmail.testing._conformance_support import PROV, T0, new_entry, new_ticket, typed


class RecordChecks:
    """Checks that what a backend stores reads back as the same values, in the same order."""

    def test_custom_fields_round_trip_typed(self, backend: Backend) -> None:
        """Custom field values come back as the same JSON types, in order, from every reader."""
        given: list[tuple[str, object]] = [
            ("product", Choice("p2", "Scanner")),
            ("budget", 12.5),
            ("seats", 3),
            ("big", 2**53 + 1),
            ("urgent", True),
            ("paid", False),
            ("ordered", _dt.datetime(2026, 3, 1, 9, 30, tzinfo=_dt.timezone(_dt.timedelta(hours=2)))),
            ("naive", _dt.datetime(2026, 3, 1, 9, 30)),
            ("due", _dt.date(2026, 4, 1)),
            ("phone", Phone("3185558634", "123")),
            ("colours", (Choice("r", "Red"), Choice("g", "Grün"))),
            ("note", "12.5"),
            ("empty", ""),
            ("nothing", None),
            ("nested", {"a": [1, 2.0, "x", None, {"b": False}]}),
        ]
        expected: tuple[tuple[str, object], ...] = (
            ("product", {"key": "p2", "label": "Scanner"}),
            ("budget", 12.5),
            ("seats", 3),
            ("big", 2**53 + 1),
            ("urgent", True),
            ("paid", False),
            ("ordered", "2026-03-01T09:30:00+02:00"),
            ("naive", "2026-03-01T09:30:00+00:00"),
            ("due", "2026-04-01"),
            ("phone", "3185558634X123"),
            ("colours", [{"key": "r", "label": "Red"}, {"key": "g", "label": "Grün"}]),
            ("note", "12.5"),
            ("empty", ""),
            ("nothing", None),
            ("nested", {"a": [1, 2.0, "x", None, {"b": False}]}),
        )
        with backend.unit_of_work() as uow:
            created = uow.create_ticket(new_ticket("TYPED001", custom_fields=tuple(given)))
            inside = uow.ticket_by_number("TYPED001")
        outside = backend.get_ticket("TYPED001")
        (listed,) = [t for t in backend.list_tickets() if t.number == "TYPED001"]
        for ticket in (created, inside, outside, listed):
            assert ticket is not None
            assert typed(ticket.custom_fields) == typed(expected)
        assert outside is not None and outside.custom("urgent") is True and outside.custom("missing", 7) == 7

    def test_custom_fields_refuse_unstorable_values(self, backend: Backend) -> None:
        """Values with no JSON form are refused before they reach the backend."""
        for bad in (float("nan"), float("inf"), b"bytes", {1: "x"}, object()):
            with pytest.raises(TicketmailError):
                new_ticket("BAD00001", custom_fields=(("x", bad),))

    def test_datetimes_come_back_in_utc(self, backend: Backend) -> None:
        """Aware datetimes in any zone come back equal and in UTC; naive ones are taken as UTC."""
        zone = _dt.timezone(_dt.timedelta(hours=-5))
        with backend.unit_of_work() as uow:
            uow.create_ticket(new_ticket("UTC00001", at=T0.astimezone(zone)))
            uow.append_entry("UTC00001", new_entry("u@x", T0.replace(tzinfo=None) + _dt.timedelta(seconds=1)))
        ticket = backend.get_ticket("UTC00001")
        assert ticket is not None and ticket.created == T0 and ticket.created.utcoffset() == _dt.timedelta(0)
        assert ticket.updated == T0 + _dt.timedelta(seconds=1)

    # -- audit and quarantine --

    def test_audit_log_in_order(self, backend: Backend) -> None:
        """Audit records come back complete and oldest first, each with an increasing `id`."""
        records = [
            AuditRecord(
                T0 + _dt.timedelta(seconds=i),
                "ignored",
                f"m{i}@x",
                PROV,
                None,
                (("r", "why", str(i)),),
                origin=f"IMAP support, UID {i}" if i % 2 else None,
                sender="alice@example.org" if i % 2 else None,
                subject=f"Printer \u00e9 {i}" if i % 2 else None,
                headers=(("From", "Alice <alice@example.org>"), ("X-Spam-Flag", "NO")) if i % 2 else (),
            )
            for i in range(5)
        ]
        for record in records:
            with backend.unit_of_work() as uow:
                uow.record_audit(record)
        stored = list(backend.audit_log())
        assert [attrs.evolve(r, id=None) for r in stored] == records
        ids = [r.id for r in stored]
        assert all(isinstance(i, int) for i in ids), ids
        assert ids == sorted(set(ids)), ids  # type: ignore[type-var]

    def test_remove_quarantined(self, backend: Backend) -> None:
        """A unit of work can take one message out of the quarantine; a rollback puts it back."""
        with backend.unit_of_work() as uow:
            if not isinstance(uow, QuarantineAdmin):
                pytest.skip("the backend's units of work do not implement the optional QuarantineAdmin")
            first = uow.quarantine(QuarantineRecord(T0, b"one", "malformed_email", "bad", PROV))
            second = uow.quarantine(QuarantineRecord(T0, b"two", "malformed_email", "bad", PROV))
        with pytest.raises(RuntimeError, match="undo"), backend.unit_of_work() as uow:
            assert isinstance(uow, QuarantineAdmin)
            removed = uow.remove_quarantined(first)
            assert removed is not None and removed.raw == b"one" and removed.id == first
            raise RuntimeError("undo")
        assert [q.id for q in backend.quarantined()] == [first, second]
        with backend.unit_of_work() as uow:
            assert isinstance(uow, QuarantineAdmin)
            assert uow.remove_quarantined(first) is not None
            assert uow.remove_quarantined(first) is None
            assert uow.remove_quarantined(10_000) is None
        assert [(q.id, q.raw) for q in backend.quarantined()] == [(second, b"two")]
        with backend.unit_of_work() as uow:  # the same bytes again start a new count
            uow.quarantine(QuarantineRecord(T0, b"one", "malformed_email", "bad", PROV))
        assert sorted(q.attempts for q in backend.quarantined()) == [1, 1]

    def test_quarantine_keeps_bytes_once_per_item(self, backend: Backend) -> None:
        """Quarantine keeps raw bytes; the same item again bumps `attempts` instead of a new row."""
        raw = b"From: x\r\n\r\n\xff\xfe broken"
        with backend.unit_of_work() as uow:
            first = uow.quarantine(QuarantineRecord(T0, raw, "malformed_email", "bad", PROV))
            again = uow.quarantine(QuarantineRecord(T0 + _dt.timedelta(minutes=5), raw, "backend_error", "db", PROV))
            other = uow.quarantine(QuarantineRecord(T0, raw + b"!", "malformed_email", "bad", PROV))
            loose = uow.quarantine(QuarantineRecord(T0, raw, "malformed_email", "bad", None))
        assert first == again
        assert len({first, other, loose}) == 3
        items = backend.quarantined()
        assert [q.id for q in items] == [first, other, loose]
        assert items[0].raw == raw and items[0].attempts == 2 and items[0].reason_code == "backend_error"
        assert items[0].at == T0 + _dt.timedelta(minutes=5) and items[0].provenance == PROV
        assert "bytes>" in repr(items[0]) and "broken" not in repr(items[0])
