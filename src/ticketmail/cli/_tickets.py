"""`ticketmail tickets` and `ticketmail show`: read the tickets of a database.

`tickets` prints a table, newest first (`--json`: one object per ticket per line); `show NUMBER` prints one
ticket with its thread (`--json`: one object). A missing database is an error; reading never creates one.
Exit codes: 0 printed; 1 no such ticket; 2 bad usage or configuration; 3 the database failed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from typing import Any

from ticketmail.backends._query import TicketQuery, select_tickets
from ticketmail.backends.base import Entry, Ticket
from ticketmail.cli._args import ArgSpec, add_arguments, positive_int, since
from ticketmail.cli._common import EXIT_BACKEND, EXIT_FAILED, EXIT_OK, EXIT_USAGE, db_argument, open_backend, target
from ticketmail.cli._config import add_config_argument
from ticketmail.cli._output import Output, add_output_flags, short
from ticketmail.errors import BackendError, TicketmailError
from ticketmail.jsonify import to_jsonable

__all__ = ["register", "run_show", "run_tickets", "show_json", "ticket_summary"]

_TICKETS_ARGS: tuple[ArgSpec, ...] = (
    (("--limit",), {"type": positive_int("a number of tickets"), "default": None, "metavar": "N",
                    "help": "at most this many tickets"}),
    (("--status",), {"choices": ("open", "closed", "merged"), "default": None,
                     "help": "only tickets with this status"}),
    (("--mailbox",), {"metavar": "NAME", "help": "only tickets opened from this mailbox"}),
    (("--department",), {"metavar": "NAME", "help": "only tickets of this department"}),
    (("--requester",), {"metavar": "TEXT", "help": "only requesters whose address contains TEXT"}),
    (("--since",), {"type": since, "metavar": "WHEN", "help": "only tickets updated since WHEN (ISO, or 2h, 3d)"}),
    (("--oldest-first",), {"action": "store_true", "help": "oldest first (default: newest first)"}),
)  # fmt: skip


def register(subparsers: Any) -> None:
    """Add the `tickets` and `show` sub-commands."""
    tickets = subparsers.add_parser("tickets", help="list the tickets in a database")
    db_argument(tickets)
    add_config_argument(tickets)
    add_output_flags(tickets, what="ticket")
    add_arguments(tickets, _TICKETS_ARGS)
    tickets.set_defaults(func=run_tickets)

    show = subparsers.add_parser("show", help="show one ticket with its thread")
    show.add_argument("number", metavar="NUMBER", help="the ticket number")
    db_argument(show)
    add_config_argument(show)
    add_output_flags(show, quiet=False, what="ticket (with its entries)")
    show.set_defaults(func=run_show)


def ticket_summary(ticket: Ticket) -> dict[str, Any]:
    """A ticket as the JSON object `tickets --json` prints (`requester` is the email address)."""
    return {
        "number": ticket.number,
        "subject": ticket.subject,
        "requester": ticket.requester.email,
        "requester_name": ticket.requester.name,
        "status": ticket.status,
        "entries": ticket.entry_count,
        "created": ticket.created.isoformat(),
        "updated": ticket.updated.isoformat(),
        "source": ticket.source,
        "mailbox": ticket.mailbox,
        "department": ticket.department,
        "team": ticket.team,
        "category": ticket.category,
        "priority": ticket.priority,
        "topic_id": ticket.topic_id,
        "assignee": ticket.assignee,
        "tags": list(ticket.tags),
        "participants": list(ticket.participants),
        "merged_into": ticket.merged_into,
        "custom_fields": dict(ticket.custom_fields),
    }


def _entry_json(entry: Entry, position: int) -> dict[str, Any]:
    data: dict[str, Any] = to_jsonable(entry)
    data["position"] = position  # 1 for the ticket's first entry; `id` is the backend's own id
    data["author"] = entry.author.email if entry.author else None
    data["author_name"] = entry.author.name if entry.author else None
    return data


def show_json(ticket: Ticket, entries: Iterable[Entry]) -> dict[str, Any]:
    """A ticket with its thread as the JSON object `show --json` prints."""
    data = ticket_summary(ticket)
    data["entry_count"] = data["entries"]
    data["entries"] = [_entry_json(e, position) for position, e in enumerate(entries, 1)]
    return data


def _query(args: argparse.Namespace) -> TicketQuery:
    return TicketQuery(
        mailbox=args.mailbox,
        department=args.department,
        requester=args.requester,
        status=args.status,
        since=args.since,
        limit=args.limit,
        newest_first=not args.oldest_first,
    )


def run_tickets(args: argparse.Namespace) -> int:
    """List tickets; return the exit code."""
    output = Output(args)
    try:
        backend = open_backend(target(args)[1], create=False)
    except TicketmailError as exc:
        output.error(exc)
        return EXIT_USAGE
    try:
        tickets = select_tickets(backend, _query(args))
    except BackendError as exc:
        output.error(exc)
        return EXIT_BACKEND
    finally:
        backend.close()
    for ticket in tickets:
        output.record(ticket_summary(ticket))
    output.table([_TICKET_HEADER, *(_ticket_row(t) for t in tickets)])
    output.text(f"{len(tickets)} ticket(s)")
    return EXIT_OK


_TICKET_HEADER = ["NUMBER", "STATUS", "ENTRIES", "UPDATED", "REQUESTER", "SUBJECT"]


def _ticket_row(t: Ticket) -> list[str]:
    return [
        t.number,
        t.status if t.merged_into is None else f"merged>{t.merged_into}",
        str(t.entry_count),
        t.updated.strftime("%Y-%m-%d %H:%M"),
        t.requester.email,
        short(t.subject, 60),
    ]


def _text_lines(ticket: Ticket, entries: Iterable[Entry]) -> Iterator[str]:
    yield f"Ticket {ticket.number}: {ticket.subject}"
    yield f"  status:     {ticket.status}" + (f" (merged into {ticket.merged_into})" if ticket.merged_into else "")
    yield f"  requester:  {ticket.requester}"
    if ticket.participants:
        yield f"  also:       {', '.join(ticket.participants)}"
    yield f"  created:    {ticket.created.isoformat()}    updated: {ticket.updated.isoformat()}"
    for label, value in (
        ("mailbox", ticket.mailbox),
        ("department", ticket.department),
        ("category", ticket.category),
        ("priority", ticket.priority),
        ("assignee", ticket.assignee),
    ):
        if value is not None:
            yield f"  {label + ':':<11} {value}"
    if ticket.tags:
        yield f"  tags:       {', '.join(ticket.tags)}"
    for name, field_value in ticket.custom_fields:
        yield f"  {name + ':':<11} {_custom_text(field_value)}"
    for position, entry in enumerate(entries, 1):
        yield from _entry_lines(entry, position)


def _entry_lines(entry: Entry, position: int) -> Iterator[str]:
    yield ""
    author = str(entry.author) if entry.author else "(unknown)"
    yield f"--- #{position} {entry.kind} from {author} at {entry.created.isoformat()} (id {entry.id})"
    if entry.message_id:
        yield f"    Message-ID: <{entry.message_id}>"
    for ref in entry.files:
        yield f"    attachment: {ref.filename} ({ref.content_type}, {ref.size} bytes)"
    yield ""
    yield from (entry.body.rstrip() or "(empty)").splitlines()


def _custom_text(value: object) -> str:
    """A stored custom field value for people: text as is, a choice as its label and key, others as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"key", "label"}:
        return f"{value['label']} ({value['key']})"
    if isinstance(value, list) and value and all(isinstance(v, dict) and set(v) == {"key", "label"} for v in value):
        return ", ".join(_custom_text(v) for v in value)
    return json.dumps(value, ensure_ascii=False)


def run_show(args: argparse.Namespace) -> int:
    """Show one ticket; return the exit code."""
    output = Output(args)
    try:
        store = target(args)[1]
        backend = open_backend(store, create=False)
    except TicketmailError as exc:
        output.error(exc)
        return EXIT_USAGE
    try:
        ticket = backend.get_ticket(args.number)
        entries = list(backend.entries(args.number)) if ticket is not None else []
    except BackendError as exc:
        output.error(exc)
        return EXIT_BACKEND
    finally:
        backend.close()
    if ticket is None:
        output.error(f"no ticket {args.number} in {store}", "not_found")
        return EXIT_FAILED
    output.record(show_json(ticket, entries))
    output.lines(_text_lines(ticket, entries))
    return EXIT_OK
