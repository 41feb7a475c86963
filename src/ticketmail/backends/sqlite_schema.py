"""The SQLite schema: forward migrations, the schema version check, and error translation.

Split from `ticketmail.backends.sqlite` so the schema reads as one document. `MIGRATIONS` is
append-only: a released step is never edited; a schema change is a new step at the end. Each step runs
inside the one `BEGIN IMMEDIATE` transaction `migrate()` opens, so concurrent openers serialize and
a failing step leaves the file as it was.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs

from ticketmail.errors import BackendError, InvalidValueError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "BackendLockedError",
    "Migration",
    "SchemaVersionError",
    "current_version",
    "migrate",
    "translate_errors",
]


class BackendLockedError(BackendError):
    """The database stayed locked by another connection for longer than the backend's `timeout`."""

    code = "backend_locked"


class SchemaVersionError(BackendError):
    """The database file was written by a newer ticketmail whose schema this code does not know."""

    code = "schema_too_new"
    status = 500
    retryable = False


@attrs.frozen
class Migration:
    """One forward step of the schema: SQL statements run in order, then an optional Python step.

    Steps are never edited once released; a change to the schema is a new step at the end of
    `MIGRATIONS`. `python` receives the connection inside the migration transaction (for backfills
    SQL cannot express).
    """

    version: int
    description: str
    statements: tuple[str, ...]
    python: Callable[[sqlite3.Connection], None] | None = None


def _sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _backfill_quarantine(conn: sqlite3.Connection) -> None:
    rows = conn.execute("SELECT id, raw FROM quarantine WHERE sha256 IS NULL").fetchall()
    conn.executemany("UPDATE quarantine SET sha256 = ? WHERE id = ?", [(_sha256(raw), qid) for qid, raw in rows])


_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_CHOICE_REPR = re.compile(rf"Choice\(key=({_QUOTED}), label=({_QUOTED})\)")
_CHOICES_REPR = re.compile(rf"\(\s*(?:{_CHOICE_REPR.pattern}\s*,\s*)+(?:{_CHOICE_REPR.pattern})?\s*\)")


def _old_custom_value(text: str) -> object:
    """The JSON value for a custom field written before version 4, which stored `str(value)`.

    Text stays text: whether `"12.5"` was a number or a product code cannot be told any more. Only the
    unmistakable `repr` of a choice (`Choice(key='p2', label='Scanner')`, or a tuple of them) is turned
    back into `{"key": ..., "label": ...}` (a list for several).
    """
    single = _CHOICE_REPR.fullmatch(text)
    if single is not None:
        return {"key": ast.literal_eval(single.group(1)), "label": ast.literal_eval(single.group(2))}
    if _CHOICES_REPR.fullmatch(text):
        return [
            {"key": ast.literal_eval(m.group(1)), "label": ast.literal_eval(m.group(2))}
            for m in _CHOICE_REPR.finditer(text)
        ]
    return text


