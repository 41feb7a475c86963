"""The storage contract: what a backend must do so that every message has exactly one effect.

The protocol may grow (new methods get default implementations in
`BaseBackend`, new record fields get defaults), but existing names keep their meaning.

The pipeline opens one unit of work per message::

    with backend.unit_of_work() as uow:        # BEGIN (SQLite: BEGIN IMMEDIATE, so writers serialize)
        if uow.processed(key): ...             # ledger check (redelivery / duplicate)
        ticket = uow.ticket_by_message_id(...) # threading lookups
        uow.create_ticket(...) / uow.append_entry(...)
        uow.record_processed(...)              # ledger write
        uow.record_audit(...)
    # COMMIT on normal exit, ROLLBACK on any exception; only now may a source acknowledge the mail.

Every method of a unit of work runs inside that one transaction, and reads see the unit's own earlier
writes. The exception that ended a unit is re-raised unchanged after the rollback. Backend failures surface
as `ticketmail.errors.BackendError` (retry later), never as a driver exception; misuse by the caller
(appending to a ticket that does not exist, an impossible merge) raises the specific errors defined here,
which also roll the unit back.

Semantics every backend shares (the conformance suite, `ticketmail.testing.conformance`, checks them):

* Message ids are stored normalized (`normalize_message_id()`: surrounding white space and one pair of
  angle brackets removed; case kept, RFC 5322 section 3.6.4 gives the left part no case rules). A message
  id belongs to the first ticket that recorded it; recording it again is a no-op.
* `UnitOfWork.append_entry()` records the entry's `message_id` as `inbound` unless the id is known
  already, so every threaded message is findable by `In-Reply-To`/`References` without a second call.
  Record the ids of mail the application *sends* with `record_message_id(..., "outbound")`.
* Attachments are content addressed: one copy per sha256, however many entries carry it.
* Datetimes are returned timezone-aware in UTC (a naive datetime is taken to be UTC, see `as_utc()`).
* Custom field values are JSON values (`CustomFieldValue`) and come back as the same JSON types:
  a number stays a number (`int` or `float`), a boolean a boolean, a choice an object
  `{"key": ..., "label": ...}`; `custom_field_value` turns the parsed form values (datetimes,
  dates, choices, phones) into them, and `dump_custom_value`/`load_custom_value` are the JSON
  text a SQL backend stores.
* Ticket numbers are unique; `merged_into` names the surviving ticket. Lookups return the ticket that owns
  a number or message id, merged or not: following `merged_into` is the caller's job, and every caller
  (the shipped backends, threading, the conformance suite) does it with the one walker `merge_chain()`
  (or `follow_merges()`, its survivor), so every path agrees on the survivor, the limit
  (`MAX_MERGE_CHAIN` links) and what a broken chain does (`MergeChainError`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Literal, Protocol, TypeAlias, TypeVar, runtime_checkable

import attrs

from ticketmail.errors import BackendError, InvalidValueError, NotFoundError, TicketmailError
from ticketmail.model import Address, Attachment, Choice, Phone, Provenance

__all__ = [
    "AttachmentRef",
    "AuditRecord",
    "Backend",
    "BaseBackend",
    "CustomFieldValue",
    "Direction",
    "Entry",
    "EntryKind",
    "InvalidMergeError",
    "LedgerConflictError",
    "MergeChainError",
    "NewEntry",
    "NewTicket",
    "ProcessedRecord",
    "QuarantineAdmin",
    "QuarantineRecord",
    "Ticket",
    "TicketNotFoundError",
    "TicketNumberTakenError",
    "TicketStatus",
    "UnitOfWork",
    "as_utc",
    "custom_field_value",
    "dump_custom_value",
    "follow_merges",
    "load_custom_value",
    "merge_chain",
    "normalize_message_id",
]

TicketStatus = Literal["open", "closed", "merged"]
EntryKind = Literal["message", "reply", "note"]
Direction = Literal["inbound", "outbound"]

TICKET_STATUSES: tuple[TicketStatus, ...] = ("open", "closed", "merged")
ENTRY_KINDS: tuple[EntryKind, ...] = ("message", "reply", "note")
DIRECTIONS: tuple[Direction, ...] = ("inbound", "outbound")

MAX_MERGE_CHAIN = 1000
"""The most `merged_into` links `merge_chain()` follows; a longer chain is a `MergeChainError`.

