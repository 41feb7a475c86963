"""The PostgreSQL backend: many processes on many machines sharing one store (`ticketmail[postgres]`).

Built on psycopg 3 and its connection pool. Why it is built this way:

* **One transaction per unit of work, at `READ COMMITTED`.** Every rule that must hold under concurrent
  writers is enforced by a constraint or a lock rather than by a snapshot: ticket numbers and message ids
  are `UNIQUE` and written with `ON CONFLICT`; the ledger key is `PRIMARY KEY` *and* the ledger check
  (`processed()`) first takes a transaction-level advisory lock on the key, so a second worker handed the
  same message waits for the first one's commit and then *sees* it (each `READ COMMITTED` statement reads
  the latest committed data), exactly what SQLite's `BEGIN IMMEDIATE` gives; ticket rows are locked
  (`FOR UPDATE`) before they are changed, so counters, participant positions and merge-cycle checks are
  never computed from stale rows. `REPEATABLE READ` or `SERIALIZABLE` would add nothing to these
  guarantees (the snapshot would even hide the first worker's commit from the waiting one) and would turn
  ordinary contention, two replies to one ticket, into serialization failures.
* **Retries inside the backend.** Deadlocks (two units locking two tickets in opposite order) and
  serialization failures are retried here, not by callers: a unit of work records every call it answered
  and, after such a failure, rolls back, starts a new transaction and replays the calls, checking that
  each gives the answer the caller already acted on (entry ids are kept). If all agree the unit simply
  continues; if one differs (another worker committed the same message meanwhile) the unit raises
  `BackendConflictError`, a transient `BackendError`: nothing is
  committed and the source keeps the message. The same replay stands in for savepoints: after a statement
  error the caller catches, the unit's earlier work is restored before the next call.
* **Ticket numbers unique across processes**: the `UNIQUE` constraint decides; a number taken by a
  concurrent unit makes `create_ticket()` raise `TicketNumberTakenError` without aborting the
  transaction.
* **Errors at the boundary**: psycopg exceptions become ticketmail errors (see
  `ticketmail.backends.postgres_schema`), transient (`BackendUnavailableError`,
  `BackendConflictError`) kept apart from permanent (`BackendSetupError`). Passwords in
  connection URLs never appear in reprs or errors.
* **Durability**: `synchronous_commit` is the server's (`on`: a commit is on disk before the source
  acknowledges). `synchronous_commit="off"` trades the last few hundred milliseconds of commits on a
  server crash for speed, the same trade as SQLite's `synchronous=NORMAL`; the database stays consistent.

Threads and processes: the backend object is thread-safe (each unit of work borrows its own connection from
the pool); open one backend per process (after a fork, never share one across it).
"""

from __future__ import annotations

import datetime as _dt
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from ticketmail.backends._common import (
    check_direction,
    check_kind,
    check_status_change,
    quarantine_key,
    ticket_from_columns,
)
from ticketmail.backends.base import (
    AttachmentRef,
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
    follow_merges,
    load_custom_value,
    normalize_message_id,
)
from ticketmail.backends.postgres_schema import (
    LOCK_CLASS,
    MIGRATIONS,
    SCHEMA_VERSION,
    BackendConflictError,
    BackendSetupError,
    BackendUnavailableError,
    PgMigration,
    RetryableError,
    SchemaVersionError,
    current_version,
    lock_key,
    migrate,
    translate_all,
    translate_errors,
)
from ticketmail.errors import BackendError, InvalidValueError, TicketmailError
from ticketmail.model import Address, Provenance

