"""The unit-of-work effect of one API ticket request (osTicket's `POST /api/tickets`)."""

from __future__ import annotations

import attrs

from ticketmail._pipeline.config import Config
from ticketmail._pipeline.content import create_ticket, request_text, with_html_note, with_note
from ticketmail._pipeline.ledger import Result, finish, redelivery, verdict
from ticketmail._pipeline.outcome import Outcome
from ticketmail.backends.base import NewEntry, UnitOfWork
from ticketmail.decision import Reason
from ticketmail.model import MailboxContext, Provenance, TicketRequest

__all__ = ["request_effect"]


def request_effect(
    config: Config,
    uow: UnitOfWork,
    request: TicketRequest,
    provenance: Provenance | None,
    key: str | None,
    ctx: MailboxContext,
) -> Result:
    """Everything one request does inside its unit of work: a retried idempotency key is a `duplicate`."""
    now = config.now()
    if key is not None:
        previous = uow.processed(key)
        if previous is not None:
            return Result(redelivery(previous, provenance))
    base = Outcome("ignored", provenance=provenance)
    decision = config.evaluate(request, ctx, uow, now)
    settled = verdict(decision, base)
    if settled is None and not decision.may_open_ticket:  # e.g. the sender is over the rate limit
        no_ticket = Reason("request.no_ticket", "the rules allow no new ticket for it")
        settled = attrs.evolve(base, reasons=(*decision.reasons, no_ticket))
    if settled is not None:
        finish(uow, settled, key, (), now)
        return Result(settled)
    ticket = create_ticket(config, uow, request, request.email, decision, ctx, now)
    files = config.apply_policy(request.attachments)
    html = request.message.text if request.message.content_type == "text/html" else None
    body = request_text(request)
    if files.rejected:
        body, html = with_note(body, files.note()), with_html_note(html, files.note())
    entry = uow.append_entry(
        ticket.number,
        NewEntry(kind="message", author=request.email, body=body, created=now, html=html, attachments=files.kept),
    )
    outcome = Outcome(
        "created",
        ticket=ticket.number,
        entry_id=entry.id,
        reasons=decision.reasons + files.reasons(),
        alert=request.alert,
        autorespond=request.autorespond and decision.autorespond,
        provenance=provenance,
    )
    finish(uow, outcome, key, (), now)
    return Result(outcome, entry)
