"""An in-memory backend: for tests, for embedding, and as the reference model of the conformance suite.

Everything lives in plain dicts and lists guarded by one re-entrant lock. A unit of work holds the lock for
its whole `with` block, so units are serialized exactly as SQLite's `BEGIN IMMEDIATE` serializes them,
and readers never see half a unit.

Rollback uses an undo log rather than copying the store per unit: every write first pushes a closure that
restores what it changes, and a failing unit runs them newest first. That keeps a unit's cost proportional
to what it touches (ingesting 10,000 messages stays linear), where copy-on-write of the whole state would be
quadratic.
"""

from __future__ import annotations

import datetime as _dt
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import attrs

from ticketmail.backends._common import (
    QuarantineKey,
    check_direction,
    check_kind,
    check_status_change,
    opened_ticket,
    quarantine_key,
    stored_entry,
)
from ticketmail.backends.base import (
    AuditRecord,
    BaseBackend,
    Direction,
    Entry,
    LedgerConflictError,
    NewEntry,
    NewTicket,
    ProcessedRecord,
    QuarantineRecord,
    Ticket,
    TicketNotFoundError,
    TicketNumberTakenError,
    TicketStatus,
    as_utc,
    dump_custom_value,
    normalize_message_id,
)
from ticketmail.errors import BackendError, InvalidValueError

__all__ = ["InMemoryBackend"]


class _Store:
    """The mutable state; only touched while the backend's lock is held."""

    def __init__(self) -> None:
        self.tickets: dict[str, Ticket] = {}
        self.entries: dict[str, list[Entry]] = {}
        self.attachments: dict[str, bytes] = {}
        self.message_ids: dict[str, tuple[str, Direction]] = {}
        self.ledger: dict[str, ProcessedRecord] = {}
        self.audit: list[AuditRecord] = []
        self.quarantine: dict[int, QuarantineRecord] = {}  # by id, in insertion order
        self.quarantine_index: dict[QuarantineKey, int] = {}  # (provenance, bytes) -> id
        self.next_quarantine_id = 1
        self.by_requester: dict[str, list[_dt.datetime]] = {}
        self.next_entry_id = 1


