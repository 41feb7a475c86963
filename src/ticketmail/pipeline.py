"""The ingestion pipeline: parse -> decide -> thread -> store, exactly once.

OWNER: the pipeline work (issue 5). Sources (issue 6) and the HTTP API (issue 7) call
:meth:`Pipeline.process_email` / :meth:`Pipeline.process_request` and act on the returned
:class:`Outcome`: a source acknowledges a mailbox item only when ``outcome.acknowledge`` is true.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from ticketmail.decision import Reason
from ticketmail.errors import TicketmailError
from ticketmail.model import MailboxContext, Provenance, TicketRequest

__all__ = ["Outcome", "OutcomeAction", "Pipeline"]

OutcomeAction = Literal["created", "appended", "ignored", "duplicate", "rejected", "failed"]


@attrs.frozen
class Outcome:
    """What processing one message did.

    Attributes:
        action: ``created`` a ticket, ``appended`` an entry, ``ignored`` by a filter/policy,
            ``duplicate`` of a message already processed (including a redelivery after a crash),
            ``rejected`` by a rule, or ``failed`` (quarantined with its raw bytes; nothing else changed).
        ticket: The ticket number concerned, if any.
        entry_id: The thread entry created, if any.
        message_id: The message's (possibly generated) Message-ID.
        reasons: Everything that fired, from rules, threading and duplicate checks.
        alert: Whether the application should alert staff.
        autorespond: Whether the application may send an auto-response.
        already_processed: True when this exact mailbox item was processed before (a redelivery).
        provenance: Where the message came from.
        error: The error behind a ``failed`` (or ``rejected``) outcome.
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
        """Whether the source may now delete/move/flag the item: every committed action but ``failed``."""
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


class Pipeline:
    """Ties parsing, rules, threading and a backend together. STUB: replaced by the pipeline work.

    Intended signature::

        Pipeline(backend, *, rules=None, threading=None, clock=..., hooks=None, parse_options=None)
        process_email(raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome
        process_request(request: TicketRequest, *, context=None, idempotency_key: str | None = None) -> Outcome
        is_processed(provenance: Provenance) -> bool

    ``process_email`` never raises for a bad message (it returns a ``failed`` outcome after
    quarantining the raw bytes); it raises :class:`~ticketmail.errors.BackendError` when the backend
    itself is unavailable, so the caller must not acknowledge and should retry later.
    """

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        """Process one raw message."""
        raise NotImplementedError

    def process_request(
        self, request: TicketRequest, *, context: MailboxContext | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        """Process one API ticket request."""
        raise NotImplementedError

    def is_processed(self, provenance: Provenance) -> bool:
        """Whether this mailbox item was already committed (a source may then just acknowledge it)."""
        raise NotImplementedError
