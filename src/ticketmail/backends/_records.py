"""The records backends store and return, and the value conversions every backend shares.

Public names are importable from `ticketmail.backends.base`, which re-exports them.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeAlias

import attrs

from ticketmail.errors import InvalidValueError
from ticketmail.model import Address, Attachment, Choice, Phone, Provenance

TicketStatus = Literal["open", "closed", "merged"]
EntryKind = Literal["message", "reply", "note"]
Direction = Literal["inbound", "outbound"]

TICKET_STATUSES: tuple[TicketStatus, ...] = ("open", "closed", "merged")
ENTRY_KINDS: tuple[EntryKind, ...] = ("message", "reply", "note")
DIRECTIONS: tuple[Direction, ...] = ("inbound", "outbound")

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


def _aware_iso(value: _dt.datetime) -> str:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)
    return aware.isoformat()


def _choice(value: Choice) -> CustomFieldValue:
    return {"key": value.key, "label": value.label}


# Checked in order: a datetime is also a date.
_SCALARS: tuple[tuple[type[Any], Callable[[Any], CustomFieldValue]], ...] = (
    (Choice, _choice),
    (_dt.datetime, _aware_iso),
    (_dt.date, lambda value: value.isoformat()),
    (_dt.time, lambda value: value.isoformat()),
    (Phone, str),
)


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
    for kind, convert in _SCALARS:
        if isinstance(value, kind):
            return convert(value)
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
