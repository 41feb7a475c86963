"""Validation and helpers shared by the shipped backends, so they accept and refuse exactly the same things."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from ticketmail.backends.base import (
    MAX_MERGE_CHAIN,
    AttachmentRef,
    AuditRecord,
    CustomFieldValue,
    Entry,
    InvalidMergeError,
    MergeChainError,
    NewEntry,
    NewTicket,
    QuarantineRecord,
    Ticket,
    as_utc,
    load_custom_value,
    merge_chain,
)
from ticketmail.errors import InvalidValueError
from ticketmail.model import Address, Provenance

QuarantineKey = tuple[str | None, str | None, str | None, str]


def ticket_from_columns(
    row: Sequence[Any],
    *,
    created: _dt.datetime,
    updated: _dt.datetime,
    tags: tuple[str, ...],
    participants: tuple[str, ...],
    custom_fields: tuple[tuple[str, CustomFieldValue], ...],
) -> Ticket:
    """A `Ticket` from the SQL backends' ticket columns, in their shared order.

    `row` holds id, number, subject, requester email and name, status, created, updated, source, mailbox,
    department, team, category, priority, topic_id, assignee, merged_into, entry_count; the times (stored
    differently by each database) and the lists (read differently) come already converted.
    """
    return Ticket(
        number=row[1],
        subject=row[2],
        requester=Address(row[3], row[4]),
        status=row[5],
        created=created,
        updated=updated,
        source=row[8],
        mailbox=row[9],
        department=row[10],
        team=row[11],
        category=row[12],
        priority=row[13],
        topic_id=row[14],
        assignee=row[15],
        merged_into=row[16],
        entry_count=row[17],
        tags=tags,
        participants=participants,
        custom_fields=custom_fields,
    )


def quarantine_key(record: QuarantineRecord) -> QuarantineKey:
    """What makes two quarantine records "the same item": provenance and the sha256 of the bytes."""
    prov = record.provenance
    digest = hashlib.sha256(record.raw).hexdigest()
    if prov is None:
        return (None, None, None, digest)
    return (prov.mailbox, prov.kind, prov.key, digest)


def check_kind(kind: str) -> None:
    """Refuse an entry kind other than `message`/`reply`/`note`."""
    if kind not in ("message", "reply", "note"):
        raise InvalidValueError(f"entry kind must be 'message', 'reply' or 'note', got {kind!r}", field="kind")


def check_direction(direction: str) -> None:
    """Refuse a direction other than `inbound`/`outbound`."""
    if direction not in ("inbound", "outbound"):
        raise InvalidValueError(f"direction must be 'inbound' or 'outbound', got {direction!r}", field="direction")


def check_status_change(
    number: str, status: str, merged_into: str | None, lookup: Callable[[str], Ticket | None]
) -> None:
    """Validate a status change; shared by the shipped backends so they refuse the same things."""
    if status not in ("open", "closed", "merged"):
        raise InvalidValueError(f"status must be open, closed or merged, got {status!r}", field="status")
    if status != "merged":
        if merged_into is not None:
            raise InvalidMergeError(f"merged_into is only allowed with status 'merged', got {status!r}", field="status")
        return
    if merged_into is None:
        raise InvalidMergeError("status 'merged' needs merged_into", field="merged_into")
    if merged_into == number:
        raise InvalidMergeError(f"cannot merge ticket {number} into itself", field="merged_into")
    target = lookup(merged_into)
    if target is None:
        raise InvalidMergeError(f"cannot merge ticket {number} into missing ticket {merged_into}", field="merged_into")
    try:
        # After the merge, the chain from `number` is one link longer than the target's.
        chain = merge_chain(target, lookup, limit=MAX_MERGE_CHAIN - 1)
    except MergeChainError as exc:
        raise InvalidMergeError(
            f"cannot merge ticket {number} into {merged_into}: {exc.message}", field="merged_into"
        ) from exc
    if any(link.number == number for link in chain):
        raise InvalidMergeError(
            f"merging ticket {number} into {merged_into} would make a merge cycle", field="merged_into"
        )


# --- audit and quarantine rows, in the column order both SQL schemas use ------------------------------------

AUDIT_COLUMNS = (
    "at, action, message_id, prov_mailbox, prov_kind, prov_key, ticket, entry_id, reasons, origin, sender, subject,"
    " headers"
)
"""The `audit` columns `audit_params()` gives values for, in order."""

QUARANTINE_COLUMNS = "id, at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key, attempts"
"""The `quarantine` columns `quarantine_from_row()` reads, in order."""


def audit_params(record: AuditRecord, at: object) -> tuple[object, ...]:
    """The values of `AUDIT_COLUMNS` for `record`; `at` is its time as the database stores it."""
    prov = record.provenance
    return (
        at,
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
    )


def audit_from_row(row: Sequence[Any], at: _dt.datetime) -> AuditRecord:
    """An audit row (`id`, then `AUDIT_COLUMNS`) as a record; `at` is its time, already converted."""
    return AuditRecord(
        at=at,
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


def quarantine_from_row(row: Sequence[Any], at: _dt.datetime) -> QuarantineRecord:
    """A `quarantine` row (`QUARANTINE_COLUMNS`) as a record; `at` is its time, already converted."""
    return QuarantineRecord(
        at=at,
        raw=bytes(row[2]),
        reason_code=row[3],
        reason=row[4],
        provenance=None if row[5] is None else Provenance(row[5], row[6], row[7]),
        id=row[0],
        attempts=row[8],
    )


# --- what a backend returns for what it was asked to store ---------------------------------------------------


def opened_ticket(ticket: NewTicket, created: _dt.datetime, custom_texts: Sequence[tuple[str, str]]) -> Ticket:
    """The `Ticket` a backend returns from `create_ticket()`: open, no entries, tags without repeats.

    `custom_texts` are the custom fields as stored (`dump_custom_value()` text); the values come back
    through `load_custom_value()`, as a later read would give them (copies, exactly the JSON types).
    """
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
        tags=tuple(dict.fromkeys(ticket.tags)),
        custom_fields=tuple((name, load_custom_value(text)) for name, text in custom_texts),
    )


def ticket_params(ticket: NewTicket, created: object) -> tuple[object, ...]:
    """The values the SQL backends insert into `tickets` (number ... assignee; `created` as stored, twice)."""
    return (
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
    )


def stored_entry(number: str, entry: NewEntry, entry_id: int, message_id: str | None) -> Entry:
    """The `Entry` a backend returns from `append_entry()` (times in UTC, attachments by reference)."""
    refs = tuple(AttachmentRef.from_attachment(a) for a in entry.attachments)
    return Entry(
        id=entry_id,
        ticket=number,
        kind=entry.kind,
        author=entry.author,
        body=entry.body,
        created=as_utc(entry.created),
        html=entry.html,
        message_id=message_id,
        attachments=tuple(r.sha256 for r in refs),
        files=refs,
    )
