"""What a committed message stores: a new ticket's fields, its thread entries, recipients as participants."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Literal

from ticketmail._pipeline.config import Config
from ticketmail.backends.base import NewEntry, NewTicket, Ticket, UnitOfWork
from ticketmail.decision import Decision, Reason
from ticketmail.model import Address, InboundEmail, MailboxContext, TicketRequest
from ticketmail.parsing.html import html_to_text

__all__ = [
    "MAX_RECIPIENT_PARTICIPANTS",
    "add_recipients",
    "create_ticket",
    "email_entry",
    "request_text",
    "with_html_note",
    "with_note",
]

MAX_RECIPIENT_PARTICIPANTS = 50
"""With `recipients_as_participants`, at most this many recipients of one message join its ticket."""


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


def _tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(str(v) for v in value)
    return (str(value),)


def with_note(text: str, note: str) -> str:
    """`text` with `note` (dropped attachments) as its last paragraph."""
    return f"{text.rstrip()}\n\n{note}" if text.strip() else note


def with_html_note(html: str | None, note: str) -> str | None:
    """`html` with `note` appended as an escaped `pre` block (`None` stays `None`)."""
    if html is None:
        return None
    import html as _html

    return f'{html}<pre class="ticketmail-note">{_html.escape(note)}</pre>'


def request_text(request: TicketRequest) -> str:
    """The plain-text body of an API request: an HTML message (sanitized by the parser) as text, as mail."""
    if request.message.content_type == "text/html":
        return html_to_text(request.message.text)
    return request.message.text


def _message_fields(
    message: InboundEmail | TicketRequest, attributes: Mapping[str, object], ctx: MailboxContext
) -> tuple[str, int | None, int | None, dict[str, object]]:
    """Source, priority, topic and custom fields of a new ticket before the rules' `custom.*` values."""
    custom: dict[str, object] = {}
    if not isinstance(message, TicketRequest):
        return (
            "email",
            _opt_int(attributes.get("priority")) or ctx.priority,
            _opt_int(attributes.get("topic_id")),
            custom,
        )
    priority = _opt_int(attributes.get("priority")) or message.priority or ctx.priority
    topic_id = _opt_int(attributes.get("topic_id")) or message.topic_id
    custom.update((name, value) for name, value in message.custom_fields.items() if value is not None)
    if message.phone is not None:
        custom.setdefault("phone", message.phone)
    if message.ip is not None:
        custom.setdefault("ip", message.ip)
    return message.source, priority, topic_id, custom


def create_ticket(
    config: Config,
    uow: UnitOfWork,
    message: InboundEmail | TicketRequest,
    requester: Address,
    decision: Decision,
    ctx: MailboxContext,
    now: _dt.datetime,
    linked: str | None = None,
) -> Ticket:
    """Open the ticket for `message`; the rules' attributes win over the caller's values."""
    attributes = decision.attributes
    # Typed values (numbers, booleans, choices, datetimes) are kept: NewTicket stores them as JSON values.
    source, priority, topic_id, custom = _message_fields(message, attributes, ctx)
    custom.update(
        (name[len("custom.") :], value)
        for name, value in attributes.items()
        if name.startswith("custom.") and value is not None
    )
    if linked is not None:
        custom["linked_ticket"] = linked
    return uow.create_ticket(
        NewTicket(
            number=config.new_number(uow),
            subject=message.subject.strip() or "(no subject)",
            requester=requester,
            created=now,
            source=source,
            mailbox=ctx.name,
            department=_opt_str(attributes.get("department")) or ctx.department,
            team=_opt_str(attributes.get("team")),
            category=_opt_str(attributes.get("category")) or ctx.category,
            priority=priority,
            topic_id=topic_id,
            assignee=_opt_str(attributes.get("assignee")),
            tags=_tags(attributes.get("tags")),
            custom_fields=tuple(custom.items()),
        )
    )


def email_entry(
    email: InboundEmail, author: Address | None, kind: Literal["message", "reply"], now: _dt.datetime
) -> NewEntry:
    """The thread entry of a mail: a reply stores what the writer added, the first message all of it."""
    body = (email.new_text or email.text) if kind == "reply" else email.text
    return NewEntry(
        kind=kind,
        author=author,
        body=body,
        created=now,
        html=email.html,
        message_id=email.message_id,
        attachments=email.attachments,
    )


def add_recipients(
    config: Config, uow: UnitOfWork, email: InboundEmail, ticket: Ticket, requester: Address, ctx: MailboxContext
) -> tuple[Reason, ...]:
    """Add the message's To/Cc people (not the desk, not the requester) as participants."""
    own = config.own_addresses(ctx)
    sep = config.threading.plus_separator
    skip = {requester.email.lower(), ticket.requester.email.lower(), *(p.lower() for p in ticket.participants)}
    added: list[Reason] = []
    for address in (*email.to, *email.cc):
        if len(added) >= MAX_RECIPIENT_PARTICIPANTS:  # a hostile Cc list must not stall the transaction
            added.append(
                Reason(
                    "thread.recipients_capped",
                    f"only the first {MAX_RECIPIENT_PARTICIPANTS} recipients join the ticket",
                    value=str(MAX_RECIPIENT_PARTICIPANTS),
                )
            )
            break
        lowered = address.email.lower()
        local, _, domain = lowered.rpartition("@")
        if lowered in skip or lowered in own or f"{local.partition(sep)[0]}@{domain}" in own:
            continue
        skip.add(lowered)
        uow.add_participant(ticket.number, address.email)
        added.append(Reason("thread.recipient_participant", "a recipient joins the ticket", value=address.email))
    return tuple(added)
