"""The SQLite unit of work and the row readers of the SQLite backend."""

from __future__ import annotations

import datetime as _dt
import sqlite3
from collections.abc import Sequence
from typing import Any

from ticketmail.backends._common import (
    AUDIT_COLUMNS,
    QUARANTINE_COLUMNS,
    audit_params,
    check_direction,
    check_kind,
    check_status_change,
    opened_ticket,
    quarantine_from_row,
    quarantine_key,
    stored_entry,
    ticket_from_columns,
    ticket_params,
)
from ticketmail.backends.base import (
    AttachmentRef,
    AuditRecord,
    CustomFieldValue,
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
    load_custom_value,
    normalize_message_id,
)
from ticketmail.backends.sqlite_schema import (
    translate_errors,
)
from ticketmail.errors import BackendError, InvalidValueError
from ticketmail.model import Address


def ts(value: _dt.datetime) -> str:
    # Fixed-width UTC ISO 8601 sorts as text, so range queries (rate limits) compare strings.
    return as_utc(value).isoformat(timespec="microseconds")


def dt_from(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text)


def address(email: str | None, name: str | None) -> Address | None:
    """An `Address`, or `None` for a missing email."""
    return None if email is None else Address(email, name)


TICKET_COLUMNS = (
    "id, number, subject, requester_email, requester_name, status, created, updated, source, mailbox, "
    "department, team, category, priority, topic_id, assignee, merged_into, entry_count"
)

_Extras = tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, CustomFieldValue], ...]]


def ticket_from_row(row: Sequence[Any], extras: _Extras) -> Ticket:
    tags, participants, custom = extras
    return ticket_from_columns(
        row,
        created=dt_from(row[6]),
        updated=dt_from(row[7]),
        tags=tags,
        participants=participants,
        custom_fields=custom,
    )


_SIDE_TABLES = (
    "SELECT 0, position, tag, NULL FROM tags WHERE ticket_id = ?1"
    " UNION ALL SELECT 1, position, email, NULL FROM participants WHERE ticket_id = ?1"
    " UNION ALL SELECT 2, position, name, value FROM custom_fields WHERE ticket_id = ?1"
    " ORDER BY 1, 2"
)


def load_ticket(conn: sqlite3.Connection, where: str, param: object) -> tuple[int, Ticket] | None:
    # `where` is one of the fixed strings below, never caller input.
    row = conn.execute(f"SELECT {TICKET_COLUMNS} FROM tickets WHERE {where}", (param,)).fetchone()  # noqa: S608
    if row is None:
        return None
    tid = row[0]
    tags: list[str] = []
    parts: list[str] = []
    custom: list[tuple[str, CustomFieldValue]] = []
    for table, _position, first, second in conn.execute(_SIDE_TABLES, (tid,)):  # one statement for all three
        if table == 0:
            tags.append(first)
        elif table == 1:
            parts.append(first)
        else:
            custom.append((first, load_custom_value(second)))
    return tid, ticket_from_row(row, (tuple(tags), tuple(parts), tuple(custom)))


BY_NUMBER = "number = ?"
BY_MESSAGE_ID = "id = (SELECT ticket_id FROM message_ids WHERE message_id = ?)"


