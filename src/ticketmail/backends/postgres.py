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
  `BackendConflictError`, a transient `BackendError`: nothing is committed and the source keeps the
  message (`ticketmail.backends._pg_replay`).
* **Few round trips.** A unit runs in psycopg's pipeline mode and sends what it need not wait for without
  waiting; a new conversation costs about four round trips, the commit included
  (`ticketmail.backends._pg_unit`). `processed_many()` checks a message's ledger and duplicate keys in one.
* **Ticket numbers unique across processes**: the `UNIQUE` constraint decides; a number taken by a
  concurrent unit makes `create_ticket()` raise `TicketNumberTakenError` without aborting the
  transaction.
* **Errors at the boundary**: psycopg exceptions become ticketmail errors (see
  `ticketmail.backends.postgres_schema`), transient (`BackendUnavailableError`,
  `BackendConflictError`) kept apart from permanent (`BackendSetupError`). Passwords in
  connection URLs never appear in reprs or errors.
* **Durability**: `synchronous_commit` is the server's (`on` by default: a commit is on disk before the
  source acknowledges). `synchronous_commit="off"` (or `?synchronous_commit=off` in the URL) is an explicit
  choice that trades the last few hundred milliseconds of commits on a server crash for speed, the same
  trade as SQLite's default `synchronous=NORMAL` in WAL mode; the database stays consistent either way.

Threads and processes: the backend object is thread-safe (each unit of work borrows its own connection from
the pool); open one backend per process (after a fork, never share one across it).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from ticketmail._validators import at_least, one_of, optional, positive
from ticketmail.backends import _pg_rows as q
from ticketmail.backends._pg_fence import LeaseLostError, current_fence, set_fence
from ticketmail.backends._pg_unit import PgUnitOfWork
from ticketmail.backends.base import (
    AuditRecord,
    BaseBackend,
    Entry,
    QuarantineRecord,
    Ticket,
    follow_merges,
)
from ticketmail.backends.postgres_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    BackendConflictError,
    BackendSetupError,
    BackendUnavailableError,
    PgMigration,
    SchemaVersionError,
    current_version,
    migrate,
    translate_all,
)
from ticketmail.errors import BackendError, InvalidValueError

if TYPE_CHECKING:
    from ticketmail.backends.postgres_leases import LeaseManager

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "BackendConflictError",
    "BackendSetupError",
    "BackendUnavailableError",
    "LeaseLostError",
    "PgMigration",
    "PostgresBackend",
    "PostgresOptions",
    "SchemaVersionError",
    "current_fence",
    "redact_url",
    "set_fence",
]

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PAGE = 500
SYNCHRONOUS_COMMIT = ("on", "off", "local", "remote_write", "remote_apply")


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


