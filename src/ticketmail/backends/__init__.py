"""Storage backends: the :class:`~ticketmail.backends.base.Backend` protocol, in-memory and SQLite."""

from ticketmail.backends.base import (
    AttachmentRef,
    AuditRecord,
    Backend,
    BaseBackend,
    Entry,
    InvalidMergeError,
    LedgerConflictError,
    NewEntry,
    NewTicket,
    ProcessedRecord,
    QuarantineAdmin,
    QuarantineRecord,
    Ticket,
    TicketNotFoundError,
    TicketNumberTakenError,
    UnitOfWork,
    follow_merges,
    normalize_message_id,
)
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import BackendLockedError, SchemaVersionError, SQLiteBackend

__all__ = [
    "AttachmentRef",
    "AuditRecord",
    "Backend",
    "BackendLockedError",
    "BaseBackend",
    "Entry",
    "InMemoryBackend",
    "InvalidMergeError",
    "LedgerConflictError",
    "NewEntry",
    "NewTicket",
    "ProcessedRecord",
    "QuarantineAdmin",
    "QuarantineRecord",
    "SQLiteBackend",
    "SchemaVersionError",
    "Ticket",
    "TicketNotFoundError",
    "TicketNumberTakenError",
    "UnitOfWork",
    "follow_merges",
    "normalize_message_id",
]
