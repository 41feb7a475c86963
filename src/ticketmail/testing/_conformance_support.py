"""What the conformance suite's checks share: fault injection, store snapshots, invariants and sample data."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from typing import Any

import attrs

from ticketmail.backends.base import (
    AuditRecord,
    Backend,
    Entry,
    NewEntry,
    NewTicket,
    ProcessedRecord,
    UnitOfWork,
)
from ticketmail.model import Address, Attachment, Provenance

T0 = _dt.datetime(2026, 3, 1, 9, 0, tzinfo=_dt.timezone.utc)

WRITE_METHODS = frozenset(
    {
        "record_processed",
        "create_ticket",
        "append_entry",
        "set_status",
        "add_participant",
        "record_message_id",
        "record_audit",
        "quarantine",
    }
)
"""The unit-of-work methods that change the store (where failures are injected)."""


class InjectedFault(Exception):
    """Raised by `FaultInjectingUnit` at the chosen write; the unit must then roll back."""


class FaultInjectingUnit:
    """Wraps a unit of work and raises `InjectedFault` at write number `fail_at` (0-based).

    With `after` the write is performed first and the fault raised afterwards, so the backend has
    really changed something that must be rolled back.
    """

    def __init__(self, inner: UnitOfWork, fail_at: int | None = None, *, after: bool = True) -> None:
        self._inner = inner
        self._fail_at = fail_at
        self._after = after
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name not in WRITE_METHODS:
            return target

        def write(*args: Any, **kwargs: Any) -> Any:
            index = self.writes
            self.writes += 1
            if index == self._fail_at and not self._after:
                raise InjectedFault(f"injected before write #{index} ({name})")
            result = target(*args, **kwargs)
            if index == self._fail_at and self._after:
                raise InjectedFault(f"injected after write #{index} ({name})")
            return result

        return write


def _quiet_entry(entry: Entry, positions: dict[int, tuple[str, int]]) -> tuple[object, ...]:
    return (
        positions[entry.id],
        entry.kind,
        entry.author,
        entry.body,
        entry.created,
        entry.html,
        entry.message_id,
        entry.attachments,
        entry.files,
    )


def snapshot(backend: Backend, *, keys: Iterable[str] = (), message_ids: Iterable[str] = ()) -> dict[str, object]:
    """Everything observable through the protocol, with backend-assigned ids replaced by positions.

    `keys` and `message_ids` name the ledger keys and message ids to look up (the protocol has no
    listing for them). Two backends that did the same things have equal snapshots.
    """
    tickets = list(backend.list_tickets())
    positions: dict[int, tuple[str, int]] = {}
    threads: dict[str, list[Entry]] = {}
    for ticket in tickets:
        thread = list(backend.entries(ticket.number))
        threads[ticket.number] = thread
        for index, entry in enumerate(thread):
            positions[entry.id] = (ticket.number, index)
    digests = sorted({d for thread in threads.values() for e in thread for d in e.attachments})

    def pos(entry_id: int | None) -> object:
        return None if entry_id is None else positions.get(entry_id, ("?", entry_id))

    with backend.unit_of_work() as uow:
        ledger = {}
        for key in keys:
            record = uow.processed(key)
            ledger[key] = None if record is None else (attrs.evolve(record, entry_id=None), pos(record.entry_id))
        owners = {}
        for mid in message_ids:
            owner = uow.ticket_by_message_id(mid)
            owners[mid] = None if owner is None else owner.number
    return {
        "tickets": tickets,
        "threads": {n: [_quiet_entry(e, positions) for e in t] for n, t in threads.items()},
        "attachments": {d: backend.attachment(d) for d in digests},
        "audit": [(attrs.evolve(r, entry_id=None, id=None), pos(r.entry_id)) for r in backend.audit_log()],
        "quarantine": [attrs.evolve(q, id=None) for q in backend.quarantined()],
        "ledger": ledger,
        "message_ids": owners,
    }


def check_consistency(backend: Backend) -> None:
    """Invariants that hold for any single backend, whatever it did (each failure names the values)."""
    for ticket in backend.list_tickets():
        thread = backend.entries(ticket.number)
        assert ticket.entry_count == len(thread), (
            f"ticket {ticket.number}: entry_count {ticket.entry_count} but {len(thread)} entries in its thread"
        )
        assert ticket.updated >= ticket.created, f"ticket {ticket.number}: updated {ticket.updated} < {ticket.created}"
        assert ticket.created.utcoffset() == _dt.timedelta(0), f"ticket {ticket.number}: created {ticket.created!r}"
        for entry in thread:
            assert entry.ticket == ticket.number, f"entry {entry.id} of {ticket.number} says ticket {entry.ticket}"
            assert ticket.updated >= entry.created, (
                f"ticket {ticket.number}: updated {ticket.updated} is older than entry {entry.id} ({entry.created})"
            )
            for ref in entry.files:
                data = backend.attachment(ref.sha256)
                size = None if data is None else len(data)
                assert size == ref.size, (
                    f"attachment {ref.sha256} of entry {entry.id}: {size} bytes, expected {ref.size}"
                )
        assert (ticket.status == "merged") == (ticket.merged_into is not None), (
            f"ticket {ticket.number}: status {ticket.status!r} with merged_into {ticket.merged_into!r}"
        )


def describe_difference(actual: dict[str, object], expected: dict[str, object]) -> str:
    """The first part of two `snapshot()`s that differs, with both values (for assertion messages)."""
    for part in expected:
        if actual.get(part) != expected[part]:
            return (
                f"{part} differ:\n  backend under test: {actual.get(part)!r}\n  reference model:    {expected[part]!r}"
            )
    return "snapshots are equal"


ALICE = Address("alice@example.org", "Alice")
BOB = Address("bob@example.net", "Bob")
PDF = Attachment("report.pdf", "application/pdf", b"%PDF-1.4 not really a pdf")
PDF_AGAIN = Attachment("scan.pdf", "application/pdf", b"%PDF-1.4 not really a pdf")
PNG = Attachment(
    "logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), disposition="inline", content_id="c1"
)
PROV = Provenance("support", "imap", "7:42")


def typed(value: object) -> object:
    """`value` with every scalar paired with its exact type, so `1 == 1.0 == True` cannot hide a change."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return (type(value) is tuple, [typed(item) for item in value])
    return (type(value).__name__, value)


def new_ticket(number: str, requester: Address = ALICE, at: _dt.datetime = T0, **kw: Any) -> NewTicket:
    return NewTicket(number=number, subject=f"Subject of {number}", requester=requester, created=at, **kw)


def new_entry(mid: str | None, at: _dt.datetime = T0, **kw: Any) -> NewEntry:
    return NewEntry(
        kind=kw.pop("kind", "message"), author=kw.pop("author", ALICE), body="Hello", created=at, message_id=mid, **kw
    )


def open_message(uow: UnitOfWork, number: str, mid: str, key: str, at: _dt.datetime = T0) -> Entry:
    """What the pipeline does for a new conversation: ticket, first entry, ledger row, audit row."""
    uow.create_ticket(new_ticket(number, at=at, tags=("billing",), custom_fields=(("order", "42"),)))
    entry = uow.append_entry(number, new_entry(mid, at, attachments=(PDF, PNG)))
    uow.record_processed(ProcessedRecord(key, "created", at, number, entry.id, mid))
    uow.record_audit(AuditRecord(at, "created", mid, PROV, number, (("thread.new", "new ticket", None),), entry.id))
    return entry
