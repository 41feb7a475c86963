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
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Protocol, TypeVar, runtime_checkable

from ticketmail.backends._records import (
    DIRECTIONS as DIRECTIONS,
)
from ticketmail.backends._records import (
    ENTRY_KINDS as ENTRY_KINDS,
)
from ticketmail.backends._records import (
    TICKET_STATUSES as TICKET_STATUSES,
)
from ticketmail.backends._records import (
    AttachmentRef,
    AuditRecord,
    CustomFieldValue,
    Direction,
    Entry,
    EntryKind,
    NewEntry,
    NewTicket,
    ProcessedRecord,
    QuarantineRecord,
    Ticket,
    TicketStatus,
    as_utc,
    custom_field_value,
    dump_custom_value,
    load_custom_value,
    normalize_message_id,
)
from ticketmail.errors import BackendError, InvalidValueError, NotFoundError, TicketmailError

__all__ = [
    "LedgerReader",
    "AttachmentRef",
    "AuditRecord",
    "Backend",
    "BaseBackend",
    "CustomFieldValue",
    "Direction",
    "Entry",
    "EntryKind",
    "InvalidMergeError",
    "LedgerBatch",
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
    "processed_many",
]

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
class LedgerReader(Protocol):
    """Optional capability of a backend: read the ledger without a unit of work.

    `BaseBackend` provides it; SQLite reads the ledger without taking the write lock, so concurrent pollers
    do not serialize on the check. Without it, the pipeline asks a short unit of work.
    """

    def is_processed(self, key: str) -> bool:
        """Whether `key` is in the ledger."""
        ...


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
class LedgerBatch(Protocol):
    """Optional capability of a unit of work: look up several ledger keys at once.

    A message's provenance key and its duplicate keys are checked together; a networked backend answers
    them in one round trip instead of one per key. Call it through `processed_many()`, which falls back
    to one `processed()` per key for units without it.
    """

    def processed_many(self, keys: Sequence[str]) -> tuple[ProcessedRecord | None, ...]:
        """The ledger row of each key (or `None`), in the order of `keys`; like `processed()` for each."""
        ...


def processed_many(uow: UnitOfWork, keys: Sequence[str]) -> tuple[ProcessedRecord | None, ...]:
    """The ledger rows of `keys` in their order: one `LedgerBatch` call when the unit has it."""
    if isinstance(uow, LedgerBatch):
        return uow.processed_many(keys)
    return tuple(uow.processed(key) for key in keys)


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
