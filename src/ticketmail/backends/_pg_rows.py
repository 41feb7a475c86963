"""The PostgreSQL backend's SQL texts and row readers (shared by its unit of work and its readers)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ticketmail.backends._common import (
    AUDIT_COLUMNS,
    QUARANTINE_COLUMNS,
    audit_from_row,
    quarantine_from_row,
    ticket_from_columns,
)
from ticketmail.backends.base import (
    AttachmentRef,
    AuditRecord,
    Entry,
    QuarantineRecord,
    Ticket,
    as_utc,
    load_custom_value,
)
from ticketmail.model import Address

TICKET_SELECT = (
    "SELECT t.id, t.number, t.subject, t.requester_email, t.requester_name, t.status, t.created, t.updated,"
    " t.source, t.mailbox, t.department, t.team, t.category, t.priority, t.topic_id, t.assignee, t.merged_into,"
    " t.entry_count,"
    " ARRAY(SELECT tag FROM tags WHERE ticket_id = t.id ORDER BY position),"
    " ARRAY(SELECT email FROM participants WHERE ticket_id = t.id ORDER BY position),"
    " ARRAY(SELECT name FROM custom_fields WHERE ticket_id = t.id ORDER BY position),"
    " ARRAY(SELECT value FROM custom_fields WHERE ticket_id = t.id ORDER BY position)"
    " FROM tickets t"
)
BY_NUMBER = TICKET_SELECT + " WHERE t.number = %s"
BY_NUMBER_LOCKED = BY_NUMBER + " FOR UPDATE OF t"
BY_MESSAGE_ID = TICKET_SELECT + " WHERE t.id = (SELECT ticket_id FROM message_ids WHERE message_id = %s)"  # noqa: S608

ENTRY_SELECT = (
    "SELECT e.id, e.kind, e.author_email, e.author_name, e.body, e.created, e.html, e.message_id,"
    " (SELECT json_agg(json_build_array(a.sha256, a.filename, a.content_type, a.size, a.disposition,"
    " a.content_id) ORDER BY a.position) FROM entry_attachments a WHERE a.entry_id = e.id)"
    " FROM entries e JOIN tickets t ON t.id = e.ticket_id WHERE t.number = %s ORDER BY e.id"
)

AUDIT_PAGE = f"SELECT id, {AUDIT_COLUMNS} FROM audit WHERE id > %s ORDER BY id LIMIT %s"  # noqa: S608
AUDIT_INSERT = f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({', '.join(['%s'] * 13)})"  # noqa: S608
QUARANTINE_ALL = f"SELECT {QUARANTINE_COLUMNS} FROM quarantine ORDER BY id"  # noqa: S608
QUARANTINE_DELETE = f"DELETE FROM quarantine WHERE id = %s RETURNING {QUARANTINE_COLUMNS}"  # noqa: S608

# Locks every key (in one order for every unit, so two units never wait on each other), then reads them.
LEDGER_LOOKUP = "SELECT key, action, at, ticket, entry_id, message_id FROM ledger_lookup(%s, %s, %s)"
LEDGER_INSERT = "INSERT INTO ledger (key, action, at, ticket, entry_id, message_id) VALUES (%s, %s, %s, %s, %s, %s)"


@functools.lru_cache(maxsize=64)
def _with_clauses(statements: tuple[str, ...]) -> str:
    """`statements` (inserts without `RETURNING`) as one: every one but the last as a `WITH` clause."""
    clauses = ", ".join(f"w{i} AS ({statement})" for i, statement in enumerate(statements[:-1]))
    return f"WITH {clauses} {statements[-1]}"


def combined_inserts(held: Sequence[tuple[str, tuple[object, ...]]]) -> tuple[str, tuple[object, ...]]:
    """Inserts and their parameters as one statement and its parameters.

    The statement text of each combination is cached, so the server prepares it once per connection.
    """
    params: tuple[object, ...] = ()
    for _statement, values in held:
        params += values
    return _with_clauses(tuple(statement for statement, _values in held)), params


TICKET_INSERT = (
    "INSERT INTO tickets (number, subject, requester_email, requester_name, requester_key, status,"
    " created, updated, source, mailbox, department, team, category, priority, topic_id, assignee)"
    " VALUES (%s, %s, %s, %s, %s, 'open', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# The number was found free under this unit's lock on it: no conflict is possible, nothing to wait for.
TICKET_INSERT_FREE = TICKET_INSERT
TICKET_INSERT_CHECKED = TICKET_INSERT + " ON CONFLICT (number) DO NOTHING RETURNING id"
TAGS_INSERT = "INSERT INTO tags (ticket_id, tag, position) VALUES ((SELECT id FROM tickets WHERE number = %s), %s, %s)"
CUSTOM_INSERT = (
    "INSERT INTO custom_fields (ticket_id, name, position, value)"
    " VALUES ((SELECT id FROM tickets WHERE number = %s), %s, %s, %s)"
)

# A number's lock, its check and, when it is free, an entry id drawn for the ticket this unit may create
# with it (nobody else can append to that ticket before this unit commits, so the id keeps thread order).
NUMBER_CHECK = (
    "SELECT CASE WHEN EXISTS (SELECT 1 FROM tickets WHERE number = %s) THEN -1"
    " WHEN %s THEN nextval(%s::regclass) ELSE 0 END"
)

_ENTRY_BUMP = (
    "WITH t AS (UPDATE tickets SET entry_count = entry_count + 1, updated = GREATEST(updated, %s)"
    " WHERE number = %s RETURNING id),"
)
_ENTRY_COLUMNS = "ticket_id, kind, author_email, author_name, body, html, created, message_id"
_MID_FROM_E = (
    " m AS (INSERT INTO message_ids (message_id, ticket_id, direction) SELECT %s, e.ticket_id, 'inbound' FROM e"
    " ON CONFLICT (message_id) DO NOTHING)"
)


def entry_insert(*, with_id: bool, with_message_id: bool) -> str:
    """One statement that bumps the ticket, inserts the entry and records its message id; returns its ids.

    Parameters: created, number, [entry id], the entry values, [message id].
    """
    columns = ("id, " if with_id else "") + _ENTRY_COLUMNS
    values = ("%s, " if with_id else "") + "t.id, %s, %s, %s, %s, %s, %s, %s"
    # Fixed fragments only; every value is a parameter.
    insert = f" e AS (INSERT INTO entries ({columns}) SELECT {values} FROM t RETURNING id, ticket_id)"  # noqa: S608
    mid = "," + _MID_FROM_E if with_message_id else ""
    return _ENTRY_BUMP + insert + mid + " SELECT id, ticket_id FROM e"  # noqa: S608


ENTRY_INSERTS = {(i, m): entry_insert(with_id=i, with_message_id=m) for i in (False, True) for m in (False, True)}

ATTACHMENT_INSERT = "INSERT INTO attachments (sha256, size, data) VALUES (%s, %s, %s) ON CONFLICT (sha256) DO NOTHING"
ENTRY_ATTACHMENT_INSERT = (
    "INSERT INTO entry_attachments (entry_id, position, sha256, filename, content_type, size, disposition,"
    " content_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
TICKET_LOCK = "SELECT id FROM tickets WHERE number = %s FOR UPDATE"
PARTICIPANT_INSERT = (
    "INSERT INTO participants (ticket_id, email_key, position, email)"
    " SELECT t.id, %s, coalesce((SELECT max(p.position) + 1 FROM participants p WHERE p.ticket_id = t.id), 0), %s"
    " FROM tickets t WHERE t.number = %s ON CONFLICT (ticket_id, email_key) DO NOTHING"
)
MESSAGE_ID_INSERT = (
    "INSERT INTO message_ids (message_id, ticket_id, direction) SELECT %s, id, %s FROM tickets WHERE number = %s"
    " ON CONFLICT (message_id) DO NOTHING"
)
STATUS_UPDATE = (
    "UPDATE tickets SET status = %s, merged_into = %s, updated = GREATEST(updated, coalesce(%s, updated))"
    " WHERE number = %s"
)
QUARANTINE_FIND = (
    "SELECT id FROM quarantine WHERE sha256 = %s AND prov_mailbox IS NOT DISTINCT FROM %s"
    " AND prov_kind IS NOT DISTINCT FROM %s AND prov_key IS NOT DISTINCT FROM %s"
)
QUARANTINE_BUMP = "UPDATE quarantine SET at = %s, reason_code = %s, reason = %s, attempts = attempts + 1 WHERE id = %s"
QUARANTINE_INSERT = (
    "INSERT INTO quarantine (at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key, sha256, attempts)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1) RETURNING id"
)
QUARANTINE_INSERT_ID = (
    "INSERT INTO quarantine (id, at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key, sha256,"
    " attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 1)"
)
ADVISORY_LOCK = "SELECT pg_advisory_xact_lock(%s, %s)"
# The lease check of a fenced commit, in the commit's own round trip (the function raises `TM001`).
FENCE_CHECK = "SELECT check_lease(%s, %s, %s)"
FENCE_LOST = "TM001"


def address(email: str | None, name: str | None) -> Address | None:
    """An `Address`, or `None` for a missing email."""
    return None if email is None else Address(email, name)


def ticket_from_row(row: Sequence[Any]) -> Ticket:
    """A ticket from a `TICKET_SELECT` row."""
    return ticket_from_columns(
        row,
        created=as_utc(row[6]),
        updated=as_utc(row[7]),
        tags=tuple(row[18]),
        participants=tuple(row[19]),
        custom_fields=tuple((name, load_custom_value(value)) for name, value in zip(row[20], row[21], strict=True)),
    )


def entry_from_row(number: str, row: Sequence[Any]) -> Entry:
    """An entry of ticket `number` from an `ENTRY_SELECT` row."""
    refs = tuple(AttachmentRef(r[0], r[1], r[2], int(r[3]), r[4], r[5]) for r in (row[8] or ()))
    return Entry(
        id=row[0],
        ticket=number,
        kind=row[1],
        author=address(row[2], row[3]),
        body=row[4],
        created=as_utc(row[5]),
        html=row[6],
        message_id=row[7],
        attachments=tuple(r.sha256 for r in refs),
        files=refs,
    )


def audit_record(row: Sequence[Any]) -> AuditRecord:
    """An `AUDIT_PAGE` row as a record."""
    return audit_from_row(row, row[1])


def quarantine_record(row: Sequence[Any]) -> QuarantineRecord:
    """A `quarantine` row (`QUARANTINE_COLUMNS`) as a record."""
    return quarantine_from_row(row, row[1])
