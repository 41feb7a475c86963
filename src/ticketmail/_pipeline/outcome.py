"""What processing one message did: `Outcome`, the error of a failed message, the ledger key of an item."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from ticketmail.decision import Reason
from ticketmail.errors import TicketmailError
from ticketmail.model import Provenance

__all__ = ["DuplicateScope", "Outcome", "OutcomeAction", "ProcessingError", "ledger_key", "unexpected_error"]

OutcomeAction = Literal["created", "appended", "ignored", "duplicate", "rejected", "failed"]
DuplicateScope = Literal["global", "mailbox", "destination"]
DUPLICATE_SCOPES: tuple[DuplicateScope, ...] = ("global", "mailbox", "destination")


class ProcessingError(TicketmailError):
    """An unexpected error while processing one message; the message was quarantined."""

    code = "processing_failed"
    status = 500


@attrs.frozen
class Outcome:
    """What processing one message did.

    Attributes:
        action: `created` a ticket, `appended` an entry, `ignored` by a filter/policy,
            `duplicate` of a message already processed (including a redelivery after a crash),
            `rejected` by a rule, or `failed` (quarantined with its raw bytes; nothing else changed).
        ticket: The ticket number concerned, if any.
        entry_id: The thread entry created, if any.
        message_id: The message's (possibly generated) Message-ID.
        reasons: Everything that fired, from rules, threading and duplicate checks.
        alert: Whether the application should alert staff.
        autorespond: Whether the application may send an auto-response.
        already_processed: True when this exact mailbox item was processed before (a redelivery).
        provenance: Where the message came from.
        error: The error behind a `failed` (or `rejected`) outcome.
    """

    action: OutcomeAction
    ticket: str | None = None
    entry_id: int | None = None
    message_id: str | None = None
    reasons: tuple[Reason, ...] = ()
    alert: bool = False
    autorespond: bool = False
    already_processed: bool = False
    provenance: Provenance | None = None
    error: TicketmailError | None = attrs.field(default=None, eq=False)

    @property
    def acknowledge(self) -> bool:
        """Whether the source may now delete/move/flag the item: every committed action but `failed`."""
        return self.action != "failed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (used by the CLI's one-line-per-message output)."""
        return {
            "action": self.action,
            "ticket": self.ticket,
            "entry": self.entry_id,
            "message_id": self.message_id,
            "reasons": [attrs.asdict(r) for r in self.reasons],
            "alert": self.alert,
            "autorespond": self.autorespond,
            "already_processed": self.already_processed,
            "error": self.error.to_dict() if self.error else None,
        }


# The public home of these names is `ticketmail.pipeline` (reprs, pickles and the error table say so).
Outcome.__module__ = ProcessingError.__module__ = "ticketmail.pipeline"


def ledger_key(provenance: Provenance) -> str:
    """The ledger key of a mailbox item: `"<mailbox>/<kind>/<key>"`."""
    return f"{provenance.mailbox}/{provenance.kind}/{provenance.key}"


def unexpected_error(exc: BaseException, stage: str = "processing") -> ProcessingError:
    """A `ProcessingError` (code `processing_failed`) for an exception that is not a ticketmail error.

    For callers that parse input themselves (`ticketmail ingest` parsing a payload file) and then keep it
    with `Pipeline.quarantine()`. The message names the exception type only, never its text (which may
    quote the input); the exception is chained as `__cause__` for the log.
    """
    error = ProcessingError(f"unexpected {type(exc).__name__} while {stage} the message; see the log")
    error.__cause__ = exc
    return error
