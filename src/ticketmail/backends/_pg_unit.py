"""The PostgreSQL unit of work: the reads and writes of one message, in as few round trips as it allows.

The unit runs in psycopg's pipeline mode: a statement whose result the unit does not need is sent without
waiting, and the next read (or the commit) waits for everything before it. What the unit learnt in its
own transaction lets it skip waits that would only confirm what it knows:

* a ledger key it locked and found unrecorded cannot be recorded by anyone else before it commits, so
  `record_processed()` needs no conflict check;
* `number_exists()` locks the number too; a number found free under that lock is inserted by
  `create_ticket()` without waiting (no other unit can take it), and the same read draws the id of the
  ticket's first entry, so `append_entry()` to a ticket created in this unit waits for nothing either
  (nobody else can append to that ticket before this unit commits, so the id keeps thread order);
* tickets are never deleted, so a ticket the unit has seen needs no existence check before
  `add_participant()` or `record_message_id()`;
* inserts nothing in the unit reads back before it commits (ledger rows of keys it locked and found
  unrecorded, audit rows) are held and sent as one statement (data-modifying `WITH` clauses) before the
  next ledger read or with the commit, so a message's ledger and audit rows cost one statement, not three.

Any error of a statement sent without waiting still ends the unit (at the next read or at the commit).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import psycopg

from ticketmail.backends import _pg_rows as q
from ticketmail.backends._common import (
    audit_params,
    check_direction,
    check_kind,
    check_status_change,
    opened_ticket,
    quarantine_key,
    stored_entry,
    ticket_params,
)
from ticketmail.backends._pg_replay import ReplayingUnit
from ticketmail.backends.base import (
    AttachmentRef,
    AuditRecord,
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
from ticketmail.backends.postgres_schema import LOCK_CLASS, lock_key, translate_errors
from ticketmail.errors import InvalidValueError


def _entry_values(entry: NewEntry, message_id: str | None) -> tuple[object, ...]:
    author = entry.author
    return (
        entry.kind,
        None if author is None else author.email,
        None if author is None else author.name,
        entry.body,
        entry.html,
        as_utc(entry.created),
        message_id,
    )


class PgUnitOfWork(ReplayingUnit):
    """One `READ COMMITTED` transaction on a pooled connection (see the module docstring)."""

    KEEP_IDS: ClassVar[dict[str, Callable[[Any], dict[str, Any]]]] = {
        "_append_entry": lambda entry: {"entry_id": entry.id},
        "_quarantine": lambda quarantine_id: {"quarantine_id": quarantine_id},
    }

    def __init__(self, conn: psycopg.Connection[Any], *, schema: str, entry_sequence: str) -> None:
        super().__init__(conn)
        self._schema = schema
        self._entry_sequence = entry_sequence
        self._absent: set[str] = set()  # ledger keys this unit locked and found unrecorded
        self._free: set[str] = set()  # ticket numbers this unit locked and found free
        self._known: set[str] = set()  # ticket numbers this unit has seen exist
        self._created: set[str] = set()  # ticket numbers this unit created
        self._entry_id: int | None = None  # an entry id drawn for a ticket this unit creates
        self._held: list[tuple[str, tuple[object, ...]]] = []  # inserts not sent yet (see `_flush()`)

    def _forget(self) -> None:
        for learnt in (self._absent, self._free, self._known, self._created):
            learnt.clear()
        self._entry_id = None
        self._held.clear()

    def _hold(self, statement: str, params: tuple[object, ...]) -> None:
        self._held.append((statement, params))

    def _flush(self) -> None:
        """Send the held inserts as one statement, without waiting for it."""
        held = self._held
        if not held:
            return
        statement, params = held[0] if len(held) == 1 else q.combined_inserts(held)
        held.clear()
        self._conn.execute(statement, params)

    def _before_commit(self) -> None:
        with translate_errors("write the ledger and the audit log"):
            self._flush()

    def _lock(self, *parts: str) -> None:
        self._conn.execute(q.ADVISORY_LOCK, (LOCK_CLASS, lock_key(self._schema, *parts)))

    def _lock_ticket(self, number: str) -> None:
        """Lock the ticket row; raise `TicketNotFoundError` unless the unit knows the ticket exists."""
        cur = self._conn.execute(q.TICKET_LOCK, (number,))
        if number not in self._known:
            if cur.fetchone() is None:
                raise TicketNotFoundError(f"no ticket with number {number!r}", field="number")
            self._known.add(number)

    def _seen(self, ticket: Ticket | None) -> Ticket | None:
        if ticket is not None:
            self._known.add(ticket.number)
        return ticket

    # -- reads --

    def processed(self, key: str) -> ProcessedRecord | None:
        """The ledger row for `key`, if any (waits for a concurrent unit holding the same key)."""
        return self._call(self._processed_many, (key,))[0]  # type: ignore[no-any-return]

    def processed_many(self, keys: Sequence[str]) -> tuple[ProcessedRecord | None, ...]:
        """The ledger rows for `keys` (in their order) in one round trip; see `processed()`."""
        return self._call(self._processed_many, tuple(keys))  # type: ignore[no-any-return]

    def _processed_many(self, keys: tuple[str, ...]) -> tuple[ProcessedRecord | None, ...]:
        locks = [lock_key(self._schema, key) for key in keys]
        with translate_errors("read the ledger"):
            self._flush()
            rows = self._conn.execute(q.LEDGER_LOOKUP, (LOCK_CLASS, locks, list(keys))).fetchall()
        found = {row[0]: ProcessedRecord(*row) for row in rows}
        for key in keys:
            if key in found:
                self._absent.discard(key)
            else:
                self._absent.add(key)  # locked and absent: nobody else can record it before this unit ends
        return tuple(found.get(key) for key in keys)

    def ticket_by_number(self, number: str) -> Ticket | None:
        """The ticket with this number, or `None`."""
        return self._call(self._ticket_by, q.BY_NUMBER, number)  # type: ignore[no-any-return]

    def ticket_by_message_id(self, message_id: str) -> Ticket | None:
        """The ticket whose thread holds this message id, or `None`."""
        return self._call(self._ticket_by, q.BY_MESSAGE_ID, normalize_message_id(message_id))  # type: ignore[no-any-return]

    def _ticket_by(self, query: str, param: str) -> Ticket | None:
        with translate_errors("read a ticket"):
            row = self._conn.execute(query, (param,)).fetchone()
        return self._seen(None if row is None else q.ticket_from_row(row))

    def _locked_ticket(self, number: str) -> Ticket | None:
        with translate_errors("read a ticket"):
            row = self._conn.execute(q.BY_NUMBER_LOCKED, (number,)).fetchone()
        return self._seen(None if row is None else q.ticket_from_row(row))

    def number_exists(self, number: str) -> bool:
        """Whether the number is taken (the number stays locked by this unit until it ends)."""
        return self._call(self._number_exists, number)  # type: ignore[no-any-return]

    def _number_exists(self, number: str) -> bool:
        with translate_errors("check a ticket number"):
            self._lock("number", number)
            row = self._conn.execute(q.NUMBER_CHECK, (number, self._entry_id is None, self._entry_sequence)).fetchone()
        found = int(row[0]) if row is not None else -1
        if found < 0:
            self._known.add(number)
            return True
        self._free.add(number)
        if found > 0:
            self._entry_id = found
        return False

    def count_tickets_by_requester(self, email: str, since: _dt.datetime) -> int:
        """Tickets opened by `email` (case-insensitive) at or after `since`."""
        return self._call(self._count, email, since)  # type: ignore[no-any-return]

    def _count(self, email: str, since: _dt.datetime) -> int:
        with translate_errors("count tickets"):
            row = self._conn.execute(
                "SELECT count(*) FROM tickets WHERE requester_key = %s AND created >= %s",
                (email.casefold(), as_utc(since)),
            ).fetchone()
        return int(row[0]) if row is not None else 0

    # -- writes --

    def record_processed(self, record: ProcessedRecord) -> None:
        """Add a ledger row (identical again: no-op; conflicting: error)."""
        self._call(self._record_processed, record)

    def _record_processed(self, record: ProcessedRecord) -> None:
        values = (record.key, record.action, record.at, record.ticket, record.entry_id, record.message_id)
        if record.key in self._absent:
            # This unit holds the key's advisory lock and saw no row: the insert cannot conflict, so it is
            # sent without waiting for its result (an unexpected failure still fails the commit).
            self._absent.discard(record.key)
            self._hold(q.LEDGER_INSERT, values)
            return
        with translate_errors("write the ledger"):
            self._flush()
            cur = self._conn.execute(q.LEDGER_INSERT + " ON CONFLICT (key) DO NOTHING", values)
        if cur.rowcount == 1:
            return
        if self._processed_many((record.key,))[0] != record:
            raise LedgerConflictError(f"ledger key {record.key!r} is already recorded with another effect")

    def create_ticket(self, ticket: NewTicket) -> Ticket:
        """Store a new open ticket."""
        return self._call(self._create_ticket, ticket)  # type: ignore[no-any-return]

    def _create_ticket(self, ticket: NewTicket) -> Ticket:
        created = as_utc(ticket.created)
        tags = tuple(dict.fromkeys(ticket.tags))
        # Typed values as JSON text (numbers stay numbers, choices key and label, ISO 8601 datetimes).
        stored = [(name, dump_custom_value(value)) for name, value in ticket.custom_fields]
        number = ticket.number
        with translate_errors("create a ticket"):
            if number in self._free:
                self._conn.execute(q.TICKET_INSERT_FREE, ticket_params(ticket, created))
            else:
                self._lock("number", number)
                if self._conn.execute(q.TICKET_INSERT_CHECKED, ticket_params(ticket, created)).fetchone() is None:
                    self._known.add(number)
                    raise TicketNumberTakenError(f"ticket number {number!r} is already taken", field="number")
            self._free.discard(number)
            self._created.add(number)
            self._known.add(number)
            with self._conn.cursor() as cur:
                if tags:
                    cur.executemany(q.TAGS_INSERT, [(number, tag, i) for i, tag in enumerate(tags)])
                if stored:
                    cur.executemany(q.CUSTOM_INSERT, [(number, name, i, text) for i, (name, text) in enumerate(stored)])
        return opened_ticket(ticket, created, stored)

    def append_entry(self, number: str, entry: NewEntry) -> Entry:
        """Append an entry, storing attachments once and recording its message id."""
        return self._call(self._append_entry, number, entry)  # type: ignore[no-any-return]

    def _append_entry(self, number: str, entry: NewEntry, entry_id: int | None = None) -> Entry:
        check_kind(entry.kind)
        message_id = normalize_message_id(entry.message_id) if entry.message_id is not None else None
        if entry_id is None and number in self._created and self._entry_id is not None:
            entry_id, self._entry_id = self._entry_id, None
        # A replay keeps the id the caller was given (identity values are never handed out twice).
        sql = q.ENTRY_INSERTS[(entry_id is not None, bool(message_id))]
        params = (as_utc(entry.created), number, *(() if entry_id is None else (entry_id,)))
        params += _entry_values(entry, message_id) + ((message_id,) if message_id else ())
        with translate_errors("append an entry"):
            cur = self._conn.execute(sql, params)
            if entry_id is None or number not in self._created:
                row = cur.fetchone()  # the id, and whether the ticket exists
                if row is None:
                    raise TicketNotFoundError(f"no ticket with number {number!r}", field="number")
                entry_id = int(row[0])
            self._store_attachments(entry, entry_id)
        return stored_entry(number, entry, entry_id, message_id)

    def _store_attachments(self, entry: NewEntry, entry_id: int) -> None:
        refs = tuple(AttachmentRef.from_attachment(a) for a in entry.attachments)
        if refs:
            with self._conn.cursor() as cur:
                cur.executemany(q.ATTACHMENT_INSERT, [(a.sha256, a.size, a.data) for a in entry.attachments])
                cur.executemany(
                    q.ENTRY_ATTACHMENT_INSERT,
                    [
                        (entry_id, i, r.sha256, r.filename, r.content_type, r.size, r.disposition, r.content_id)
                        for i, r in enumerate(refs)
                    ],
                )

    def set_status(
        self, number: str, status: TicketStatus, *, merged_into: str | None = None, at: _dt.datetime | None = None
    ) -> None:
        """Reopen, close or merge a ticket (the tickets of a merge chain are locked while it is checked)."""
        self._call(self._set_status, number, status, merged_into=merged_into, at=at)

    def _set_status(
        self, number: str, status: TicketStatus, *, merged_into: str | None = None, at: _dt.datetime | None = None
    ) -> None:
        with translate_errors("change a ticket's status"):
            self._lock_ticket(number)
        check_status_change(number, status, merged_into, self._locked_ticket)
        with translate_errors("change a ticket's status"):
            self._conn.execute(q.STATUS_UPDATE, (status, merged_into, None if at is None else as_utc(at), number))

    def add_participant(self, number: str, email: str) -> None:
        """Add a participant (idempotent, case-insensitive)."""
        self._call(self._add_participant, number, email)

    def _add_participant(self, number: str, email: str) -> None:
        with translate_errors("add a participant"):
            self._lock_ticket(number)  # positions are computed after the lock, by the next statement
            self._conn.execute(q.PARTICIPANT_INSERT, (email.casefold(), email, number))

    def record_message_id(self, number: str, message_id: str, direction: Direction) -> None:
        """Remember a message id of the ticket's thread (first ticket wins)."""
        self._call(self._record_message_id, number, message_id, direction)

    def _record_message_id(self, number: str, message_id: str, direction: Direction) -> None:
        if number not in self._known:
            with translate_errors("read a ticket"):
                found = self._conn.execute("SELECT 1 FROM tickets WHERE number = %s", (number,)).fetchone()
            if found is None:
                raise TicketNotFoundError(f"no ticket with number {number!r}", field="number")
            self._known.add(number)
        check_direction(direction)
        message_id = normalize_message_id(message_id)
        if not message_id:
            raise InvalidValueError("message_id must not be empty", field="message_id")
        with translate_errors("record a message id"):
            self._conn.execute(q.MESSAGE_ID_INSERT, (message_id, direction, number))

    def record_audit(self, record: AuditRecord) -> None:
        """Append to the audit log."""
        self._call(self._record_audit, record)

    def _record_audit(self, record: AuditRecord) -> None:
        self._hold(q.AUDIT_INSERT, audit_params(record, record.at))

    def remove_quarantined(self, quarantine_id: int) -> QuarantineRecord | None:
        """Delete quarantine row `quarantine_id` and return it, or `None` when there is no such row."""
        return self._call(self._remove_quarantined, quarantine_id)  # type: ignore[no-any-return]

    def _remove_quarantined(self, quarantine_id: int) -> QuarantineRecord | None:
        with translate_errors("remove a quarantined message"):
            row = self._conn.execute(q.QUARANTINE_DELETE, (quarantine_id,)).fetchone()
        return None if row is None else q.quarantine_record(row)

    def quarantine(self, record: QuarantineRecord) -> int:
        """Keep a failed message once per (provenance, bytes); return its id."""
        return self._call(self._quarantine, record)  # type: ignore[no-any-return]

    def _quarantine(self, record: QuarantineRecord, quarantine_id: int | None = None) -> int:
        conn = self._conn
        mailbox, kind, key, digest = quarantine_key(record)
        with translate_errors("quarantine a message"):
            # One item's quarantine rows are written one unit at a time (the lookup-then-insert is not a race).
            self._lock("quarantine", digest)
            row = conn.execute(q.QUARANTINE_FIND, (digest, mailbox, kind, key)).fetchone()
            if row is not None:
                conn.execute(q.QUARANTINE_BUMP, (record.at, record.reason_code, record.reason, row[0]))
                return int(row[0])
            values = (record.at, record.raw, record.reason_code, record.reason, mailbox, kind, key, digest)
            if quarantine_id is not None:
                conn.execute(q.QUARANTINE_INSERT_ID, (quarantine_id, *values))
                return quarantine_id
            inserted = conn.execute(q.QUARANTINE_INSERT, values).fetchone()
        assert inserted is not None  # noqa: S101
        return int(inserted[0])