def _check_schema_name(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not _SCHEMA_NAME.match(value):
        raise InvalidValueError(
            f"postgres.schema must be a plain identifier (letters, digits, _), got {value!r}", field="schema"
        )


@attrs.frozen
class PostgresOptions:
    """The checked options of a `PostgresBackend` (see its arguments)."""

    schema: str = attrs.field(default="ticketmail", validator=_check_schema_name)
    pool_size: int = attrs.field(default=5, validator=at_least(1, "postgres"))
    min_connections: int = attrs.field(default=1, validator=at_least(0, "postgres"))
    timeout: float = attrs.field(default=30.0, validator=positive("postgres"))
    synchronous_commit: str | None = attrs.field(
        default=None, validator=optional(one_of(SYNCHRONOUS_COMMIT, "postgres"))
    )
    lease_ttl: float | None = attrs.field(default=None, validator=optional(positive("postgres")))

    def __attrs_post_init__(self) -> None:
        if self.min_connections > self.pool_size:
            raise InvalidValueError(
                f"postgres.min_connections must not exceed pool_size ({self.pool_size}), got {self.min_connections}",
                field="min_connections",
            )


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
        synchronous_commit: `None` keeps the server's setting (`on` unless the server says otherwise: each
            commit is on disk before it returns). `"off"` makes commits faster at the risk of losing the last
            moments of commits (never consistency) if the server crashes, like SQLite's `synchronous=NORMAL`.
        lease_ttl: Default lease time of `lease_manager()` (seconds; `None`: `DEFAULT_LEASE_TTL`, 30).
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
        lease_ttl: float | None = None,
    ) -> None:
        options = PostgresOptions(schema, pool_size, min_connections, timeout, synchronous_commit, lease_ttl)
        self.options = options
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
            with translate_all("read the schema"):
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
                row = conn.execute("SELECT pg_get_serial_sequence('entries', 'id')").fetchone()
            self._entry_sequence = str(row[0]) if row is not None else "entries_id_seq"
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
    def unit_of_work(self) -> Iterator[PgUnitOfWork]:
        """`BEGIN` (`READ COMMITTED`); `COMMIT` on normal exit, `ROLLBACK` when the block raises.

        The unit runs in psycopg's pipeline mode: statements whose results the unit does not need (most
        inserts) are sent without waiting for the server, and a read waits for everything before it, so a
        message costs a few network round trips instead of one per statement. Any error of a sent
        statement still ends the unit (at the next read or at the commit) and rolls it all back.
        """
        if getattr(self._local, "conn", None) is not None:
            raise BackendError("a unit of work is already open in this thread; nested units are not supported")
        conn = self._begin()
        uow = PgUnitOfWork(conn, schema=self.schema, entry_sequence=self._entry_sequence)
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
                uow.commit()
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
            row = conn.execute(q.BY_NUMBER, (number,)).fetchone()
        return None if row is None else q.ticket_from_row(row)

    def list_tickets(self, *, limit: int | None = None, offset: int = 0) -> Sequence[Ticket]:
        """Tickets oldest first; `offset`/`limit` page through them."""
        with self._read("list tickets") as conn:
            rows = conn.execute(
                q.TICKET_SELECT + " ORDER BY t.id LIMIT %s OFFSET %s",
                (None if limit is None else max(limit, 0), max(offset, 0)),
            ).fetchall()
        return [q.ticket_from_row(row) for row in rows]

    def entries(self, number: str) -> Sequence[Entry]:
        """A ticket's thread, oldest first (one statement: a consistent snapshot)."""
        with self._read("read a thread") as conn:
            rows = conn.execute(q.ENTRY_SELECT, (number,)).fetchall()
        return [q.entry_from_row(number, row) for row in rows]

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
                rows = conn.execute(q.AUDIT_PAGE, (last, _PAGE)).fetchall()
            yield from (q.audit_record(row) for row in rows)
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def quarantined(self) -> Sequence[QuarantineRecord]:
        """Every quarantined message, oldest first."""
        with self._read("read the quarantine") as conn:
            rows = conn.execute(q.QUARANTINE_ALL).fetchall()
        return [q.quarantine_record(row) for row in rows]

    def lease_manager(
        self, mailboxes: Sequence[str], *, ttl: float | None = None, fair_share: bool = True
    ) -> LeaseManager:
        """Mailbox leases for a fetch worker sharing `mailboxes` with workers on other machines.

        See `ticketmail.backends.postgres_leases`; `ttl` defaults to the backend's `lease_ttl`, else
        `DEFAULT_LEASE_TTL` (30 s).
        """
        from ticketmail.backends.postgres_leases import DEFAULT_LEASE_TTL, LeaseManager

        ttl = ttl if ttl is not None else self.options.lease_ttl
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


class _Lookup:
    """Ticket lookups on a read connection (for `follow_merges()`)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def ticket_by_number(self, number: str) -> Ticket | None:
        row = self._conn.execute(q.BY_NUMBER, (number,)).fetchone()
        return None if row is None else q.ticket_from_row(row)
