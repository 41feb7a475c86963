"""The last writes of every committed message (ledger rows, one audit record), and the hooks after the commit."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
from collections.abc import Iterator, Sequence

import attrs

from ticketmail._pipeline.config import Config
from ticketmail._pipeline.outcome import Outcome, OutcomeAction
from ticketmail.audit import describe_message
from ticketmail.backends.base import (
    AuditRecord,
    Entry,
    ProcessedRecord,
    QuarantineRecord,
    Ticket,
    UnitOfWork,
    processed_many,
)
from ticketmail.decision import Decision, Reason
from ticketmail.errors import PolicyRejectedError
from ticketmail.hooks import HookEvent, HookKind
from ticketmail.model import InboundEmail, Provenance, TicketRequest

__all__ = [
    "Result",
    "audit_reasons",
    "auditing",
    "duplicate_of",
    "finish",
    "fire",
    "redelivery",
    "verdict",
]

HOOK_OF: dict[OutcomeAction, HookKind] = {
    "created": "ticket_created",
    "appended": "entry_appended",
    "ignored": "message_ignored",
    "rejected": "message_rejected",
    "failed": "message_failed",
}
"""The hook each action fires; a `duplicate` fires none (nothing happened)."""


@attrs.frozen
class Result:
    """An outcome plus what the hooks need, produced inside the unit of work."""

    outcome: Outcome
    entry: Entry | None = None

    @property
    def hook(self) -> HookKind | None:
        """The hook this result fires after the commit."""
        return HOOK_OF.get(self.outcome.action)


def audit_reasons(reasons: tuple[Reason, ...]) -> tuple[tuple[str, str, str | None], ...]:
    """Reasons as the audit log stores them."""
    return tuple((r.code, r.message, r.value) for r in reasons)


# The message whose effect is being applied, for its audit record. Set around each effect (one message at a
# time per thread or task, also inside a group commit), so the audit record carries the sender, subject and
# headers without every decision path having to pass the message along.
_AUDITED: contextvars.ContextVar[InboundEmail | TicketRequest | None] = contextvars.ContextVar(
    "ticketmail_audited_message", default=None
)


@contextlib.contextmanager
def auditing(message: InboundEmail | TicketRequest) -> Iterator[None]:
    """Make `message` the one the audit records written in this block describe."""
    token = _AUDITED.set(message)
    try:
        yield
    finally:
        _AUDITED.reset(token)


def finish(
    uow: UnitOfWork,
    outcome: Outcome,
    key: str | None,
    dup_keys: tuple[str, ...],
    now: _dt.datetime,
    *,
    raw: bytes | None = None,
) -> None:
    """Ledger rows and the audit record, the last writes of every committed message.

    A `rejected` mail keeps its raw bytes in the quarantine (`raw`), in the same unit of work, so the
    source may acknowledge (even delete) it: nothing refused is lost, and the operator can review it.
    """
    if raw is not None and outcome.action == "rejected":
        error = outcome.error or PolicyRejectedError("refused by a rule")
        uow.quarantine(QuarantineRecord(now, raw, error.code, error.message, outcome.provenance))
    keys: tuple[str, ...] = (key,) if key is not None else ()
    if outcome.action in ("created", "appended"):
        keys += dup_keys
    for one in keys:
        uow.record_processed(
            ProcessedRecord(one, outcome.action, now, outcome.ticket, outcome.entry_id, outcome.message_id)
        )
    record = AuditRecord(
        now,
        outcome.action,
        outcome.message_id,
        outcome.provenance,
        outcome.ticket,
        audit_reasons(outcome.reasons),
        outcome.entry_id,
    )
    uow.record_audit(describe_message(record, _AUDITED.get()))


def redelivery(record: ProcessedRecord, provenance: Provenance | None) -> Outcome:
    """The `duplicate` outcome of an item the ledger already has (its first outcome's ticket and entry)."""
    return Outcome(
        "duplicate",
        ticket=record.ticket,
        entry_id=record.entry_id,
        message_id=record.message_id,
        reasons=(
            Reason(
                "duplicate.redelivery",
                f"this item was already processed (first outcome: {record.action})",
                value=record.action,
            ),
        ),
        already_processed=True,
        provenance=provenance,
    )


def duplicate_of(
    uow: UnitOfWork,
    dup_keys: tuple[str, ...],
    provenance: Provenance | None,
    message_id: str | None,
    *,
    records: Sequence[ProcessedRecord | None] = (),
) -> Outcome | None:
    """The `duplicate` outcome when one of the message's duplicate keys is in the ledger, else `None`.

    `records` are the keys' ledger rows when the caller already read them (in the order of `dup_keys`).
    """
    found = tuple(records) if len(records) == len(dup_keys) else processed_many(uow, dup_keys)
    for dup, record in zip(dup_keys, found, strict=True):
        if record is not None:
            return Outcome(
                "duplicate",
                ticket=record.ticket,
                entry_id=record.entry_id,
                message_id=message_id,
                reasons=(Reason("duplicate.key", "the same message was processed before", value=dup),),
                provenance=provenance,
            )
    return None


def verdict(decision: Decision, base: Outcome) -> Outcome | None:
    """An `ignored`/`rejected` outcome when the rules say so, else `None`."""
    reasons = base.reasons + decision.reasons
    if decision.action == "ignore":
        return attrs.evolve(base, action="ignored", reasons=reasons)
    if decision.action == "reject":
        why = decision.reasons[-1].message if decision.reasons else "refused by a rule"
        return attrs.evolve(base, action="rejected", reasons=reasons, error=PolicyRejectedError(why))
    return None


def fire(config: Config, result: Result) -> None:
    """Run the hooks of a committed result (the ticket re-read as committed, for those that concern one)."""
    hook = result.hook
    if hook is None or not config.hooks.registered(hook):
        return
    ticket: Ticket | None = None
    if result.outcome.ticket is not None and hook in ("ticket_created", "entry_appended"):
        try:
            ticket = config.backend.get_ticket(result.outcome.ticket)
        except Exception:  # the commit stands; hooks then get the outcome without the ticket
            config.log.exception("could not re-read ticket %s for hooks", result.outcome.ticket)
    config.hooks.dispatch(HookEvent(hook, result.outcome, ticket, result.entry), logger=config.log)
