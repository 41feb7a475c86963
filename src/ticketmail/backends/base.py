"""The storage contract: what a backend must do so that every message has exactly one effect.

OWNER: the backends work (issue 5). This first version fixes the shape; it may grow (new methods with
default implementations in :class:`BaseBackend`), but existing names keep their meaning.

The pipeline opens one unit of work per message::

    with backend.unit_of_work() as uow:        # BEGIN
        if uow.processed(key): ...             # ledger check (redelivery / duplicate)
        ticket = uow.ticket_by_message_id(...) # threading lookups
        uow.create_ticket(...) / uow.append_entry(...)
        uow.record_processed(...)              # ledger write
        uow.record_audit(...)
    # COMMIT on normal exit, ROLLBACK on any exception; only now may a source acknowledge the mail.

Every method of a unit of work runs inside that one transaction. Backend failures surface as
:class:`ticketmail.errors.BackendError` (retry later), never as a driver exception.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Literal, Protocol, runtime_checkable

import attrs

from ticketmail.model import Address, Attachment, Provenance

__all__ = [
    "AuditRecord",
    "Backend",
    "Entry",
    "NewEntry",
    "NewTicket",
    "ProcessedRecord",
    "QuarantineRecord",
    "Ticket",
    "UnitOfWork",
]

TicketStatus = Literal["open", "closed", "merged"]
EntryKind = Literal["message", "reply", "note"]
Direction = Literal["inbound", "outbound"]


@attrs.frozen
class Ticket:
    """A stored ticket.

    ``number`` is the external id shown to people (random, unguessable). ``merged_into`` names the
    surviving ticket when this one was merged.
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


@attrs.frozen
class Entry:
    """One entry of a ticket's thread (the first message, a reply, an internal note)."""

    id: int
    ticket: str
    kind: EntryKind
    author: Address | None
    body: str
    created: _dt.datetime
    html: str | None = None
    message_id: str | None = None
    attachments: tuple[str, ...] = ()  # sha256 digests, content-addressed


@attrs.frozen
class NewTicket:
    """What the pipeline asks a backend to create. The backend fills ``created``/``updated``."""

    number: str
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
    custom_fields: tuple[tuple[str, str], ...] = ()


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

    ``key`` is what makes a redelivery recognisable: the provenance key for mailbox items
    (``"<mailbox>/<kind>/<key>"``), and separately each duplicate key (scoped message id or fingerprint).
    """

    key: str
    action: str
    at: _dt.datetime
    ticket: str | None = None
    entry_id: int | None = None
    message_id: str | None = None


@attrs.frozen
class AuditRecord:
    """One decision, as an operator will want to read it later."""

    at: _dt.datetime
    action: str
    message_id: str | None
    provenance: Provenance | None
    ticket: str | None
    reasons: tuple[tuple[str, str, str | None], ...]  # (code, message, value)


@attrs.frozen
class QuarantineRecord:
    """A message that could not be processed, kept with its raw bytes and the reason."""

    at: _dt.datetime
    raw: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    reason_code: str
    reason: str
    provenance: Provenance | None = None


@runtime_checkable
class UnitOfWork(Protocol):
    """One transaction. All reads see the writes made earlier in the same unit."""

    def processed(self, key: str) -> ProcessedRecord | None:
        """The ledger row for ``key``, if that key was recorded before."""

    def record_processed(self, record: ProcessedRecord) -> None:
        """Add a ledger row (idempotent for an identical record)."""

    def ticket_by_number(self, number: str) -> Ticket | None:
        """The ticket with this external number, or ``None``."""

    def ticket_by_message_id(self, message_id: str) -> Ticket | None:
        """The ticket whose thread contains this message id (inbound or outbound), or ``None``."""

    def number_exists(self, number: str) -> bool:
        """Whether a ticket number is taken (the number generator's collision check)."""

    def count_tickets_by_requester(self, email: str, since: _dt.datetime) -> int:
        """How many tickets this requester opened at or after ``since`` (rate limiting)."""

    def create_ticket(self, ticket: NewTicket) -> Ticket:
        """Store a new ticket (without entries)."""

    def append_entry(self, number: str, entry: NewEntry) -> Entry:
        """Append an entry to a ticket's thread, storing its attachments, and return it with its id."""

    def set_status(self, number: str, status: TicketStatus, *, merged_into: str | None = None) -> None:
        """Change a ticket's status (reopen, close, merge)."""

    def add_participant(self, number: str, email: str) -> None:
        """Record an address as a participant of the ticket."""

    def record_message_id(self, number: str, message_id: str, direction: Direction) -> None:
        """Remember a message id as part of a ticket's thread (inbound ones and those we sent)."""

    def record_audit(self, record: AuditRecord) -> None:
        """Append a decision to the audit log."""

    def quarantine(self, record: QuarantineRecord) -> int:
        """Keep an unprocessable message with its raw bytes; return its quarantine id."""


@runtime_checkable
class Backend(Protocol):
    """A ticket store. Implement this (or subclass :class:`BaseBackend`) to store into your own database."""

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        """Begin a transaction; commit when the block exits normally, roll back on an exception."""

    def get_ticket(self, number: str) -> Ticket | None:
        """Read one ticket outside any unit of work."""

    def list_tickets(self, *, limit: int | None = None) -> Sequence[Ticket]:
        """All tickets, oldest first."""

    def entries(self, number: str) -> Sequence[Entry]:
        """A ticket's thread, oldest first."""

    def attachment(self, sha256: str) -> bytes | None:
        """An attachment's bytes by digest."""

    def audit_log(self) -> Iterator[AuditRecord]:
        """Every recorded decision, oldest first."""

    def quarantined(self) -> Sequence[QuarantineRecord]:
        """Every quarantined message."""

    def close(self) -> None:
        """Release connections and files."""