Merging refuses to make a chain longer than this (`InvalidMergeError`), so only a store edited behind
the library's back (or merges into a ticket that was itself the survivor of a long chain) can reach it.
"""

MAX_MERGE_HOPS = MAX_MERGE_CHAIN
"""Former name of `MAX_MERGE_CHAIN` (kept for compatibility)."""


# --- errors ------------------------------------------------------------------------------------------------


class TicketNotFoundError(NotFoundError):
    """A unit-of-work write named a ticket number that does not exist (the unit is rolled back)."""

    code = "ticket_not_found"


class TicketNumberTakenError(BackendError):
    """`create_ticket` was given a number that is already in use. Draw a new number and retry."""

    code = "ticket_number_taken"
    status = 409


class LedgerConflictError(BackendError):
    """`record_processed` was given a key already recorded with a different effect.

    Recording the identical record again is a no-op; a different one means the caller skipped the
    `processed()` check, which would break exactly-once, so the unit is refused and rolled back.
    """

    code = "ledger_conflict"
    status = 409
    retryable = False


class InvalidMergeError(InvalidValueError):
    """An impossible status change: merging into itself, into a missing ticket, or making a cycle."""

    code = "invalid_merge"


class MergeChainError(TicketmailError):
    """A stored merge chain is broken: a cycle, a link to a missing ticket, or longer than the limit.

    Backends refuse to store such chains, so this means the store was edited behind the library's back. It
    is permanent (retrying does not help), so it is not a `BackendError`: the
    pipeline quarantines the message that needed the chain (raw bytes kept, nothing acknowledged) instead
    of threading it onto a ticket that is not the survivor.
    """

    code = "merge_chain_broken"
    status = 500


# --- helpers -----------------------------------------------------------------------------------------------


def normalize_message_id(message_id: str) -> str:
    """A message id as backends store and compare it: trimmed, without one pair of angle brackets.

    >>> normalize_message_id(" <abc@example.org> ")
    'abc@example.org'
    """
    text = message_id.strip()
    if len(text) >= 2 and text[0] == "<" and text[-1] == ">":
        text = text[1:-1].strip()
    return text


def as_utc(value: _dt.datetime) -> _dt.datetime:
    """`value` as an aware UTC datetime; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc)


def _utc_converter(value: _dt.datetime) -> _dt.datetime:
    return as_utc(value)


def _optional_utc(value: _dt.datetime | None) -> _dt.datetime | None:
    return None if value is None else as_utc(value)