class Lookup:
    """Ticket lookups on a connection inside a read transaction (for `follow_merges()`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def ticket_by_number(self, number: str) -> Ticket | None:
        found = load_ticket(self._conn, BY_NUMBER, number)
        return None if found is None else found[1]


class SQLiteUnitOfWork:
    """One `BEGIN IMMEDIATE` transaction on a `SQLiteBackend`'s connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.open = True

    def _c(self) -> sqlite3.Connection:
        if not self.open:
            raise BackendError("this unit of work has ended; open a new one with backend.unit_of_work()")
        return self._conn

    def _ticket_id(self, number: str) -> int:
        with translate_errors("read a ticket"):
            row = self._c().execute("SELECT id FROM tickets WHERE number = ?", (number,)).fetchone()
        if row is None:
            raise TicketNotFoundError(f"no ticket with number {number!r}", field="number")
        return int(row[0])

    # -- reads --

    def processed(self, key: str) -> ProcessedRecord | None:
        """The ledger row for `key`, if any."""
        with translate_errors("read the ledger"):
            row = (
                self._c()
                .execute("SELECT action, at, ticket, entry_id, message_id FROM ledger WHERE key = ?", (key,))
                .fetchone()
            )
        if row is None:
            return None
        return ProcessedRecord(
            key=key, action=row[0], at=dt_from(row[1]), ticket=row[2], entry_id=row[3], message_id=row[4]
        )

    def ticket_by_number(self, number: str) -> Ticket | None:
        """The ticket with this number, or `None`."""
        with translate_errors("read a ticket"):
            found = load_ticket(self._c(), BY_NUMBER, number)
        return None if found is None else found[1]

    def ticket_by_message_id(self, message_id: str) -> Ticket | None:
        """The ticket whose thread holds this message id, or `None`."""
        with translate_errors("look up a message id"):
            found = load_ticket(self._c(), BY_MESSAGE_ID, normalize_message_id(message_id))
        return None if found is None else found[1]

    def number_exists(self, number: str) -> bool:
        """Whether the number is taken."""
        with translate_errors("check a ticket number"):
            return self._c().execute("SELECT 1 FROM tickets WHERE number = ?", (number,)).fetchone() is not None

    def count_tickets_by_requester(self, email: str, since: _dt.datetime) -> int:
        """Tickets opened by `email` (case-insensitive) at or after `since`."""
        with translate_errors("count tickets"):
            row = (
                self._c()
                .execute(
                    "SELECT COUNT(*) FROM tickets WHERE requester_key = ? AND created >= ?",
                    (email.casefold(), ts(since)),
                )
                .fetchone()
            )
        return int(row[0])

    # -- writes --

    def record_processed(self, record: ProcessedRecord) -> None:
        """Add a ledger row (identical again: no-op; conflicting: error)."""
        with translate_errors("write the ledger"):
            cur = self._c().execute(
                "INSERT INTO ledger (key, action, at, ticket, entry_id, message_id) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO NOTHING",
                (record.key, record.action, ts(record.at), record.ticket, record.entry_id, record.message_id),
            )
        if cur.rowcount == 1:
            return
        if self.processed(record.key) != record:
            raise LedgerConflictError(f"ledger key {record.key!r} is already recorded with another effect")

    def create_ticket(self, ticket: NewTicket) -> Ticket:
        """Store a new open ticket."""
        conn = self._c()
        if self.number_exists(ticket.number):
            raise TicketNumberTakenError(f"ticket number {ticket.number!r} is already taken", field="number")
        created = ts(ticket.created)
        tags = tuple(dict.fromkeys(ticket.tags))
        with translate_errors("create a ticket"):
            cur = conn.execute(
                "INSERT INTO tickets (number, subject, requester_email, requester_name, requester_key, status,"
                " created, updated, source, mailbox, department, team, category, priority, topic_id, assignee)"
                " VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ticket_params(ticket, created),
            )
            tid = cur.lastrowid
            if tags:
                conn.executemany(
                    "INSERT INTO tags (ticket_id, tag, position) VALUES (?, ?, ?)",
                    [(tid, tag, i) for i, tag in enumerate(tags)],
                )
            stored = [(name, dump_custom_value(value)) for name, value in ticket.custom_fields]
            if stored:
                conn.executemany(
                    "INSERT INTO custom_fields (ticket_id, name, position, value) VALUES (?, ?, ?, ?)",
                    [(tid, name, i, text) for i, (name, text) in enumerate(stored)],
                )
        return opened_ticket(ticket, dt_from(created), stored)

    def append_entry(self, number: str, entry: NewEntry) -> Entry:
        """Append an entry, storing attachments once and recording its message id."""
        check_kind(entry.kind)
        conn = self._c()
        tid = self._ticket_id(number)
        message_id = normalize_message_id(entry.message_id) if entry.message_id is not None else None
        created = ts(entry.created)
        author = entry.author
        with translate_errors("append an entry"):
            for attachment in entry.attachments:
                conn.execute(
                    "INSERT INTO attachments (sha256, size, data) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                    (attachment.sha256, attachment.size, attachment.data),
                )
            cur = conn.execute(
                "INSERT INTO entries (ticket_id, kind, author_email, author_name, body, html, created, message_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tid,
                    entry.kind,
                    None if author is None else author.email,
                    None if author is None else author.name,
                    entry.body,
                    entry.html,
                    created,
                    message_id,
                ),
            )
            entry_id = cur.lastrowid
            assert entry_id is not None  # noqa: S101  (an INSERT always sets it)
            refs = tuple(AttachmentRef.from_attachment(a) for a in entry.attachments)
            if refs:
                conn.executemany(
                    "INSERT INTO entry_attachments (entry_id, position, sha256, filename, content_type, size,"
                    " disposition, content_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (entry_id, i, r.sha256, r.filename, r.content_type, r.size, r.disposition, r.content_id)
                        for i, r in enumerate(refs)
                    ],
                )
            # max() on fixed-width ISO text is chronological.
            conn.execute(
                "UPDATE tickets SET entry_count = entry_count + 1, updated = max(updated, ?) WHERE id = ?",
                (created, tid),
            )
            if message_id:
                self._record_mid(tid, message_id, "inbound")
        return stored_entry(number, entry, entry_id, message_id)

    def set_status(
        self, number: str, status: TicketStatus, *, merged_into: str | None = None, at: _dt.datetime | None = None
    ) -> None:
        """Reopen, close or merge a ticket."""
        tid = self._ticket_id(number)
        with translate_errors("change a ticket's status"):
            check_status_change(number, status, merged_into, self.ticket_by_number)
            self._c().execute(
                "UPDATE tickets SET status = ?, merged_into = ?, updated = max(updated, coalesce(?, updated))"
                " WHERE id = ?",
                (status, merged_into, None if at is None else ts(at), tid),
            )

    def add_participant(self, number: str, email: str) -> None:
        """Add a participant (idempotent, case-insensitive)."""
        tid = self._ticket_id(number)
        with translate_errors("add a participant"):
            self._c().execute(
                "INSERT INTO participants (ticket_id, email_key, position, email)"
                " SELECT ?, ?, coalesce(max(position) + 1, 0), ? FROM participants WHERE ticket_id = ?"
                " ON CONFLICT (ticket_id, email_key) DO NOTHING",
                (tid, email.casefold(), email, tid),
            )

    def record_message_id(self, number: str, message_id: str, direction: Direction) -> None:
        """Remember a message id of the ticket's thread (first ticket wins)."""
        tid = self._ticket_id(number)
        check_direction(direction)
        with translate_errors("record a message id"):
            self._record_mid(tid, normalize_message_id(message_id), direction)

    def _record_mid(self, tid: int, message_id: str, direction: Direction) -> None:
        if not message_id:
            raise InvalidValueError("message_id must not be empty", field="message_id")
        self._c().execute(
            "INSERT INTO message_ids (message_id, ticket_id, direction) VALUES (?, ?, ?)"
            " ON CONFLICT (message_id) DO NOTHING",
            (message_id, tid, direction),
        )

    def record_audit(self, record: AuditRecord) -> None:
        """Append to the audit log."""
        with translate_errors("write the audit log"):
            self._c().execute(
                f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                audit_params(record, ts(record.at)),
            )

    def remove_quarantined(self, quarantine_id: int) -> QuarantineRecord | None:
        """Delete quarantine row `quarantine_id` and return it, or `None` when there is no such row."""
        conn = self._c()
        with translate_errors("remove a quarantined message"):
            row = conn.execute(
                f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id = ?",  # noqa: S608
                (quarantine_id,),
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM quarantine WHERE id = ?", (quarantine_id,))
        return quarantine_record(row)

    def quarantine(self, record: QuarantineRecord) -> int:
        """Keep a failed message once per (provenance, bytes); return its id."""
        conn = self._c()
        mailbox, kind, key, digest = quarantine_key(record)
        with translate_errors("quarantine a message"):
            row = conn.execute(
                "SELECT id FROM quarantine WHERE sha256 = ? AND prov_mailbox IS ? AND prov_kind IS ? AND prov_key IS ?",
                (digest, mailbox, kind, key),
            ).fetchone()
            if row is not None:
                conn.execute(
                    "UPDATE quarantine SET at = ?, reason_code = ?, reason = ?, attempts = attempts + 1 WHERE id = ?",
                    (ts(record.at), record.reason_code, record.reason, row[0]),
                )
                return int(row[0])
            cur = conn.execute(
                "INSERT INTO quarantine (at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key, sha256,"
                " attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (ts(record.at), record.raw, record.reason_code, record.reason, mailbox, kind, key, digest),
            )
        assert cur.lastrowid is not None  # noqa: S101
        return cur.lastrowid


def quarantine_record(row: Sequence[Any]) -> QuarantineRecord:
    """A `quarantine` row (`QUARANTINE_COLUMNS`) as a record."""
    return quarantine_from_row(row, dt_from(row[1]))