def _custom_values_to_json(conn: sqlite3.Connection) -> None:
    rows = conn.execute("SELECT ticket_id, name, value FROM custom_fields").fetchall()
    conn.executemany(
        "UPDATE custom_fields SET value = ? WHERE ticket_id = ? AND name = ?",
        [
            (json.dumps(_old_custom_value(value), ensure_ascii=False, separators=(",", ":")), tid, name)
            for tid, name, value in rows
        ],
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tickets, entries, content-addressed attachments, message ids, ledger, audit log, quarantine",
        (
            """CREATE TABLE tickets (
                id INTEGER PRIMARY KEY,
                number TEXT NOT NULL UNIQUE,
                subject TEXT NOT NULL,
                requester_email TEXT NOT NULL,
                requester_name TEXT,
                requester_key TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('open', 'closed', 'merged')),
                created TEXT NOT NULL,
                updated TEXT NOT NULL,
                source TEXT NOT NULL,
                mailbox TEXT,
                department TEXT,
                team TEXT,
                category TEXT,
                priority INTEGER,
                topic_id INTEGER,
                assignee TEXT,
                merged_into TEXT REFERENCES tickets (number),
                entry_count INTEGER NOT NULL DEFAULT 0,
                CHECK ((status = 'merged') = (merged_into IS NOT NULL))
            )""",
            "CREATE INDEX tickets_requester_created ON tickets (requester_key, created)",
            """CREATE TABLE entries (
                id INTEGER PRIMARY KEY,
                ticket_id INTEGER NOT NULL REFERENCES tickets (id),
                kind TEXT NOT NULL CHECK (kind IN ('message', 'reply', 'note')),
                author_email TEXT,
                author_name TEXT,
                body TEXT NOT NULL,
                html TEXT,
                created TEXT NOT NULL,
                message_id TEXT
            )""",
            "CREATE INDEX entries_ticket ON entries (ticket_id, id)",
            """CREATE TABLE attachments (
                sha256 TEXT PRIMARY KEY,
                size INTEGER NOT NULL,
                data BLOB NOT NULL
            )""",
            """CREATE TABLE entry_attachments (
                entry_id INTEGER NOT NULL REFERENCES entries (id),
                position INTEGER NOT NULL,
                sha256 TEXT NOT NULL REFERENCES attachments (sha256),
                filename TEXT NOT NULL,
                content_type TEXT NOT NULL,
                size INTEGER NOT NULL,
                disposition TEXT NOT NULL,
                content_id TEXT,
                PRIMARY KEY (entry_id, position)
            ) WITHOUT ROWID""",
            """CREATE TABLE message_ids (
                message_id TEXT PRIMARY KEY,
                ticket_id INTEGER NOT NULL REFERENCES tickets (id),
                direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound'))
            ) WITHOUT ROWID""",
            """CREATE TABLE participants (
                ticket_id INTEGER NOT NULL REFERENCES tickets (id),
                email_key TEXT NOT NULL,
                position INTEGER NOT NULL,
                email TEXT NOT NULL,
                PRIMARY KEY (ticket_id, email_key)
            ) WITHOUT ROWID""",
            """CREATE TABLE tags (
                ticket_id INTEGER NOT NULL REFERENCES tickets (id),
                tag TEXT NOT NULL,
                position INTEGER NOT NULL,
                PRIMARY KEY (ticket_id, tag)
            ) WITHOUT ROWID""",
            """CREATE TABLE custom_fields (
                ticket_id INTEGER NOT NULL REFERENCES tickets (id),
                name TEXT NOT NULL,
                position INTEGER NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (ticket_id, name)
            ) WITHOUT ROWID""",
            """CREATE TABLE ledger (
                key TEXT PRIMARY KEY,
                action TEXT NOT NULL,
                at TEXT NOT NULL,
                ticket TEXT,
                entry_id INTEGER,
                message_id TEXT
            ) WITHOUT ROWID""",
            """CREATE TABLE audit (
                id INTEGER PRIMARY KEY,
                at TEXT NOT NULL,
                action TEXT NOT NULL,
                message_id TEXT,
                prov_mailbox TEXT,
                prov_kind TEXT,
                prov_key TEXT,
                ticket TEXT,
                entry_id INTEGER,
                reasons TEXT NOT NULL
            )""",
            """CREATE TABLE quarantine (
                id INTEGER PRIMARY KEY,
                at TEXT NOT NULL,
                raw BLOB NOT NULL,
                reason_code TEXT NOT NULL,
                reason TEXT NOT NULL,
                prov_mailbox TEXT,
                prov_kind TEXT,
                prov_key TEXT
            )""",
        ),
    ),
    Migration(
        2,
        "quarantine keeps one row per (provenance, bytes) with an attempt count",
        (
            "ALTER TABLE quarantine ADD COLUMN sha256 TEXT",
            "ALTER TABLE quarantine ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1",
            "CREATE INDEX quarantine_item ON quarantine (sha256, prov_mailbox, prov_kind, prov_key)",
        ),
        python=_backfill_quarantine,
    ),
    Migration(
        3,
        "the audit log says where a message came from in words, its sender, subject and deciding headers",
        (
            "ALTER TABLE audit ADD COLUMN origin TEXT",
            "ALTER TABLE audit ADD COLUMN sender TEXT",
            "ALTER TABLE audit ADD COLUMN subject TEXT",
            "ALTER TABLE audit ADD COLUMN headers TEXT",
            "CREATE INDEX audit_ticket ON audit (ticket)",
            "CREATE INDEX audit_message_id ON audit (message_id)",
        ),
    ),
    Migration(
        4,
        "custom field values are JSON (typed: numbers, booleans, choices as key and label, ISO 8601 dates)",
        (),
        python=_custom_values_to_json,
    ),
)
"""Every schema step, oldest first. `MIGRATIONS[-1].version` is the version this code writes."""

SCHEMA_VERSION = MIGRATIONS[-1].version


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Map `sqlite3` exceptions raised while doing `action` onto ticketmail errors."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            raise BackendLockedError(f"SQLite database stayed locked while trying to {action}: {exc}") from exc
        raise BackendError(f"SQLite failed to {action}: {exc}") from exc
    except sqlite3.Error as exc:
        raise BackendError(f"SQLite failed to {action}: {exc}") from exc
    except UnicodeEncodeError as exc:  # a lone surrogate (e.g. from surrogateescape) has no UTF-8 form
        raise InvalidValueError(
            f"SQLite cannot store text with a lone surrogate (position {exc.start}) while trying to {action}"
        ) from exc
    except OverflowError as exc:  # integers beyond 64 bits
        raise InvalidValueError(f"SQLite cannot store an integer this large while trying to {action}") from exc


def current_version(conn: sqlite3.Connection) -> int:
    """The highest applied migration of `conn` (0 for a new file)."""
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, *, target: int | None = None) -> int:
    """Bring the schema of `conn` forward to `target` (default: the newest); return the version reached.

    Runs in one `BEGIN IMMEDIATE` transaction, so concurrent openers serialize and a failed step leaves
    the file as it was. A database newer than this code raises `SchemaVersionError`.
    """
    goal = SCHEMA_VERSION if target is None else target
    with translate_errors("migrate the schema"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied TEXT NOT NULL)"
            )
            current = current_version(conn)
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"the database has schema version {current}, newer than {SCHEMA_VERSION} that this ticketmail"
                    " knows; upgrade ticketmail (downgrading the file is not supported)"
                )
            for step in MIGRATIONS:
                if current < step.version <= goal:
                    for statement in step.statements:
                        conn.execute(statement)
                    if step.python is not None:
                        step.python(conn)
                    conn.execute(
                        "INSERT INTO schema_version (version, description, applied)"
                        " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                        (step.version, step.description),
                    )
                    current = step.version
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return current
