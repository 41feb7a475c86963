"""The unit-of-work effect of one email, as a table of named steps.

Each gate either settles the message (a redelivery, a duplicate, our own mail, a rule's verdict, a threading
policy, no sender) or lets it through; a message that passes every gate is stored (`_store`). Whatever
settles a message writes its ledger rows and audit record last (`ticketmail._pipeline.ledger.finish()`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable

import attrs

from ticketmail._pipeline.config import Config
from ticketmail._pipeline.content import add_recipients, create_ticket, email_entry
from ticketmail._pipeline.ledger import Result, duplicate_of, finish, redelivery, verdict
from ticketmail._pipeline.outcome import Outcome, OutcomeAction, ProcessingError
from ticketmail._pipeline.prepare import Prepared
from ticketmail.backends.base import Entry, ProcessedRecord, QuarantineRecord, Ticket, UnitOfWork, processed_many
from ticketmail.decision import Decision, Reason
from ticketmail.errors import PolicyRejectedError
from ticketmail.model import Address, MailboxContext
from ticketmail.threading import ThreadDecision, UntrustedReplyError, resolve_thread

__all__ = ["email_effect"]


@attrs.define
class _Run:
    """One email on its way through the gates: what is known so far."""

    config: Config
    uow: UnitOfWork
    item: Prepared
    ctx: MailboxContext
    now: _dt.datetime
    base: Outcome
    decision: Decision | None = None
    thread: ThreadDecision | None = None

    reasons: tuple[Reason, ...] = ()
    """What the rules and threading said, then the attachment notes (set by the threading gate)."""
    automatic: bool = False
    """Whether the rules classified the mail as automatic (set by the rules gate)."""
    dup_records: tuple[ProcessedRecord | None, ...] = ()
    """The ledger rows of the duplicate keys, read with the message's own key (set by the redelivery gate)."""

    def settle(self, outcome: Outcome, *, keep_raw: bool = False) -> Result:
        """End here with `outcome`; `keep_raw` keeps a refused mail's bytes in the quarantine."""
        finish(self.uow, outcome, self.item.key, (), self.now, raw=self.item.raw if keep_raw else None)
        return Result(outcome)


def _decided(run: _Run) -> Decision:
    if run.decision is None:  # pragma: no cover - the rules gate runs before every later step
        raise ProcessingError("a step after the rules ran before them")
    return run.decision


def _threaded(run: _Run) -> ThreadDecision:
    if run.thread is None:  # pragma: no cover - the threading gate runs before every later step
        raise ProcessingError("a step after threading ran before it")
    return run.thread


def _redelivered(run: _Run) -> Result | None:
    # The message's own key and its duplicate keys in one ledger read (one round trip where the unit batches).
    records = processed_many(run.uow, (run.item.key, *run.item.dup_keys))
    previous, run.dup_records = records[0], records[1:]
    return None if previous is None else Result(redelivery(previous, run.item.provenance))


def _duplicate(run: _Run) -> Result | None:
    duplicate = duplicate_of(
        run.uow, run.item.dup_keys, run.item.provenance, run.item.email.message_id, records=run.dup_records
    )
    return None if duplicate is None else run.settle(duplicate)


def _own_message(run: _Run) -> Result | None:
    message_id = run.item.email.message_id
    if run.config.verify_token(message_id) is None:
        return None
    why = Reason("loop.own_message_id", "this is a message we sent", value=message_id)
    return run.settle(attrs.evolve(run.base, reasons=(why,)))


def _rules(run: _Run) -> Result | None:
    run.decision = decision = run.config.evaluate(run.item.email, run.ctx, run.uow, run.now)
    run.automatic = decision.automatic is not None
    refused = verdict(decision, run.base)
    return None if refused is None else run.settle(refused, keep_raw=True)


def _threading(run: _Run) -> Result | None:
    config, decision = run.config, _decided(run)
    run.thread = thread = resolve_thread(
        run.item.email,
        run.uow,
        options=config.threading,
        verify_token=config.verify_token if config.token_keys else None,
        own_addresses=run.ctx.addresses,
        automatic=run.automatic,
        may_open_ticket=decision.may_open_ticket,
        candidates=run.item.candidates,
    )
    run.reasons = decision.reasons + thread.reasons + run.item.notes
    if thread.action == "quarantine":  # rolled back and kept in the quarantine (raw bytes) for an operator
        raise UntrustedReplyError(thread.reasons[-1].message, field="threading.untrusted_match")
    if thread.action not in ("ignore", "reject"):
        return None
    rejected = thread.action == "reject"
    outcome = attrs.evolve(
        run.base,
        action="rejected" if rejected else "ignored",
        ticket=thread.ticket.number if thread.ticket else None,
        reasons=run.reasons,
        error=PolicyRejectedError(thread.reasons[-1].message) if rejected else None,
    )
    return run.settle(outcome, keep_raw=True)