def _check_number(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise InvalidValueError(
            f"{type(instance).__name__}.{attribute.name} must be a non-empty string without surrounding spaces,"
            f" got {value!r}",
            field=attribute.name,
        )


CustomFieldValue: TypeAlias = "str | int | float | bool | list[CustomFieldValue] | dict[str, CustomFieldValue] | None"
"""A stored custom field value: a JSON value (see `custom_field_value`)."""

_MAX_CUSTOM_DEPTH = 16


def custom_field_value(value: object, *, field: str = "custom_fields", _depth: int = 0) -> CustomFieldValue:
    """The JSON value a backend stores for a custom field value.

    * text, booleans, integers and finite floats stay what they are (a boolean is never a number);
    * a `ticketmail.model.Choice` becomes `{"key": ..., "label": ...}`, several choices a list;
    * a datetime becomes ISO 8601 text with its offset (`2026-03-01T09:00:00+00:00`; a naive one is
      taken to be UTC), a date `2026-03-01`, a time `09:30:00`;
    * a `ticketmail.model.Phone` becomes its text form (`3185558634X123`);
    * lists/tuples and mappings with text keys are converted item by item (at most 16 levels deep).

    Raises:
        InvalidValueError: for a value of any other type, a non-finite float, or a mapping key that is not
            text.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValueError(f"{field}: a custom field number must be finite, got {value!r}", field=field)
        return value
    if isinstance(value, Choice):
        return {"key": value.key, "label": value.label}
    if isinstance(value, _dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)
        return aware.isoformat()
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, Phone):
        return str(value)
    if _depth >= _MAX_CUSTOM_DEPTH:
        raise InvalidValueError(f"{field}: custom field value nested deeper than {_MAX_CUSTOM_DEPTH}", field=field)
    if isinstance(value, (list, tuple)):
        return [custom_field_value(item, field=field, _depth=_depth + 1) for item in value]
    if isinstance(value, Mapping):
        out: dict[str, CustomFieldValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidValueError(f"{field}: custom field object keys must be text, got {key!r}", field=field)
            out[key] = custom_field_value(item, field=field, _depth=_depth + 1)
        return out
    raise InvalidValueError(
        f"{field}: a custom field value cannot be a {type(value).__name__} (use text, a number, a boolean, a "
        "date/datetime, a choice, a list or a mapping)",
        field=field,
    )


def dump_custom_value(value: CustomFieldValue) -> str:
    """The JSON text of a stored custom field value (compact, UTF-8 kept, keys in their order)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def load_custom_value(text: str) -> CustomFieldValue:
    """The custom field value stored as `text` by `dump_custom_value`."""
    value: CustomFieldValue = json.loads(text)
    return value


def _custom_fields(value: Iterable[tuple[str, object]]) -> tuple[tuple[str, CustomFieldValue], ...]:
    if isinstance(value, Mapping):
        value = value.items()
    out: list[tuple[str, CustomFieldValue]] = []
    for pair in value:
        name, item = pair
        out.append((name, custom_field_value(item, field=f"custom_fields.{name}")))
    return tuple(out)


def _check_custom_fields(
    instance: object,
    attribute: attrs.Attribute[tuple[tuple[str, CustomFieldValue], ...]],
    value: tuple[tuple[str, CustomFieldValue], ...],
) -> None:
    names = [name for name, _ in value]
    if not all(isinstance(name, str) and name for name in names):
        raise InvalidValueError(
            f"{type(instance).__name__}.{attribute.name} names must be non-empty text, got {names!r}",
            field=attribute.name,
        )
    if len(set(names)) != len(names):
        raise InvalidValueError(
            f"{type(instance).__name__}.{attribute.name} must have unique names, got {names!r}", field=attribute.name
        )


# --- records -----------------------------------------------------------------------------------------------


@attrs.frozen
class AttachmentRef:
    """How one entry refers to a stored attachment: the digest plus the per-entry file metadata.

    The bytes are stored once per `sha256`; the name and type belong to the entry that carried them (the
    same bytes may arrive as `report.pdf` and `scan.pdf`). Fetch the bytes with
    `Backend.attachment()`.
    """

    sha256: str
    filename: str
    content_type: str
    size: int
    disposition: Literal["attachment", "inline"] = "attachment"
    content_id: str | None = None

    @classmethod
    def from_attachment(cls, attachment: Attachment) -> AttachmentRef:
        """The reference a backend stores for a model `Attachment`."""
        return cls(
            sha256=attachment.sha256,
            filename=attachment.filename,
            content_type=attachment.content_type,
            size=attachment.size,
            disposition=attachment.disposition,
            content_id=attachment.content_id,
        )


@attrs.frozen
class Ticket:
    """A stored ticket.

    `number` is the external id shown to people (random, unguessable). `merged_into` names the
    surviving ticket when this one was merged. `participants` are addresses (besides the requester) that
    take part in the thread, in the order they were added. `custom_fields` are (name, value) pairs in the
    order given at creation; each value is a JSON value (`CustomFieldValue`). `entry_count` is the length
    of the thread.
    """

    number: str
    subject: str
    requester: Address
    status: TicketStatus
    created: _dt.datetime
    updated: _dt.datetime
    source: str = "email"
    mailbox: str | None = None
    department: str | None = None
    team: str | None = None
    category: str | None = None
    priority: int | None = None
    topic_id: int | None = None
    assignee: str | None = None
    tags: tuple[str, ...] = ()
    participants: tuple[str, ...] = ()
    merged_into: str | None = None
    entry_count: int = 0
    custom_fields: tuple[tuple[str, CustomFieldValue], ...] = ()

    def custom(self, name: str, default: CustomFieldValue = None) -> CustomFieldValue:
        """The value of custom field `name` (`default` when the ticket has none)."""
        for key, value in self.custom_fields:
            if key == name:
                return value
        return default


@attrs.frozen
class Entry:
    """One entry of a ticket's thread (the first message, a reply, an internal note).

    `attachments` lists the sha256 digests in the order given; `files` carries the same attachments
    with their per-entry names and types.
    """

    id: int
    ticket: str
    kind: EntryKind
    author: Address | None
    body: str
    created: _dt.datetime
    html: str | None = None
    message_id: str | None = None
    attachments: tuple[str, ...] = ()  # sha256 digests, content-addressed
    files: tuple[AttachmentRef, ...] = ()


@attrs.frozen
class NewTicket:
    """What the pipeline asks a backend to create. `updated` starts equal to `created`.

    Duplicate tags are dropped (first kept); custom field names must be unique. Custom field values are
    converted with `custom_field_value` (so a `Choice`, a datetime or a date may be passed as is);
    a mapping of name to value is accepted too.
    """

    number: str = attrs.field(validator=_check_number)
    subject: str
    requester: Address
    created: _dt.datetime
    source: str = "email"
    mailbox: str | None = None
    department: str | None = None
    team: str | None = None
    category: str | None = None
    priority: int | None = None
    topic_id: int | None = None
    assignee: str | None = None
    tags: tuple[str, ...] = ()
    custom_fields: tuple[tuple[str, CustomFieldValue], ...] = attrs.field(
        default=(), converter=_custom_fields, validator=_check_custom_fields
    )


@attrs.frozen
class NewEntry:
    """A thread entry to append. Attachments are stored first (content-addressed) and named by sha256."""

    kind: EntryKind
    author: Address | None
    body: str
    created: _dt.datetime
    html: str | None = None
    message_id: str | None = None
    attachments: tuple[Attachment, ...] = ()


@attrs.frozen
class ProcessedRecord:
    """A ledger row: one inbound message (or API request) and the effect it had.

    `key` is what makes a redelivery recognisable: the provenance key for mailbox items
    (`"<mailbox>/<kind>/<key>"`), and separately each duplicate key (scoped message id or fingerprint).
    `at` is converted to UTC.
    """

    key: str
    action: str
    at: _dt.datetime = attrs.field(converter=_utc_converter)
    ticket: str | None = None
    entry_id: int | None = None
    message_id: str | None = None


@attrs.frozen
class AuditRecord:
    """One decision, as an operator will want to read it later. `at` is converted to UTC.

    Attributes:
        at: When the decision was committed.
        action: The outcome: `created`, `appended`, `ignored`, `duplicate`, `rejected`, `failed` (and
            `discarded` or `retried` for quarantine actions taken by an operator).
        message_id: The message's Message-ID (possibly generated), when known.
        provenance: Where the message came from.
        ticket: The ticket concerned, if any.
        reasons: Every reason, as `(code, message, value)`.
        entry_id: The thread entry created, if any.
        id: Set on stored records (increasing in commit order); `None` on a record being written.
        origin: Where the message came from, in words (`"IMAP support, UID 13 (UIDVALIDITY 7)"`,
            `"file examples/mail/01.eml"`).
        sender: The sender's address, when the message named one.
        subject: The subject (truncated to 300 characters).
        headers: The headers that decisions look at (sender, recipients, threading, automatic-mail and
            spam markers), as `(name, value)` pairs, values truncated.
    """

    at: _dt.datetime = attrs.field(converter=_utc_converter)
    action: str
    message_id: str | None
    provenance: Provenance | None
    ticket: str | None
    reasons: tuple[tuple[str, str, str | None], ...]  # (code, message, value)
    entry_id: int | None = None
    id: int | None = None
    origin: str | None = None
    sender: str | None = None
    subject: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class QuarantineRecord:
    """A message that could not be processed, kept with its raw bytes and the reason.

    `id` is `None` on a record passed to `UnitOfWork.quarantine()` and set on stored ones.
    Quarantining the same bytes from the same provenance again does not add a row: the stored one gets
    the new reason and time and its `attempts` count goes up (a source retries a failing item a bounded
    number of times; the operator sees one row with the count).
    """

    at: _dt.datetime = attrs.field(converter=_utc_converter)
    raw: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    reason_code: str
    reason: str
    provenance: Provenance | None = None
    id: int | None = None
    attempts: int = 1


# --- protocols ---------------------------------------------------------------------------------------------


@runtime_checkable
class UnitOfWork(Protocol):
    """One transaction. All reads see the writes made earlier in the same unit.

    A unit of work object is only valid inside its `with` block; using it afterwards raises
    `BackendError`.
    """

    def processed(self, key: str) -> ProcessedRecord | None:
        """The ledger row for `key`, if that key was recorded before."""

    def record_processed(self, record: ProcessedRecord) -> None:
        """Add a ledger row. Identical again: no-op. Same key, other content: `LedgerConflictError`."""

    def ticket_by_number(self, number: str) -> Ticket | None:
        """The ticket with this external number, or `None` (merged tickets are returned as they are)."""

    def ticket_by_message_id(self, message_id: str) -> Ticket | None:
        """The ticket whose thread contains this message id (inbound or outbound), or `None`.

        The id is normalized first (`normalize_message_id()`), so `<a@b>` and `a@b` match.
        """

    def number_exists(self, number: str) -> bool:
        """Whether a ticket number is taken (the number generator's collision check)."""

    def count_tickets_by_requester(self, email: str, since: _dt.datetime) -> int:
        """How many tickets this requester opened at or after `since` (rate limiting).

        Addresses compare case-insensitively (`str.casefold`), although RFC 5321 allows case-sensitive
        local parts: no real mailbox relies on it, and a limit that `Bob@` evades is no limit.
        """

    def create_ticket(self, ticket: NewTicket) -> Ticket:
        """Store a new, `open` ticket without entries. A taken number: `TicketNumberTakenError`."""

    def append_entry(self, number: str, entry: NewEntry) -> Entry:
        """Append an entry to a ticket's thread and return it with its id.

        Stores each attachment once by sha256, records `entry.message_id` as an inbound message id of the
        ticket unless the id is already known, bumps `entry_count` and moves `updated` forward to
        `entry.created` (never backwards). Unknown ticket: `TicketNotFoundError`.
        """

    def set_status(
        self, number: str, status: TicketStatus, *, merged_into: str | None = None, at: _dt.datetime | None = None
    ) -> None:
        """Change a ticket's status (reopen, close, merge).

        `merged_into` is required for `merged` and forbidden otherwise; the target must exist and the
        merge must not form a cycle (`InvalidMergeError`). Leaving `merged` clears
        `merged_into`. `at`, when given, moves `updated` forward.
        """

    def add_participant(self, number: str, email: str) -> None:
        """Record an address as a participant of the ticket (idempotent, case-insensitive)."""

    def record_message_id(self, number: str, message_id: str, direction: Direction) -> None:
        """Remember a message id as part of a ticket's thread (inbound ones and those we sent).

        The first ticket to record an id owns it; recording a known id again is a no-op.
        """

    def record_audit(self, record: AuditRecord) -> None:
        """Append a decision to the audit log."""

    def quarantine(self, record: QuarantineRecord) -> int:
        """Keep an unprocessable message with its raw bytes; return its quarantine id.

        The same bytes from the same provenance are kept once (see `QuarantineRecord`).
        """


@runtime_checkable
class QuarantineAdmin(Protocol):
    """Optional capability of a unit of work: take a message out of the quarantine.

    `ticketmail quarantine retry` and `discard` need it; the shipped backends have it. A retried message that
    succeeds leaves the quarantine in the same unit of work as its effect, so a crash in between can neither
    lose it nor apply it twice.
    """

    def remove_quarantined(self, quarantine_id: int) -> QuarantineRecord | None:
        """Delete quarantine row `quarantine_id`; return it as it was, or `None` when there is no such row."""
        ...


@runtime_checkable
class Backend(Protocol):
    """A ticket store. Implement this (or subclass `BaseBackend`) to store into your own database."""

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        """Begin a transaction; commit when the block exits normally, roll back on an exception."""

    def get_ticket(self, number: str) -> Ticket | None:
        """Read one ticket outside any unit of work."""

    def list_tickets(self, *, limit: int | None = None, offset: int = 0) -> Sequence[Ticket]:
        """Tickets oldest first (creation order); `offset`/`limit` page through them."""

    def entries(self, number: str) -> Sequence[Entry]:
        """A ticket's thread, oldest first (`[]` for an unknown ticket)."""

    def attachment(self, sha256: str) -> bytes | None:
        """An attachment's bytes by digest."""

    def audit_log(self) -> Iterator[AuditRecord]:
        """Every recorded decision, oldest first."""

    def quarantined(self) -> Sequence[QuarantineRecord]:
        """Every quarantined message, oldest first, with `id` set."""

    def close(self) -> None:
        """Release connections and files."""


_B = TypeVar("_B", bound="BaseBackend")


class BaseBackend:
    """Optional base class for backends: context-manager support and conveniences built on the protocol.

    A subclass implements the `Backend` methods (at least `unit_of_work()` and the readers);
    it inherits `with backend: ...` (closes on exit), `is_processed()` and `find_ticket()`.
    """

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        """Begin a transaction (subclasses implement this)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (default: nothing to release)."""

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def is_processed(self, key: str) -> bool:
        """Whether `key` is in the ledger (a short read-only unit of work)."""
        with self.unit_of_work() as uow:
            return uow.processed(key) is not None

    def find_ticket(self, number: str, *, follow: bool = True) -> Ticket | None:
        """The ticket with `number`; with `follow`, the surviving ticket of a merge chain."""
        with self.unit_of_work() as uow:
            ticket = uow.ticket_by_number(number)
            return follow_merges(uow, ticket) if follow and ticket is not None else ticket


class _NumberLookup(Protocol):
    def ticket_by_number(self, number: str) -> Ticket | None: ...


def merge_chain(
    ticket: Ticket, lookup: Callable[[str], Ticket | None], *, limit: int = MAX_MERGE_CHAIN
) -> tuple[Ticket, ...]:
    """The merge chain from `ticket` to its surviving ticket: `(ticket, ..., survivor)`.

    The one merge-chain walker of the library: backends (validating a merge, `find_ticket`), threading
    and the conformance suite all use it, so they agree on the survivor and on the limit. It is a pure
    function of `lookup` (a number to its ticket, or `None`; e.g. a unit of work's `ticket_by_number`),
    so any backend reuses it as it is.

    Args:
        ticket: Where to start (returned alone when it is not merged).
        lookup: The ticket with a number, or `None` when there is none.
        limit: The most `merged_into` links followed (default `MAX_MERGE_CHAIN`).

    Raises:
        MergeChainError: the chain loops, names a missing ticket, or has more than `limit` links. Never a
            silent stop on a ticket that is itself merged.
    """
    chain = [ticket]
    seen = {ticket.number}
    current = ticket
    while current.merged_into is not None:
        if len(chain) > limit:
            raise MergeChainError(f"merge chain from ticket {ticket.number} is longer than {limit} links")
        target = lookup(current.merged_into)
        if target is None:
            raise MergeChainError(f"ticket {current.number} is merged into missing ticket {current.merged_into}")
        if target.number in seen:
            raise MergeChainError(f"merge chain from ticket {ticket.number} loops at ticket {target.number}")
        seen.add(target.number)
        chain.append(target)
        current = target
    return tuple(chain)


def follow_merges(lookup: _NumberLookup, ticket: Ticket) -> Ticket:
    """The surviving ticket of `ticket`'s merge chain (`ticket` itself if not merged).

    `lookup` is a unit of work (or anything with `ticket_by_number`). This is the last ticket of
    `merge_chain()`, with the same errors: `MergeChainError` for a cycle, a dangling link or a
    chain longer than `MAX_MERGE_CHAIN` links.
    """
    return merge_chain(ticket, lookup.ticket_by_number)[-1]