class _MemoryUnitOfWork:
    """One unit of work on an `InMemoryBackend`; writes push their undo onto `undo`."""

    def __init__(self, store: _Store) -> None:
        self._store = store
        self.undo: list[Callable[[], object]] = []
        self.open = True

    # -- plumbing --

    def _state(self) -> _Store:
        if not self.open:
            raise BackendError("this unit of work has ended; open a new one with backend.unit_of_work()")
        return self._store

    def _set(self, mapping: dict[str, Ticket], key: str, value: Ticket) -> None:
        missing = key not in mapping
        old = mapping.get(key)

        def undo() -> None:
            if missing:
                del mapping[key]
            else:
                mapping[key] = old  # type: ignore[assignment]

        self.undo.append(undo)
        mapping[key] = value

    def _ticket(self, number: str) -> Ticket:
        ticket = self._state().tickets.get(number)
        if ticket is None:
            raise TicketNotFoundError(f"no ticket with number {number!r}", field="number")
        return ticket

    # -- reads --

    def processed(self, key: str) -> ProcessedRecord | None:
        """The ledger row for `key`, if any."""
        return self._state().ledger.get(key)

    def ticket_by_number(self, number: str) -> Ticket | None:
        """The ticket with this number, or `None`."""
        return self._state().tickets.get(number)

    def ticket_by_message_id(self, message_id: str) -> Ticket | None:
        """The ticket whose thread holds this message id, or `None`."""
        store = self._state()
        found = store.message_ids.get(normalize_message_id(message_id))
        return None if found is None else store.tickets[found[0]]

    def number_exists(self, number: str) -> bool:
        """Whether the number is taken."""
        return number in self._state().tickets

    def count_tickets_by_requester(self, email: str, since: _dt.datetime) -> int:
        """Tickets opened by `email` (case-insensitive) at or after `since`."""
        cutoff = as_utc(since)
        return sum(1 for created in self._state().by_requester.get(email.casefold(), ()) if created >= cutoff)

    # -- writes --

    def record_processed(self, record: ProcessedRecord) -> None:
        """Add a ledger row (identical again: no-op; conflicting: error)."""
        ledger = self._state().ledger
        existing = ledger.get(record.key)
        if existing is not None:
            if existing == record:
                return
            raise LedgerConflictError(f"ledger key {record.key!r} is already recorded with another effect")
        self.undo.append(lambda: ledger.pop(record.key, None))
        ledger[record.key] = record

    def create_ticket(self, ticket: NewTicket) -> Ticket:
        """Store a new open ticket."""
        store = self._state()
        if ticket.number in store.tickets:
            raise TicketNumberTakenError(f"ticket number {ticket.number!r} is already taken", field="number")
        created = as_utc(ticket.created)
        # A copy through the JSON form, as a database would store it: the caller's lists and mappings are
        # not shared, and the values read back are exactly the JSON types.
        stored = opened_ticket(ticket, created, [(n, dump_custom_value(v)) for n, v in ticket.custom_fields])
        self._set(store.tickets, ticket.number, stored)
        entries = store.entries
        entries[ticket.number] = []
        self.undo.append(lambda: entries.pop(ticket.number, None))
        key = ticket.requester.email.casefold()
        times = store.by_requester.setdefault(key, [])
        times.append(created)
        self.undo.append(times.pop)
        return stored

    def append_entry(self, number: str, entry: NewEntry) -> Entry:
        """Append an entry, storing attachments once and recording its message id."""
        check_kind(entry.kind)
        store = self._state()
        ticket = self._ticket(number)
        for attachment in entry.attachments:
            if attachment.sha256 not in store.attachments:
                digest = attachment.sha256
                store.attachments[digest] = attachment.data
                self.undo.append(functools.partial(store.attachments.pop, digest, None))
        message_id = normalize_message_id(entry.message_id) if entry.message_id is not None else None
        created = as_utc(entry.created)
        entry_id = store.next_entry_id
        stored = stored_entry(number, entry, entry_id, message_id)

        def restore_counter() -> None:
            store.next_entry_id = entry_id

        self.undo.append(restore_counter)
        store.next_entry_id = entry_id + 1
        thread = store.entries[number]
        thread.append(stored)
        self.undo.append(thread.pop)
        self._set(
            store.tickets,
            number,
            attrs.evolve(ticket, entry_count=ticket.entry_count + 1, updated=max(ticket.updated, created)),
        )
        if message_id:
            self._record_mid(number, message_id, "inbound")
        return stored

    def set_status(
        self, number: str, status: TicketStatus, *, merged_into: str | None = None, at: _dt.datetime | None = None
    ) -> None:
        """Reopen, close or merge a ticket."""
        store = self._state()
        ticket = self._ticket(number)
        check_status_change(number, status, merged_into, store.tickets.get)
        updated = ticket.updated if at is None else max(ticket.updated, as_utc(at))
        self._set(store.tickets, number, attrs.evolve(ticket, status=status, merged_into=merged_into, updated=updated))

    def add_participant(self, number: str, email: str) -> None:
        """Add a participant (idempotent, case-insensitive)."""
        store = self._state()
        ticket = self._ticket(number)
        wanted = email.casefold()
        if any(p.casefold() == wanted for p in ticket.participants):
            return
        self._set(store.tickets, number, attrs.evolve(ticket, participants=(*ticket.participants, email)))

    def record_message_id(self, number: str, message_id: str, direction: Direction) -> None:
        """Remember a message id of the ticket's thread (first ticket wins)."""
        self._ticket(number)
        check_direction(direction)
        self._record_mid(number, normalize_message_id(message_id), direction)

    def _record_mid(self, number: str, message_id: str, direction: Direction) -> None:
        if not message_id:
            raise InvalidValueError("message_id must not be empty", field="message_id")
        mids = self._store.message_ids
        if message_id in mids:
            return
        mids[message_id] = (number, direction)
        self.undo.append(lambda: mids.pop(message_id, None))

    def record_audit(self, record: AuditRecord) -> None:
        """Append to the audit log (ids count up from 1)."""
        audit = self._state().audit
        audit.append(attrs.evolve(record, id=len(audit) + 1))
        self.undo.append(audit.pop)

    def quarantine(self, record: QuarantineRecord) -> int:
        """Keep a failed message once per (provenance, bytes); return its id."""
        store = self._state()
        key = quarantine_key(record)
        existing = store.quarantine_index.get(key)
        if existing is not None:
            old = store.quarantine[existing]
            new = attrs.evolve(old, at=record.at, reason_code=record.reason_code, reason=record.reason)
            store.quarantine[existing] = attrs.evolve(new, attempts=old.attempts + 1)

            def undo_update() -> None:
                store.quarantine[existing] = old

            self.undo.append(undo_update)
            return existing
        new_id = store.next_quarantine_id
        store.next_quarantine_id += 1
        store.quarantine[new_id] = attrs.evolve(record, id=new_id, attempts=1)
        store.quarantine_index[key] = new_id

        def undo_insert() -> None:
            store.quarantine.pop(new_id, None)
            store.quarantine_index.pop(key, None)
            store.next_quarantine_id = new_id

        self.undo.append(undo_insert)
        return new_id

    def remove_quarantined(self, quarantine_id: int) -> QuarantineRecord | None:
        """Delete quarantine row `quarantine_id` and return it, or `None` when there is no such row."""
        store = self._state()
        record = store.quarantine.pop(quarantine_id, None)
        if record is None:
            return None
        key = quarantine_key(record)
        store.quarantine_index.pop(key, None)

        def undo_remove() -> None:
            store.quarantine[quarantine_id] = record
            store.quarantine = dict(sorted(store.quarantine.items()))
            store.quarantine_index[key] = quarantine_id

        self.undo.append(undo_remove)
        return record