def _sender(run: _Run) -> Result | None:
    if _threaded(run).requester is not None:
        return None
    error = PolicyRejectedError("the message names no sender, so it cannot be threaded or open a ticket")
    return run.settle(attrs.evolve(run.base, action="rejected", reasons=run.reasons, error=error), keep_raw=True)


_GATES: tuple[Callable[[_Run], Result | None], ...] = (
    _redelivered,
    _duplicate,
    _own_message,
    _rules,
    _threading,
    _sender,
)
"""In order; the first that settles the message ends its effect."""


def _open(
    run: _Run, decision: Decision, thread: ThreadDecision, requester: Address
) -> tuple[Ticket, Entry, OutcomeAction, bool]:
    """A new ticket (linked to a closed one for `new_linked`); a new ticket always concerns staff."""
    linked = thread.ticket.number if thread.action == "new_linked" and thread.ticket else None
    email = run.item.email
    ticket = create_ticket(run.config, run.uow, email, requester, decision, run.ctx, run.now, linked)
    entry = run.uow.append_entry(ticket.number, email_entry(email, requester, "message", run.now))
    return ticket, entry, "created", True


def _append(
    run: _Run, decision: Decision, thread: ThreadDecision, requester: Address
) -> tuple[Ticket, Entry, OutcomeAction, bool]:
    """The reply on its ticket (reopened, the sender added, as threading said); no alert for auto-replies."""
    uow = run.uow
    if thread.ticket is None:  # pragma: no cover - append/reopen always carry the matched ticket
        raise ProcessingError("threading chose to append without naming a ticket")
    ticket = thread.ticket
    if thread.action == "reopen":
        uow.set_status(ticket.number, "open", at=run.now)
    if thread.add_participant:
        uow.add_participant(ticket.number, requester.email)
    entry = uow.append_entry(ticket.number, email_entry(run.item.email, requester, "reply", run.now))
    return ticket, entry, "appended", not run.automatic


def _keep_dropped_raw(run: _Run) -> None:
    """Keep the original bytes of a mail whose file was dropped, where raw mail is kept.

    A false positive can then be recovered by an administrator (the ticket itself never carries the refused file).
    """
    item, policy = run.item, run.config.attachments
    if item.notes and policy is not None and policy.keep_raw:
        why = "; ".join(f"{r.value}: {r.message}" for r in item.notes)[:1000]
        run.uow.quarantine(QuarantineRecord(run.now, item.raw, "attachment_dropped", why, item.provenance))


def _store(run: _Run, decision: Decision, thread: ThreadDecision, requester: Address) -> Result:
    """Create the ticket or append the entry, then the participants, the kept raw bytes and the ledger."""
    store = _open if thread.action in ("new", "new_linked") else _append
    ticket, entry, action, alert = store(run, decision, thread, requester)
    reasons = run.reasons
    if run.config.threading.recipients_as_participants and not run.automatic:
        reasons += add_recipients(run.config, run.uow, run.item.email, ticket, requester, run.ctx)
    _keep_dropped_raw(run)
    outcome = Outcome(
        action,
        ticket=ticket.number,
        entry_id=entry.id,
        message_id=run.item.email.message_id,
        reasons=reasons,
        alert=alert,
        autorespond=decision.autorespond and not run.automatic,
        provenance=run.item.provenance,
    )
    finish(run.uow, outcome, run.item.key, run.item.dup_keys, run.now)
    return Result(outcome, entry)


def email_effect(config: Config, uow: UnitOfWork, item: Prepared, ctx: MailboxContext) -> Result:
    """Everything one email does inside its unit of work (the caller commits, then fires the hooks)."""
    now = config.now()
    base = Outcome("ignored", message_id=item.email.message_id, provenance=item.provenance)
    run = _Run(config, uow, item, ctx, now, base)
    for gate in _GATES:
        result = gate(run)
        if result is not None:
            return result
    decision, thread = _decided(run), _threaded(run)
    if thread.requester is None:  # pragma: no cover - the sender gate settles a message without one
        raise ProcessingError("a message without a sender reached the store")
    return _store(run, decision, thread, thread.requester)