if TYPE_CHECKING:
    from ticketmail.backends.postgres_leases import LeaseManager

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "BackendConflictError",
    "BackendSetupError",
    "BackendUnavailableError",
    "PgMigration",
    "PostgresBackend",
    "SchemaVersionError",
    "current_fence",
    "redact_url",
]

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MAX_ATTEMPTS = 6
_PAGE = 500


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***` (for reprs, logs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable database URL>"
    if parts.password is None:
        text = url
    else:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        text = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", text)


# --- fencing: the lease a unit of work must still hold when it commits ------------------------------------------

_fence_local = threading.local()


def current_fence() -> tuple[str, str, int] | None:
    """The `(mailbox, holder, token)` lease that commits in this thread must still hold, if any.

    Set by `ticketmail.sources.leases.MailboxLease` while a worker holds a mailbox; a unit of work
    whose lease expired or was taken over is refused at commit time (`LeaseLostError`).
    """
    value = getattr(_fence_local, "fence", None)
    return value if isinstance(value, tuple) else None


def set_fence(value: tuple[str, str, int] | None) -> None:
    """Set (or clear with `None`) the lease the current thread's commits must hold."""
    _fence_local.fence = value


class LeaseLostError(BackendError):
    """The mailbox lease this worker held expired or was taken over; the unit was rolled back, nothing acknowledged."""

    code = "lease_lost"
    status = 409


# --- value conversion ---------------------------------------------------------------------------------------


def _utc(value: _dt.datetime) -> _dt.datetime:
    return as_utc(value)


def _address(email: str | None, name: str | None) -> Address | None:
    return None if email is None else Address(email, name)


_TICKET_SELECT = (
    "SELECT t.id, t.number, t.subject, t.requester_email, t.requester_name, t.status, t.created, t.updated,"
    " t.source, t.mailbox, t.department, t.team, t.category, t.priority, t.topic_id, t.assignee, t.merged_into,"
    " t.entry_count,"
    " ARRAY(SELECT tag FROM tags WHERE ticket_id = t.id ORDER BY position),"
    " ARRAY(SELECT email FROM participants WHERE ticket_id = t.id ORDER BY position),"
    " ARRAY(SELECT name FROM custom_fields WHERE ticket_id = t.id ORDER BY position),"
    " ARRAY(SELECT value FROM custom_fields WHERE ticket_id = t.id ORDER BY position)"
    " FROM tickets t"
)
_BY_NUMBER = _TICKET_SELECT + " WHERE t.number = %s"
_BY_NUMBER_LOCKED = _BY_NUMBER + " FOR UPDATE OF t"
_BY_MESSAGE_ID = _TICKET_SELECT + " WHERE t.id = (SELECT ticket_id FROM message_ids WHERE message_id = %s)"  # noqa: S608


def _ticket_from_row(row: Sequence[Any]) -> Ticket:
    return ticket_from_columns(
        row,
        created=_utc(row[6]),
        updated=_utc(row[7]),
        tags=tuple(row[18]),
        participants=tuple(row[19]),
        custom_fields=tuple((name, load_custom_value(value)) for name, value in zip(row[20], row[21], strict=True)),
    )


_ENTRY_SELECT = (
    "SELECT e.id, e.kind, e.author_email, e.author_name, e.body, e.created, e.html, e.message_id,"
    " (SELECT json_agg(json_build_array(a.sha256, a.filename, a.content_type, a.size, a.disposition,"
    " a.content_id) ORDER BY a.position) FROM entry_attachments a WHERE a.entry_id = e.id)"
    " FROM entries e JOIN tickets t ON t.id = e.ticket_id WHERE t.number = %s ORDER BY e.id"
)


def _entry_from_row(number: str, row: Sequence[Any]) -> Entry:
    refs = tuple(AttachmentRef(r[0], r[1], r[2], int(r[3]), r[4], r[5]) for r in (row[8] or ()))
    return Entry(
        id=row[0],
        ticket=number,
        kind=row[1],
        author=_address(row[2], row[3]),
        body=row[4],
        created=_utc(row[5]),
        html=row[6],
        message_id=row[7],
        attachments=tuple(r.sha256 for r in refs),
        files=refs,
    )


def _quarantine_record(row: Sequence[Any]) -> QuarantineRecord:
    """A `quarantine` row (id, at, raw, reason_code, reason, mailbox, kind, key, attempts) as a record."""
    return QuarantineRecord(
        at=row[1],
        raw=bytes(row[2]),
        reason_code=row[3],
        reason=row[4],
        provenance=None if row[5] is None else Provenance(row[5], row[6], row[7]),
        id=row[0],
        attempts=row[8],
    )


# --- the unit of work -------------------------------------------------------------------------------------------


class _Call:
    """One answered call of a unit of work, kept so the unit can be replayed after a retryable failure."""

    __slots__ = ("args", "function", "kwargs", "outcome")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.outcome: tuple[str, Any] = ("ok", None)


class _PgUnitOfWork:
    """One `READ COMMITTED` transaction on a pooled connection; see the module docstring for the retries."""

    def __init__(self, backend: PostgresBackend, conn: psycopg.Connection[Any]) -> None:
        self._backend = backend
        self._conn = conn
        self.open = True
        self._log: list[_Call] = []
        self._broken = False  # a statement failed and aborted the transaction; replay before the next call
        self._replaying = False
        self.attempts = 1
        self.pipeline: psycopg.Pipeline | None = None
        self._absent: set[str] = set()  # ledger keys this unit locked and found unrecorded

    # -- machinery --

    def _cur(self) -> psycopg.Connection[Any]:
        return self._conn

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.open:
            raise BackendError("this unit of work has ended; open a new one with backend.unit_of_work()")
        if self._broken:
            self._restart(None)
        call = _Call(function, args, kwargs)
        while True:
            try:
                result = function(*args, **kwargs)
            except RetryableError as exc:
                self._restart(exc)
                continue
            except TicketmailError as exc:
                if self._note_failure(exc):
                    raise  # the call's writes are undone before the next call (see _restart); not replayed
                call.outcome = ("raise", (type(exc), exc.message))
                self._log.append(call)
                raise
            except BaseException as exc:
                self._note_failure(exc)
                raise
            call.outcome = ("ok", result)
            self._log.append(call)
            return result

    def _note_failure(self, exc: BaseException) -> bool:
        """Whether the failed call may have written part of its work (then restore the unit before going on)."""
        cause = exc.__cause__
        if (
            isinstance(exc, psycopg.Error | UnicodeEncodeError)
            or isinstance(cause, psycopg.Error | UnicodeEncodeError)
            or self._conn.info.transaction_status == TransactionStatus.INERROR
        ):
            self._broken = True
        return self._broken

    def _restart(self, cause: RetryableError | None) -> None:
        """Roll back, begin again and replay every answered call; raise if any answer would change."""
        while True:
            if cause is not None:
                self.attempts += 1
                if self.attempts > _MAX_ATTEMPTS:
                    raise BackendConflictError(
                        f"PostgreSQL kept aborting this unit of work ({cause}); gave up after {_MAX_ATTEMPTS} tries"
                    ) from cause
                time.sleep(random.uniform(0.0, 0.01 * 2**self.attempts))
            with translate_all("restart a transaction"):
                self._conn.execute("ROLLBACK")
                self._conn.execute("BEGIN")
            self._broken = False
            try:
                self._replay()
            except RetryableError as exc:
                cause = exc
                continue
            return

    def _replay(self) -> None:
        self._replaying = True
        self._absent.clear()
        try:
            for call in self._log:
                kwargs = dict(call.kwargs)
                kind, value = call.outcome
                if kind == "ok" and call.function == self._append_entry:
                    kwargs["entry_id"] = value.id
                elif kind == "ok" and call.function == self._quarantine:
                    kwargs["quarantine_id"] = value
                try:
                    outcome: tuple[str, Any] = ("ok", call.function(*call.args, **kwargs))
                except TicketmailError as exc:
                    outcome = ("raise", (type(exc), exc.message))
                if outcome != call.outcome:
                    raise BackendConflictError(
                        "a concurrent transaction changed data this unit of work had already read; nothing was"
                        " committed, retry later"
                    )
        finally:
            self._replaying = False

    def _ticket_id(self, number: str, *, lock: bool = False) -> int:
        query = (
            "SELECT id FROM tickets WHERE number = %s FOR UPDATE"
            if lock
            else "SELECT id FROM tickets WHERE number = %s"
        )
        with translate_errors("read a ticket"):
            row = self._conn.execute(query, (number,)).fetchone()
        if row is None:
            raise TicketNotFoundError(f"no ticket with number {number!r}", field="number")
        return int(row[0])

    # -- reads --

    def processed(self, key: str) -> ProcessedRecord | None:
        """The ledger row for `key`, if any (waits for a concurrent unit holding the same key)."""
        return self._call(self._processed, key)  # type: ignore[no-any-return]

    def _processed(self, key: str) -> ProcessedRecord | None:
        with translate_errors("read the ledger"):
            self._conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, lock_key(self._backend.schema, key))
            )
            row = self._conn.execute(
                "SELECT action, at, ticket, entry_id, message_id FROM ledger WHERE key = %s", (key,)
            ).fetchone()
        if row is None:
            self._absent.add(key)  # locked and absent: nobody else can record it before this unit ends
            return None
        self._absent.discard(key)
        return ProcessedRecord(key=key, action=row[0], at=row[1], ticket=row[2], entry_id=row[3], message_id=row[4])

    def ticket_by_number(self, number: str) -> Ticket | None:
        """The ticket with this number, or `None`."""
        return self._call(self._ticket_by, _BY_NUMBER, number)  # type: ignore[no-any-return]

    def ticket_by_message_id(self, message_id: str) -> Ticket | None:
        """The ticket whose thread holds this message id, or `None`."""
        return self._call(self._ticket_by, _BY_MESSAGE_ID, normalize_message_id(message_id))  # type: ignore[no-any-return]

    def _ticket_by(self, query: str, param: str) -> Ticket | None:
        with translate_errors("read a ticket"):
            row = self._conn.execute(query, (param,)).fetchone()
        return None if row is None else _ticket_from_row(row)

    def _locked_ticket(self, number: str) -> Ticket | None:
        with translate_errors("read a ticket"):
            row = self._conn.execute(_BY_NUMBER_LOCKED, (number,)).fetchone()
        return None if row is None else _ticket_from_row(row)

    def number_exists(self, number: str) -> bool:
        """Whether the number is taken."""
        return self._call(self._number_exists, number)  # type: ignore[no-any-return]

    def _number_exists(self, number: str) -> bool:
        with translate_errors("check a ticket number"):
            return self._conn.execute("SELECT 1 FROM tickets WHERE number = %s", (number,)).fetchone() is not None

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
        if record.key in self._absent:
            # This unit holds the key's advisory lock and saw no row: the insert cannot conflict, so it is
            # sent without waiting for its result (an unexpected failure still fails the commit).
            self._absent.discard(record.key)
            with translate_errors("write the ledger"):
                self._conn.execute(
                    "INSERT INTO ledger (key, action, at, ticket, entry_id, message_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (record.key, record.action, record.at, record.ticket, record.entry_id, record.message_id),
                )
            return
        with translate_errors("write the ledger"):
            cur = self._conn.execute(
                "INSERT INTO ledger (key, action, at, ticket, entry_id, message_id) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (key) DO NOTHING",
                (record.key, record.action, record.at, record.ticket, record.entry_id, record.message_id),
            )
        if cur.rowcount == 1:
            return
        if self._processed(record.key) != record:
            raise LedgerConflictError(f"ledger key {record.key!r} is already recorded with another effect")

    def create_ticket(self, ticket: NewTicket) -> Ticket:
        """Store a new open ticket."""
        return self._call(self._create_ticket, ticket)  # type: ignore[no-any-return]

    def _create_ticket(self, ticket: NewTicket) -> Ticket:
        conn = self._conn
        created = as_utc(ticket.created)
        tags = tuple(dict.fromkeys(ticket.tags))
        with translate_errors("create a ticket"):
            row = conn.execute(
                "INSERT INTO tickets (number, subject, requester_email, requester_name, requester_key, status,"
                " created, updated, source, mailbox, department, team, category, priority, topic_id, assignee)"
                " VALUES (%s, %s, %s, %s, %s, 'open', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (number) DO NOTHING RETURNING id",
                (
                    ticket.number,
                    ticket.subject,
                    ticket.requester.email,
                    ticket.requester.name,
                    ticket.requester.email.casefold(),
                    created,
                    created,
                    ticket.source,
                    ticket.mailbox,
                    ticket.department,
                    ticket.team,
                    ticket.category,
                    ticket.priority,
                    ticket.topic_id,
                    ticket.assignee,
                ),
            ).fetchone()
            if row is None:
                raise TicketNumberTakenError(f"ticket number {ticket.number!r} is already taken", field="number")
            tid = row[0]
            if tags:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO tags (ticket_id, tag, position) VALUES (%s, %s, %s)",
                        [(tid, tag, i) for i, tag in enumerate(tags)],
                    )
            # Typed values as JSON text (numbers stay numbers, choices key and label, ISO 8601 datetimes).
            stored = [(name, dump_custom_value(value)) for name, value in ticket.custom_fields]
            if stored:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO custom_fields (ticket_id, name, position, value) VALUES (%s, %s, %s, %s)",
                        [(tid, name, i, text) for i, (name, text) in enumerate(stored)],
                    )
        return Ticket(
            number=ticket.number,
            subject=ticket.subject,
            requester=ticket.requester,
            status="open",
            created=created,
            updated=created,
            source=ticket.source,
            mailbox=ticket.mailbox,
            department=ticket.department,
            team=ticket.team,
            category=ticket.category,
            priority=ticket.priority,
            topic_id=ticket.topic_id,
            assignee=ticket.assignee,
            tags=tags,
            custom_fields=tuple((name, load_custom_value(text)) for name, text in stored),  # as read back
        )

    def append_entry(self, number: str, entry: NewEntry) -> Entry:
        """Append an entry, storing attachments once and recording its message id."""
        return self._call(self._append_entry, number, entry)  # type: ignore[no-any-return]

    def _append_entry(self, number: str, entry: NewEntry, entry_id: int | None = None) -> Entry:
        check_kind(entry.kind)
        conn = self._conn
        message_id = normalize_message_id(entry.message_id) if entry.message_id is not None else None
        created = as_utc(entry.created)
        author = entry.author
        refs = tuple(AttachmentRef.from_attachment(a) for a in entry.attachments)
        values = (
            entry.kind,
            None if author is None else author.email,
            None if author is None else author.name,
            entry.body,
            entry.html,
            created,
            message_id,
        )
        with translate_errors("append an entry"):
            # One statement (one round trip) locks and bumps the ticket and inserts the entry.
            if entry_id is None:
                row = conn.execute(
                    "WITH t AS (UPDATE tickets SET entry_count = entry_count + 1, updated = GREATEST(updated, %s)"
                    " WHERE number = %s RETURNING id)"
                    " INSERT INTO entries (ticket_id, kind, author_email, author_name, body, html, created, message_id)"
                    " SELECT t.id, %s, %s, %s, %s, %s, %s, %s FROM t RETURNING id, ticket_id",
                    (created, number, *values),
                ).fetchone()
            else:  # a replay keeps the id the caller was given (identity values are never handed out twice)
                row = conn.execute(
                    "WITH t AS (UPDATE tickets SET entry_count = entry_count + 1, updated = GREATEST(updated, %s)"
                    " WHERE number = %s RETURNING id)"
                    " INSERT INTO entries (id, ticket_id, kind, author_email, author_name, body, html, created,"
                    " message_id) SELECT %s, t.id, %s, %s, %s, %s, %s, %s, %s FROM t RETURNING id, ticket_id",
                    (created, number, entry_id, *values),
                ).fetchone()
        if row is None:
            raise TicketNotFoundError(f"no ticket with number {number!r}", field="number")
        entry_id, tid = int(row[0]), int(row[1])
        with translate_errors("append an entry"):
            if entry.attachments:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO attachments (sha256, size, data) VALUES (%s, %s, %s)"
                        " ON CONFLICT (sha256) DO NOTHING",
                        [(a.sha256, a.size, a.data) for a in entry.attachments],
                    )
            if refs:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO entry_attachments (entry_id, position, sha256, filename, content_type, size,"
                        " disposition, content_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        [
                            (entry_id, i, r.sha256, r.filename, r.content_type, r.size, r.disposition, r.content_id)
                            for i, r in enumerate(refs)
                        ],
                    )
            if message_id:
                self._record_mid(tid, message_id, "inbound")
        return Entry(
            id=entry_id,
            ticket=number,
            kind=entry.kind,
            author=author,
            body=entry.body,
            created=created,
            html=entry.html,
            message_id=message_id,
            attachments=tuple(r.sha256 for r in refs),
            files=refs,
        )

    def set_status(
        self, number: str, status: TicketStatus, *, merged_into: str | None = None, at: _dt.datetime | None = None
    ) -> None:
        """Reopen, close or merge a ticket (the tickets of a merge chain are locked while it is checked)."""
        self._call(self._set_status, number, status, merged_into=merged_into, at=at)

    def _set_status(
        self, number: str, status: TicketStatus, *, merged_into: str | None = None, at: _dt.datetime | None = None
    ) -> None:
        tid = self._ticket_id(number, lock=True)
        check_status_change(number, status, merged_into, self._locked_ticket)
        with translate_errors("change a ticket's status"):
            self._conn.execute(
                "UPDATE tickets SET status = %s, merged_into = %s, updated = GREATEST(updated, coalesce(%s, updated))"
                " WHERE id = %s",
                (status, merged_into, None if at is None else as_utc(at), tid),
            )

    def add_participant(self, number: str, email: str) -> None:
        """Add a participant (idempotent, case-insensitive)."""
        self._call(self._add_participant, number, email)

    def _add_participant(self, number: str, email: str) -> None:
        tid = self._ticket_id(number, lock=True)
        with translate_errors("add a participant"):
            self._conn.execute(
                "INSERT INTO participants (ticket_id, email_key, position, email)"
                " SELECT %s, %s, coalesce(max(position) + 1, 0), %s FROM participants WHERE ticket_id = %s"
                " ON CONFLICT (ticket_id, email_key) DO NOTHING",
                (tid, email.casefold(), email, tid),
            )

    def record_message_id(self, number: str, message_id: str, direction: Direction) -> None:
        """Remember a message id of the ticket's thread (first ticket wins)."""
        self._call(self._record_message_id, number, message_id, direction)

    def _record_message_id(self, number: str, message_id: str, direction: Direction) -> None:
        tid = self._ticket_id(number)
        check_direction(direction)
        with translate_errors("record a message id"):
            self._record_mid(tid, normalize_message_id(message_id), direction)

    def _record_mid(self, tid: int, message_id: str, direction: Direction) -> None:
        if not message_id:
            raise InvalidValueError("message_id must not be empty", field="message_id")
        self._conn.execute(
            "INSERT INTO message_ids (message_id, ticket_id, direction) VALUES (%s, %s, %s)"
            " ON CONFLICT (message_id) DO NOTHING",
            (message_id, tid, direction),
        )

    def record_audit(self, record: AuditRecord) -> None:
        """Append to the audit log."""
        self._call(self._record_audit, record)

    def _record_audit(self, record: AuditRecord) -> None:
        prov = record.provenance
        with translate_errors("write the audit log"):
            self._conn.execute(
                "INSERT INTO audit (at, action, message_id, prov_mailbox, prov_kind, prov_key, ticket, entry_id,"
                " reasons, origin, sender, subject, headers)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    record.at,
                    record.action,
                    record.message_id,
                    None if prov is None else prov.mailbox,
                    None if prov is None else prov.kind,
                    None if prov is None else prov.key,
                    record.ticket,
                    record.entry_id,
                    json.dumps([list(r) for r in record.reasons], ensure_ascii=False),
                    record.origin,
                    record.sender,
                    record.subject,
                    json.dumps([list(h) for h in record.headers], ensure_ascii=False) if record.headers else None,
                ),
            )

    def remove_quarantined(self, quarantine_id: int) -> QuarantineRecord | None:
        """Delete quarantine row `quarantine_id` and return it, or `None` when there is no such row."""
        return self._call(self._remove_quarantined, quarantine_id)  # type: ignore[no-any-return]

    def _remove_quarantined(self, quarantine_id: int) -> QuarantineRecord | None:
        with translate_errors("remove a quarantined message"):
            row = self._conn.execute(
                "DELETE FROM quarantine WHERE id = %s"
                " RETURNING id, at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key, attempts",
                (quarantine_id,),
            ).fetchone()
        return None if row is None else _quarantine_record(row)

    def quarantine(self, record: QuarantineRecord) -> int:
        """Keep a failed message once per (provenance, bytes); return its id."""
        return self._call(self._quarantine, record)  # type: ignore[no-any-return]

    def _quarantine(self, record: QuarantineRecord, quarantine_id: int | None = None) -> int:
        conn = self._conn
        mailbox, kind, key, digest = quarantine_key(record)
        with translate_errors("quarantine a message"):
            # One item's quarantine rows are written one unit at a time (the lookup-then-insert is not a race).
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                (LOCK_CLASS, lock_key(self._backend.schema, "quarantine", digest)),
            )
            row = conn.execute(
                "SELECT id FROM quarantine WHERE sha256 = %s AND prov_mailbox IS NOT DISTINCT FROM %s"
                " AND prov_kind IS NOT DISTINCT FROM %s AND prov_key IS NOT DISTINCT FROM %s",
                (digest, mailbox, kind, key),
            ).fetchone()
            if row is not None:
                conn.execute(
                    "UPDATE quarantine SET at = %s, reason_code = %s, reason = %s, attempts = attempts + 1"
                    " WHERE id = %s",
                    (record.at, record.reason_code, record.reason, row[0]),
                )
                return int(row[0])
            values = (record.at, record.raw, record.reason_code, record.reason, mailbox, kind, key, digest)
            if quarantine_id is not None:
                conn.execute(
                    "INSERT INTO quarantine (id, at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key,"
                    " sha256, attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 1)",
                    (quarantine_id, *values),
                )
                return quarantine_id
            inserted = conn.execute(
                "INSERT INTO quarantine (at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key, sha256,"
                " attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1) RETURNING id",
                values,
            ).fetchone()
        assert inserted is not None  # noqa: S101
        return int(inserted[0])

    # -- commit --

    def _commit(self) -> None:
        if self._broken:
            self._restart(None)
        fence = current_fence()
        while True:
            try:
                with translate_errors("commit"):
                    if fence is not None:
                        self._check_fence(fence)
                    self._conn.execute("COMMIT")
                    if self.pipeline is not None:
                        self.pipeline.sync()
                return
            except RetryableError as exc:
                self._restart(exc)

    def _check_fence(self, fence: tuple[str, str, int]) -> None:
        mailbox, holder, token = fence
        # FOR SHARE keeps a takeover (an UPDATE of this row) waiting until this commit is done.
        row = self._conn.execute(
            "SELECT 1 FROM leases WHERE mailbox = %s AND holder = %s AND token = %s AND expires > clock_timestamp()"
            " FOR SHARE",
            (mailbox, holder, token),
        ).fetchone()
        if row is None:
            raise LeaseLostError(
                f"the lease on mailbox {mailbox!r} expired or was taken over by another worker; nothing was committed",
                field="mailbox",
            )


class _Lookup:
    """Ticket lookups on a read connection (for `follow_merges()`)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def ticket_by_number(self, number: str) -> Ticket | None:
        row = self._conn.execute(_BY_NUMBER, (number,)).fetchone()
        return None if row is None else _ticket_from_row(row)


# --- the backend ------------------------------------------------------------------------------------------------


class PostgresBackend(BaseBackend):
    """A `Backend` in a PostgreSQL database, shared by any number of processes.

    Args:
        url: A libpq connection URL (`postgresql://user:password@host:5432/dbname`) or key/value string.
            The password may also come from `PGPASSWORD` or `~/.pgpass` as libpq reads them.
        schema: The PostgreSQL schema holding ticketmail's tables (created if missing). Different schemas in
            one database are independent stores.
        pool_size: Most connections this backend opens (one per concurrent unit of work or read). A worker
            with N mailbox threads wants about N + 1.
        min_connections: Connections kept open while idle.
        timeout: Seconds to wait for a free pooled connection (and for connecting) before
            `BackendUnavailableError`.
        synchronous_commit: `None` keeps the server's setting; `"off"` makes commits faster at the risk
            of losing the last moments of commits (never consistency) if the server crashes.
        create: Create or migrate the schema when it is missing or older (default). With `False` a missing
            schema is `BackendSetupError`.
        application_name: Shown in `pg_stat_activity`.

    Use as a context manager or call `close()`. Thread-safe.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "ticketmail",
        pool_size: int = 5,
        min_connections: int = 1,
        timeout: float = 30.0,
        synchronous_commit: str | None = None,
        create: bool = True,
        application_name: str = "ticketmail",
    ) -> None:
        if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
            raise InvalidValueError(
                f"schema must be a plain identifier (letters, digits, _), got {schema!r}", field="schema"
            )
        for name, value in (("pool_size", pool_size), ("min_connections", min_connections)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "pool_size" else 0):
                raise InvalidValueError(f"{name} must be a positive integer, got {value!r}", field=name)
        if min_connections > pool_size:
            raise InvalidValueError("min_connections must not exceed pool_size", field="min_connections")
        if not timeout > 0:
            raise InvalidValueError(f"timeout must be > 0 seconds, got {timeout!r}", field="timeout")
        if synchronous_commit not in (None, "on", "off", "local", "remote_write", "remote_apply"):
            raise InvalidValueError(
                f"synchronous_commit must be on, off, local, remote_write or remote_apply, got {synchronous_commit!r}",
                field="synchronous_commit",
            )
        self._url = url
        self.schema = schema
        self._timeout = timeout
        self._closed = False
        self._local = threading.local()
        self._last_used: dict[int, float] = {}
        self._synchronous_commit = synchronous_commit
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, int(timeout)),
            "application_name": application_name,
        }
        with translate_all(f"connect to {redact_url(url)}"):
            conn = psycopg.connect(url, **self._kwargs)
        try:
            if create:
                migrate(conn, schema)
            else:
                self._check_schema(conn)
        finally:
            conn.close()
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=min_connections,
            max_size=pool_size,
            kwargs=self._kwargs,
            configure=self._configure,
            reset=None,
            timeout=timeout,
            name=f"ticketmail-{schema}",
            open=True,
        )

    def _check_schema(self, conn: psycopg.Connection[Any]) -> None:
        with translate_all("read the schema version"):
            found = conn.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'schema_version'",
                (self.schema,),
            ).fetchone()
            if found is None:
                raise BackendSetupError(
                    f"no ticketmail schema {self.schema!r} in this database; open it with create=True to create it"
                )
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            version = current_version(conn)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the database schema {self.schema!r} has version {version}, newer than {SCHEMA_VERSION} that this"
                " ticketmail knows; upgrade ticketmail"
            )
        if version < SCHEMA_VERSION:
            raise BackendSetupError(
                f"the database schema {self.schema!r} has version {version}; open it with create=True to migrate it"
            )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        conn.execute("SET TIME ZONE 'UTC'")
        if self._synchronous_commit is not None:
            conn.execute(sql.SQL("SET synchronous_commit TO {}").format(sql.Identifier(self._synchronous_commit)))

    def __repr__(self) -> str:
        return f"PostgresBackend({redact_url(self._url)!r}, schema={self.schema!r})"

    @property
    def url(self) -> str:
        """The connection URL with any password replaced by `***`."""
        return redact_url(self._url)

    @property
    def schema_version(self) -> int:
        """The schema version of the database."""
        with self._connection("read the schema version") as conn, translate_all("read the schema version"):
            return current_version(conn)

    # -- connections --

    @contextmanager
    def _connection(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection: the current thread's unit's (its reads see its writes) or one from the pool."""
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        conn = self._getconn(action)
        try:
            yield conn
        finally:
            self._putconn(conn)

    def _getconn(self, action: str) -> psycopg.Connection[Any]:
        if self._closed:
            raise BackendError(f"the PostgreSQL backend for {redact_url(self._url)!r} is closed")
        try:
            return self._pool.getconn()
        except PoolTimeout as exc:
            raise BackendUnavailableError(
                f"no PostgreSQL connection became available within {self._timeout:g}s to {action}"
                f" (pool size {self._pool.max_size})"
            ) from exc
        except psycopg.Error as exc:  # pragma: no cover - the pool reports failures as PoolTimeout
            with translate_all(action):
                raise exc

    def _putconn(self, conn: psycopg.Connection[Any]) -> None:
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                conn.close()
        if conn.closed:
            self._last_used.pop(id(conn), None)
        else:
            self._last_used[id(conn)] = time.monotonic()
        self._pool.putconn(conn)

    @contextmanager
    def unit_of_work(self) -> Iterator[_PgUnitOfWork]:
        """`BEGIN` (`READ COMMITTED`); `COMMIT` on normal exit, `ROLLBACK` when the block raises.

        The unit runs in psycopg's pipeline mode: statements whose results the unit does not need (most
        inserts) are sent without waiting for the server, and a read waits for everything before it, so a
        message costs a few network round trips instead of one per statement. Any error of a sent
        statement still ends the unit (at the next read or at the commit) and rolls it all back.
        """
        if getattr(self._local, "conn", None) is not None:
            raise BackendError("a unit of work is already open in this thread; nested units are not supported")
        conn = self._begin()
        uow = _PgUnitOfWork(self, conn)
        self._local.conn = conn
        try:
            with translate_all("run a unit of work"), conn.pipeline() as pipeline:
                if conn.info.transaction_status == TransactionStatus.IDLE:
                    conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                uow.pipeline = pipeline
                try:
                    yield uow
                except BaseException:
                    uow.open = False
                    raise
                uow.open = False
                uow._commit()
        finally:
            self._local.conn = None
            self._putconn(conn)

    def _begin(self) -> psycopg.Connection[Any]:
        """A pooled connection inside `BEGIN`; a connection the server dropped meanwhile is replaced once.

        A connection used within the last second starts its transaction in the unit's pipeline (no round
        trip of its own); an older one is checked by a synchronous `BEGIN` first.
        """
        for attempt in (1, 2):
            conn = self._getconn("begin a transaction")
            if time.monotonic() - self._last_used.get(id(conn), 0.0) < 1.0:
                return conn  # unit_of_work sends BEGIN inside the pipeline
            try:
                conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            except psycopg.OperationalError as exc:
                conn.close()
                self._pool.putconn(conn)
                if attempt == 2:
                    raise BackendUnavailableError(f"PostgreSQL failed to begin a transaction: {exc}") from exc
                continue
            except psycopg.Error as exc:
                self._putconn(conn)
                with translate_all("begin a transaction"):
                    raise exc
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _read(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        with self._connection(action) as conn, translate_all(action):
            yield conn

    # -- readers --

    def is_processed(self, key: str) -> bool:
        """Whether `key` is in the ledger (a plain read: no lock taken)."""
        with self._read("read the ledger") as conn:
            return conn.execute("SELECT 1 FROM ledger WHERE key = %s", (key,)).fetchone() is not None

    def find_ticket(self, number: str, *, follow: bool = True) -> Ticket | None:
        """The ticket with `number`; with `follow`, the surviving ticket of its merge chain."""
        with self._read("read a ticket") as conn:
            lookup = _Lookup(conn)
            ticket = lookup.ticket_by_number(number)
            return follow_merges(lookup, ticket) if follow and ticket is not None else ticket

    def get_ticket(self, number: str) -> Ticket | None:
        """One ticket by number."""
        with self._read("read a ticket") as conn:
            row = conn.execute(_BY_NUMBER, (number,)).fetchone()
        return None if row is None else _ticket_from_row(row)

    def list_tickets(self, *, limit: int | None = None, offset: int = 0) -> Sequence[Ticket]:
        """Tickets oldest first; `offset`/`limit` page through them."""
        with self._read("list tickets") as conn:
            rows = conn.execute(
                _TICKET_SELECT + " ORDER BY t.id LIMIT %s OFFSET %s",
                (None if limit is None else max(limit, 0), max(offset, 0)),
            ).fetchall()
        return [_ticket_from_row(row) for row in rows]

    def entries(self, number: str) -> Sequence[Entry]:
        """A ticket's thread, oldest first (one statement: a consistent snapshot)."""
        with self._read("read a thread") as conn:
            rows = conn.execute(_ENTRY_SELECT, (number,)).fetchall()
        return [_entry_from_row(number, row) for row in rows]

    def attachment(self, sha256: str) -> bytes | None:
        """An attachment's bytes by digest."""
        with self._read("read an attachment") as conn:
            row = conn.execute("SELECT data FROM attachments WHERE sha256 = %s", (sha256,)).fetchone()
        return None if row is None else bytes(row[0])

    def audit_log(self) -> Iterator[AuditRecord]:
        """Every decision, oldest first, read lazily in pages."""
        last = 0
        while True:
            with self._read("read the audit log") as conn:
                rows = conn.execute(
                    "SELECT id, at, action, message_id, prov_mailbox, prov_kind, prov_key, ticket, entry_id, reasons,"
                    " origin, sender, subject, headers FROM audit WHERE id > %s ORDER BY id LIMIT %s",
                    (last, _PAGE),
                ).fetchall()
            for row in rows:
                yield AuditRecord(
                    at=row[1],
                    action=row[2],
                    message_id=row[3],
                    provenance=None if row[4] is None else Provenance(row[4], row[5], row[6]),
                    ticket=row[7],
                    reasons=tuple((r[0], r[1], r[2]) for r in json.loads(row[9])),
                    entry_id=row[8],
                    id=row[0],
                    origin=row[10],
                    sender=row[11],
                    subject=row[12],
                    headers=tuple((h[0], h[1]) for h in json.loads(row[13])) if row[13] else (),
                )
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def quarantined(self) -> Sequence[QuarantineRecord]:
        """Every quarantined message, oldest first."""
        with self._read("read the quarantine") as conn:
            rows = conn.execute(
                "SELECT id, at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key, attempts"
                " FROM quarantine ORDER BY id"
            ).fetchall()
        return [_quarantine_record(row) for row in rows]

    def lease_manager(
        self, mailboxes: Sequence[str], *, ttl: float | None = None, fair_share: bool = True
    ) -> LeaseManager:
        """Mailbox leases for a fetch worker sharing `mailboxes` with workers on other machines.

        See `ticketmail.backends.postgres_leases`; `ttl` defaults to `DEFAULT_LEASE_TTL` (30 s).
        """
        from ticketmail.backends.postgres_leases import DEFAULT_LEASE_TTL, LeaseManager

        return LeaseManager(self, mailboxes, ttl=DEFAULT_LEASE_TTL if ttl is None else ttl, fair_share=fair_share)

    def dedicated_connection(self, application_name: str = "ticketmail") -> psycopg.Connection[Any]:
        """A new connection outside the pool (autocommit, `search_path` set); the caller closes it."""
        with translate_all(f"connect to {redact_url(self._url)}"):
            conn = psycopg.connect(self._url, **{**self._kwargs, "application_name": application_name})
            self._configure(conn)
        return conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit, `search_path` set to the schema) for tooling and leases."""
        conn = self._getconn("borrow a connection")
        try:
            yield conn
        finally:
            self._putconn(conn)

    def close(self) -> None:
        """Close the pool (idempotent). Later calls raise `BackendError`."""
        if self._closed:
            return
        self._closed = True
        self._pool.close()