class InMemoryBackend(BaseBackend):
    """A complete `Backend` in process memory.

    Thread-safe: one re-entrant lock serializes units of work and reads. A unit of work opened while the
    same thread already has one open raises `BackendError` (nested transactions
    are not supported by the SQLite backend either). Nothing survives the process.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._store = _Store()
        self._active = threading.local()
        self._closed = False

    def __repr__(self) -> str:
        return f"InMemoryBackend(tickets={len(self._store.tickets)})"

    @contextmanager
    def unit_of_work(self) -> Iterator[_MemoryUnitOfWork]:
        """Begin a unit of work; commit on normal exit, undo every write on an exception."""
        if getattr(self._active, "open", False):
            raise BackendError("a unit of work is already open in this thread; nested units are not supported")
        with self._lock:
            self._check_open()
            uow = _MemoryUnitOfWork(self._store)
            self._active.open = True
            try:
                yield uow
            except BaseException:
                for undo in reversed(uow.undo):
                    undo()
                raise
            finally:
                uow.open = False
                self._active.open = False

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the backend is closed")

    def get_ticket(self, number: str) -> Ticket | None:
        """One ticket by number."""
        with self._lock:
            self._check_open()
            return self._store.tickets.get(number)

    def list_tickets(self, *, limit: int | None = None, offset: int = 0) -> Sequence[Ticket]:
        """Tickets oldest first; `offset`/`limit` page through them."""
        with self._lock:
            self._check_open()
            tickets = list(self._store.tickets.values())
        end = None if limit is None else offset + max(limit, 0)
        return tickets[offset:end]

    def entries(self, number: str) -> Sequence[Entry]:
        """A ticket's thread, oldest first."""
        with self._lock:
            self._check_open()
            return list(self._store.entries.get(number, ()))

    def attachment(self, sha256: str) -> bytes | None:
        """An attachment's bytes by digest."""
        with self._lock:
            self._check_open()
            return self._store.attachments.get(sha256)

    def audit_log(self) -> Iterator[AuditRecord]:
        """Every decision, oldest first (a snapshot taken when called)."""
        with self._lock:
            self._check_open()
            records = list(self._store.audit)
        return iter(records)

    def quarantined(self) -> Sequence[QuarantineRecord]:
        """Every quarantined message, oldest first."""
        with self._lock:
            self._check_open()
            return list(self._store.quarantine.values())

    def close(self) -> None:
        """Mark the backend closed; later calls raise `BackendError`."""
        self._closed = True
