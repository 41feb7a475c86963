"""The SQLite backend: the embedded default, on the standard library's `sqlite3` only.

Why it is built this way:

* **One transaction per message.** A unit of work is `BEGIN IMMEDIATE` ... `COMMIT`: the write lock is
  taken *before* the ledger check, so two processes ingesting the same mailbox serialize cleanly and can
  never both see "not processed yet" for one message (a deferred `BEGIN` would let both read, then one
  fail to upgrade its lock with `SQLITE_BUSY`).
* **WAL journal, `synchronous=NORMAL`.** Readers never block the writer and the writer never blocks
  readers. In WAL mode `NORMAL` syncs the log only at checkpoints, not at every commit: a power loss may
  lose the last few committed units, but never corrupts the file and never keeps half a unit. Losing a
  committed unit is safe for exactly-once as long as the mailbox item was not yet acknowledged; with
  `synchronous="FULL"` every commit is durable before the source acknowledges (about 2-10x slower on
  spinning disks, little difference on SSDs). See `docs/backends.md`.
* **Foreign keys on, parameterized SQL only.** Every value travels as a `?` parameter; the only values
  formatted into SQL are pragma settings (pragmas take no parameters), each checked first.
* **Forward migrations.** `MIGRATIONS` is an append-only list; `schema_version` records each
  applied step. Opening an older file migrates it inside one `BEGIN IMMEDIATE` transaction; a file from
  newer code raises `SchemaVersionError` instead of guessing.
* **Errors at the boundary.** `sqlite3` exceptions become `BackendError`
  (`raise ... from exc`); "database is locked" after `timeout` seconds becomes
  `BackendLockedError`.

Threads: a backend object owns one connection, guarded by a re-entrant lock, so it may be shared by threads
(their units of work then run one after another). For parallel writers, open one backend per process (or per
thread) on the same file: SQLite serializes their transactions.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

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
    follow_merges,
    load_custom_value,
    normalize_message_id,
)
from ticketmail.backends.sqlite_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    BackendLockedError,
    Migration,
    SchemaVersionError,
    current_version,
    migrate,
    translate_errors,
)
from ticketmail.errors import BackendError, InvalidValueError
from ticketmail.model import Address, Provenance

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "BackendLockedError",
    "Migration",
    "SQLiteBackend",
    "SchemaVersionError",
    "migrate",
]

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


# --- value conversion ---------------------------------------------------------------------------------------


def _ts(value: _dt.datetime) -> str:
    # Fixed-width UTC ISO 8601 sorts as text, so range queries (rate limits) compare strings.
    return as_utc(value).isoformat(timespec="microseconds")


def _dt_from(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text)


def _address(email: str | None, name: str | None) -> Address | None:
    return None if email is None else Address(email, name)


_TICKET_COLUMNS = (
    "id, number, subject, requester_email, requester_name, status, created, updated, source, mailbox, "
    "department, team, category, priority, topic_id, assignee, merged_into, entry_count"
)

_Extras = tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, CustomFieldValue], ...]]


def _ticket_from_row(row: Sequence[Any], extras: _Extras) -> Ticket:
    tags, participants, custom = extras
    return ticket_from_columns(
        row,
        created=_dt_from(row[6]),
        updated=_dt_from(row[7]),
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


def _load_ticket(conn: sqlite3.Connection, where: str, param: object) -> tuple[int, Ticket] | None:
    # `where` is one of the fixed strings below, never caller input.
    row = conn.execute(f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE {where}", (param,)).fetchone()  # noqa: S608
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
    return tid, _ticket_from_row(row, (tuple(tags), tuple(parts), tuple(custom)))


_BY_NUMBER = "number = ?"
_BY_MESSAGE_ID = "id = (SELECT ticket_id FROM message_ids WHERE message_id = ?)"


class _Lookup:
    """Ticket lookups on a connection inside a read transaction (for `follow_merges()`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def ticket_by_number(self, number: str) -> Ticket | None:
        found = _load_ticket(self._conn, _BY_NUMBER, number)
        return None if found is None else found[1]


class _SQLiteUnitOfWork:
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
            key=key, action=row[0], at=_dt_from(row[1]), ticket=row[2], entry_id=row[3], message_id=row[4]
        )

    def ticket_by_number(self, number: str) -> Ticket | None:
        """The ticket with this number, or `None`."""
        with translate_errors("read a ticket"):
            found = _load_ticket(self._c(), _BY_NUMBER, number)
        return None if found is None else found[1]

    def ticket_by_message_id(self, message_id: str) -> Ticket | None:
        """The ticket whose thread holds this message id, or `None`."""
        with translate_errors("look up a message id"):
            found = _load_ticket(self._c(), _BY_MESSAGE_ID, normalize_message_id(message_id))
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
                    (email.casefold(), _ts(since)),
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
                (record.key, record.action, _ts(record.at), record.ticket, record.entry_id, record.message_id),
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
        created = _ts(ticket.created)
        tags = tuple(dict.fromkeys(ticket.tags))
        with translate_errors("create a ticket"):
            cur = conn.execute(
                "INSERT INTO tickets (number, subject, requester_email, requester_name, requester_key, status,"
                " created, updated, source, mailbox, department, team, category, priority, topic_id, assignee)"
                " VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        created_dt = _dt_from(created)
        return Ticket(
            number=ticket.number,
            subject=ticket.subject,
            requester=ticket.requester,
            status="open",
            created=created_dt,
            updated=created_dt,
            source=ticket.source,
            mailbox=ticket.mailbox,
            department=ticket.department,
            team=ticket.team,
            category=ticket.category,
            priority=ticket.priority,
            topic_id=ticket.topic_id,
            assignee=ticket.assignee,
            tags=tags,
            custom_fields=tuple((name, load_custom_value(text)) for name, text in stored),  # copies, as read back
        )

    def append_entry(self, number: str, entry: NewEntry) -> Entry:
        """Append an entry, storing attachments once and recording its message id."""
        check_kind(entry.kind)
        conn = self._c()
        tid = self._ticket_id(number)
        message_id = normalize_message_id(entry.message_id) if entry.message_id is not None else None
        created = _ts(entry.created)
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
        return Entry(
            id=entry_id,
            ticket=number,
            kind=entry.kind,
            author=author,
            body=entry.body,
            created=_dt_from(created),
            html=entry.html,
            message_id=message_id,
            attachments=tuple(r.sha256 for r in refs),
            files=refs,
        )

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
                (status, merged_into, None if at is None else _ts(at), tid),
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
        prov = record.provenance
        with translate_errors("write the audit log"):
            self._c().execute(
                "INSERT INTO audit (at, action, message_id, prov_mailbox, prov_kind, prov_key, ticket, entry_id,"
                " reasons, origin, sender, subject, headers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _ts(record.at),
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
        conn = self._c()
        with translate_errors("remove a quarantined message"):
            row = conn.execute(
                "SELECT id, at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key, attempts"
                " FROM quarantine WHERE id = ?",
                (quarantine_id,),
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM quarantine WHERE id = ?", (quarantine_id,))
        return _quarantine_record(row)

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
                    (_ts(record.at), record.reason_code, record.reason, row[0]),
                )
                return int(row[0])
            cur = conn.execute(
                "INSERT INTO quarantine (at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key, sha256,"
                " attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (_ts(record.at), record.raw, record.reason_code, record.reason, mailbox, kind, key, digest),
            )
        assert cur.lastrowid is not None  # noqa: S101
        return cur.lastrowid


_SYNCHRONOUS: frozenset[str] = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_PAGE = 500


class SQLiteBackend(BaseBackend):
    """A `Backend` in one SQLite file (or `":memory:"`).

    Args:
        path: The database file (created if missing) or `":memory:"`.
        timeout: Seconds to wait for another connection's lock (SQLite's busy timeout) before raising
            `BackendLockedError`.
        synchronous: The `synchronous` pragma. `NORMAL` (default) with WAL is crash-safe and fast;
            `FULL` makes every commit durable against power loss too.
        wal_autocheckpoint: WAL pages (4 KiB) written before SQLite copies them into the database file.
            A checkpoint is the only point where `NORMAL` syncs, so a larger value means fewer fsyncs
            during bulk ingestion (the default, about 64 MiB, roughly doubled throughput in our
            measurements against SQLite's 1000) at the cost of a larger `-wal` file between checkpoints.
        cache_mib: Page cache size per connection, in MiB.

    Use as a context manager or call `close()`. Safe to share between threads (one lock serializes
    use of the connection) and between processes (one backend per process on the same file).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        synchronous: Synchronous = "NORMAL",
        wal_autocheckpoint: int = 16_000,
        cache_mib: int = 16,
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise InvalidValueError(
                f"synchronous must be one of {sorted(_SYNCHRONOUS)}, got {synchronous!r}", field="synchronous"
            )
        if timeout < 0:
            raise InvalidValueError(f"timeout must be >= 0 seconds, got {timeout!r}", field="timeout")
        for name, value in (("wal_autocheckpoint", wal_autocheckpoint), ("cache_mib", cache_mib)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidValueError(f"{name} must be a positive integer, got {value!r}", field=name)
        self._path = os.fspath(path)
        self._lock = threading.RLock()
        self._in_unit = False
        self._closed = False
        with translate_errors(f"open {self._path!r}"):
            conn = sqlite3.connect(
                self._path, timeout=timeout, isolation_level=None, check_same_thread=False, cached_statements=256
            )
        self._conn = conn
        try:
            with translate_errors("configure the connection"):
                conn.execute("PRAGMA foreign_keys = ON")
                if self._path != ":memory:":
                    conn.execute("PRAGMA journal_mode = WAL").fetchone()
                # Pragmas take no parameters; each value below was checked (fixed set or positive int) above.
                conn.execute(f"PRAGMA synchronous = {synchronous}")
                conn.execute(f"PRAGMA wal_autocheckpoint = {int(wal_autocheckpoint)}")
                conn.execute(f"PRAGMA journal_size_limit = {int(wal_autocheckpoint) * 4096}")
                conn.execute(f"PRAGMA cache_size = {-1024 * int(cache_mib)}")
            migrate(conn)
        except BaseException:
            conn.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteBackend({self._path!r})"

    @property
    def path(self) -> str:
        """The database path as given."""
        return self._path

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._lock, translate_errors("read the schema version"):
            return current_version(self._connection())

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise BackendError(f"the SQLite backend for {self._path!r} is closed")
        return self._conn

    @contextmanager
    def unit_of_work(self) -> Iterator[_SQLiteUnitOfWork]:
        """`BEGIN IMMEDIATE`; `COMMIT` on normal exit, `ROLLBACK` when the block raises."""
        with self._lock:
            if self._in_unit:
                raise BackendError("a unit of work is already open on this backend; nested units are not supported")
            conn = self._connection()
            with translate_errors("begin a transaction"):
                conn.execute("BEGIN IMMEDIATE")
            uow = _SQLiteUnitOfWork(conn)
            self._in_unit = True
            try:
                yield uow
            except BaseException:
                uow.open = False
                self._rollback(conn)
                raise
            else:
                uow.open = False
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback(conn)
                    if "locked" in str(exc).lower() or "busy" in str(exc).lower():
                        raise BackendLockedError(f"SQLite could not commit: {exc}") from exc
                    raise BackendError(f"SQLite could not commit: {exc}") from exc
            finally:
                self._in_unit = False

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the original exception is the one worth reporting
                conn.execute("ROLLBACK")

    @contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for a multi-statement read (a deferred transaction in WAL is cheap)."""
        with self._lock, translate_errors(action):
            conn = self._connection()
            if self._in_unit:  # a read from inside this thread's own unit sees its writes
                yield conn
                return
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def is_processed(self, key: str) -> bool:
        """Whether `key` is in the ledger (a read transaction: no write lock taken)."""
        with self._read("read the ledger") as conn:
            return conn.execute("SELECT 1 FROM ledger WHERE key = ?", (key,)).fetchone() is not None

    def find_ticket(self, number: str, *, follow: bool = True) -> Ticket | None:
        """The ticket with `number`; with `follow`, the surviving ticket of its merge chain."""
        with self._read("read a ticket") as conn:
            lookup = _Lookup(conn)
            ticket = lookup.ticket_by_number(number)
            return follow_merges(lookup, ticket) if follow and ticket is not None else ticket

    def get_ticket(self, number: str) -> Ticket | None:
        """One ticket by number."""
        with self._read("read a ticket") as conn:
            found = _load_ticket(conn, _BY_NUMBER, number)
        return None if found is None else found[1]

    def list_tickets(self, *, limit: int | None = None, offset: int = 0) -> Sequence[Ticket]:
        """Tickets oldest first; `offset`/`limit` page through them."""
        with self._read("list tickets") as conn:
            rows = conn.execute(
                f"SELECT {_TICKET_COLUMNS} FROM tickets ORDER BY id LIMIT ? OFFSET ?",  # noqa: S608
                (-1 if limit is None else max(limit, 0), max(offset, 0)),
            ).fetchall()
            if not rows:
                return []
            low, high = rows[0][0], rows[-1][0]
            tags: dict[int, list[str]] = {}
            for tid, tag in conn.execute(
                "SELECT ticket_id, tag FROM tags WHERE ticket_id BETWEEN ? AND ? ORDER BY ticket_id, position",
                (low, high),
            ):
                tags.setdefault(tid, []).append(tag)
            parts: dict[int, list[str]] = {}
            for tid, email in conn.execute(
                "SELECT ticket_id, email FROM participants WHERE ticket_id BETWEEN ? AND ?"
                " ORDER BY ticket_id, position",
                (low, high),
            ):
                parts.setdefault(tid, []).append(email)
            custom: dict[int, list[tuple[str, CustomFieldValue]]] = {}
            for tid, name, value in conn.execute(
                "SELECT ticket_id, name, value FROM custom_fields WHERE ticket_id BETWEEN ? AND ?"
                " ORDER BY ticket_id, position",
                (low, high),
            ):
                custom.setdefault(tid, []).append((name, load_custom_value(value)))
        return [
            _ticket_from_row(
                row, (tuple(tags.get(row[0], ())), tuple(parts.get(row[0], ())), tuple(custom.get(row[0], ())))
            )
            for row in rows
        ]

    def entries(self, number: str) -> Sequence[Entry]:
        """A ticket's thread, oldest first."""
        with self._read("read a thread") as conn:
            rows = conn.execute(
                "SELECT e.id, e.kind, e.author_email, e.author_name, e.body, e.created, e.html, e.message_id"
                " FROM entries e JOIN tickets t ON t.id = e.ticket_id WHERE t.number = ? ORDER BY e.id",
                (number,),
            ).fetchall()
            refs: dict[int, list[AttachmentRef]] = {}
            if rows:
                for eid, sha, filename, ctype, size, disp, cid in conn.execute(
                    "SELECT ea.entry_id, ea.sha256, ea.filename, ea.content_type, ea.size, ea.disposition,"
                    " ea.content_id FROM entry_attachments ea JOIN entries e ON e.id = ea.entry_id"
                    " JOIN tickets t ON t.id = e.ticket_id WHERE t.number = ? ORDER BY ea.entry_id, ea.position",
                    (number,),
                ):
                    refs.setdefault(eid, []).append(AttachmentRef(sha, filename, ctype, size, disp, cid))
        return [
            Entry(
                id=row[0],
                ticket=number,
                kind=row[1],
                author=_address(row[2], row[3]),
                body=row[4],
                created=_dt_from(row[5]),
                html=row[6],
                message_id=row[7],
                attachments=tuple(r.sha256 for r in refs.get(row[0], ())),
                files=tuple(refs.get(row[0], ())),
            )
            for row in rows
        ]

    def attachment(self, sha256: str) -> bytes | None:
        """An attachment's bytes by digest."""
        with self._lock, translate_errors("read an attachment"):
            row = self._connection().execute("SELECT data FROM attachments WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else bytes(row[0])

    def audit_log(self) -> Iterator[AuditRecord]:
        """Every decision, oldest first, read lazily in pages (the lock is not held between pages)."""
        last = 0
        while True:
            with self._lock, translate_errors("read the audit log"):
                rows = (
                    self._connection()
                    .execute(
                        "SELECT id, at, action, message_id, prov_mailbox, prov_kind, prov_key, ticket, entry_id,"
                        " reasons, origin, sender, subject, headers FROM audit WHERE id > ? ORDER BY id LIMIT ?",
                        (last, _PAGE),
                    )
                    .fetchall()
                )
            for row in rows:
                yield AuditRecord(
                    at=_dt_from(row[1]),
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
        with self._lock, translate_errors("read the quarantine"):
            rows = (
                self._connection()
                .execute(
                    "SELECT id, at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key, attempts"
                    " FROM quarantine ORDER BY id"
                )
                .fetchall()
            )
        return [_quarantine_record(row) for row in rows]

    def close(self) -> None:
        """Close the connection (idempotent). Later calls raise `BackendError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with translate_errors("close the database"):
                self._conn.close()


def _quarantine_record(row: Sequence[Any]) -> QuarantineRecord:
    """A `quarantine` row (id, at, raw, reason_code, reason, mailbox, kind, key, attempts) as a record."""
    return QuarantineRecord(
        at=_dt_from(row[1]),
        raw=bytes(row[2]),
        reason_code=row[3],
        reason=row[4],
        provenance=None if row[5] is None else Provenance(row[5], row[6], row[7]),
        id=row[0],
        attempts=row[8],
    )
