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
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

from ticketmail.backends._common import (
    AUDIT_COLUMNS,
    QUARANTINE_COLUMNS,
    audit_from_row,
)
from ticketmail.backends._sqlite_unit import (
    BY_NUMBER,
    TICKET_COLUMNS,
    Lookup,
    SQLiteUnitOfWork,
    address,
    dt_from,
    load_ticket,
    quarantine_record,
    ticket_from_row,
)
from ticketmail.backends.base import (
    AttachmentRef,
    AuditRecord,
    BaseBackend,
    CustomFieldValue,
    Entry,
    QuarantineRecord,
    Ticket,
    follow_merges,
    load_custom_value,
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
_SYNCHRONOUS: frozenset[str] = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})


# --- value conversion ---------------------------------------------------------------------------------------


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
    def unit_of_work(self) -> Iterator[SQLiteUnitOfWork]:
        """`BEGIN IMMEDIATE`; `COMMIT` on normal exit, `ROLLBACK` when the block raises."""
        with self._lock:
            if self._in_unit:
                raise BackendError("a unit of work is already open on this backend; nested units are not supported")
            conn = self._connection()
            with translate_errors("begin a transaction"):
                conn.execute("BEGIN IMMEDIATE")
            uow = SQLiteUnitOfWork(conn)
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
            lookup = Lookup(conn)
            ticket = lookup.ticket_by_number(number)
            return follow_merges(lookup, ticket) if follow and ticket is not None else ticket

    def get_ticket(self, number: str) -> Ticket | None:
        """One ticket by number."""
        with self._read("read a ticket") as conn:
            found = load_ticket(conn, BY_NUMBER, number)
        return None if found is None else found[1]

    def list_tickets(self, *, limit: int | None = None, offset: int = 0) -> Sequence[Ticket]:
        """Tickets oldest first; `offset`/`limit` page through them."""
        with self._read("list tickets") as conn:
            rows = conn.execute(
                f"SELECT {TICKET_COLUMNS} FROM tickets ORDER BY id LIMIT ? OFFSET ?",  # noqa: S608
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
            ticket_from_row(
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
                author=address(row[2], row[3]),
                body=row[4],
                created=dt_from(row[5]),
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
                        f"SELECT id, {AUDIT_COLUMNS} FROM audit WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608
                        (last, _PAGE),
                    )
                    .fetchall()
                )
            yield from (audit_from_row(row, dt_from(row[1])) for row in rows)
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def quarantined(self) -> Sequence[QuarantineRecord]:
        """Every quarantined message, oldest first."""
        with self._lock, translate_errors("read the quarantine"):
            rows = (
                self._connection()
                .execute(f"SELECT {QUARANTINE_COLUMNS} FROM quarantine ORDER BY id")  # noqa: S608
                .fetchall()
            )
        return [quarantine_record(row) for row in rows]

    def close(self) -> None:
        """Close the connection (idempotent). Later calls raise `BackendError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with translate_errors("close the database"):
                self._conn.close()
