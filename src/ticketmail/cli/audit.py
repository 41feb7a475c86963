"""`ticketmail audit`: why each message did or did not become a ticket.

`ticketmail audit` prints one line per decision, newest first: time, mailbox, sender, subject, outcome,
ticket and the reasons in words. `ticketmail audit show ID` prints one decision in full: where the message
came from, every reason with the rule, filter or signal that fired and its value, the threading route and
the headers that mattered. `--json` prints one object per line (the schema is in docs/cli.md).
"""

from __future__ import annotations

import argparse
import datetime as _dt
from collections.abc import Iterator
from typing import Any

from ticketmail.audit import OUTCOMES, AuditQuery, reasons_in_words, select_audit
from ticketmail.backends.base import AuditRecord
from ticketmail.cli._args import ArgSpec, add_arguments, since
from ticketmail.cli._common import EXIT_BACKEND, EXIT_OK, EXIT_USAGE, db_argument, open_backend, target
from ticketmail.cli._config import add_config_argument
from ticketmail.cli._output import Output, add_output_flags
from ticketmail.errors import BackendError, TicketmailError

__all__ = ["audit_json", "register"]

EXIT_NOT_FOUND = 1


_AUDIT_ARGS: tuple[ArgSpec, ...] = (
    (("--mailbox",), {"metavar": "NAME", "help": "only decisions on mail from this mailbox"}),
    (("--since",), {"type": since, "metavar": "WHEN", "help": "only decisions since WHEN (ISO date/time, or 2h, 3d)"}),
    (("--outcome",), {"action": "append", "choices": OUTCOMES, "metavar": "OUTCOME",
                      "help": f"only these ({', '.join(OUTCOMES)})"}),
    (("--ticket",), {"metavar": "NUMBER", "help": "only decisions about this ticket"}),
    (("--message-id",), {"metavar": "ID", "help": "only decisions about this Message-ID"}),
    (("--sender",), {"metavar": "TEXT", "help": "only senders whose address contains TEXT"}),
    (("--limit",), {"type": int, "default": 50, "metavar": "N", "help": "at most N decisions (default 50; 0: all)"}),
)  # fmt: skip


def register(subparsers: Any) -> None:
    """Add `audit` (list decisions) and `audit show ID`."""
    audit = subparsers.add_parser(
        "audit",
        help="why each message did or did not become a ticket (the decision log)",
        description="List decisions, newest first, or show one in full with 'audit show ID'.",
    )
    audit.add_argument("action", nargs="?", choices=("list", "show"), default="list", help="list (default) or show")
    audit.add_argument("id", nargs="?", type=int, metavar="ID", help="the decision to show (with 'show')")
    db_argument(audit)
    add_config_argument(audit)
    add_arguments(audit, _AUDIT_ARGS)
    add_output_flags(audit, quiet=False, what="decision")
    audit.set_defaults(func=run_audit)


def audit_json(record: AuditRecord) -> dict[str, Any]:
    """One decision as the JSON object `ticketmail audit --json` prints."""
    prov = record.provenance
    return {
        "id": record.id,
        "at": record.at.isoformat(),
        "mailbox": prov.mailbox if prov else None,
        "origin": record.origin,
        "provenance": None if prov is None else {"mailbox": prov.mailbox, "kind": prov.kind, "key": prov.key},
        "sender": record.sender,
        "subject": record.subject,
        "outcome": record.action,
        "ticket": record.ticket,
        "entry": record.entry_id,
        "message_id": record.message_id,
        "reasons": [{"code": code, "message": message, "value": value} for code, message, value in record.reasons],
        "headers": [[name, value] for name, value in record.headers],
    }


def _cell(text: str | None, width: int) -> str:
    text = " ".join((text or "-").split())
    return (text if len(text) <= width else text[: width - 1] + "\u2026").ljust(width)


def _line(record: AuditRecord) -> str:
    mailbox = record.provenance.mailbox if record.provenance else "-"
    when = record.at.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return "  ".join(
        (
            str(record.id or "-").rjust(6),
            when,
            _cell(mailbox, 12),
            _cell(record.sender, 28),
            _cell(record.subject, 30),
            _cell(record.action, 9),
            _cell(record.ticket, 10),
            reasons_in_words(record),
        )
    )


def _show(record: AuditRecord) -> Iterator[str]:
    yield f"decision {record.id}: {record.action}"
    yield f"  at:         {record.at.isoformat()}"
    yield f"  from:       {record.origin or '-'}"
    yield f"  sender:     {record.sender or '-'}"
    yield f"  subject:    {record.subject or '-'}"
    yield f"  message id: {record.message_id or '-'}"
    yield f"  ticket:     {record.ticket or '-'}" + (f" (entry {record.entry_id})" if record.entry_id else "")
    yield "  reasons:"
    if not record.reasons:
        yield "    (none recorded)"
    for code, message, value in record.reasons:
        yield f"    - {message}"
        yield f"      code: {code}" + (f"; value: {value}" if value else "")
    route = [f"{message} ({code})" for code, message, _value in record.reasons if code.startswith("thread.")]
    yield f"  threading:  {'; '.join(route) if route else '-'}"
    yield "  headers:"
    if not record.headers:
        yield "    (none recorded)"
    for name, value in record.headers:
        yield f"    {name}: {value}"


def _query(args: argparse.Namespace) -> AuditQuery:
    return AuditQuery(
        mailbox=args.mailbox,
        since=args.since,
        outcome=tuple(args.outcome or ()),
        ticket=args.ticket,
        message_id=args.message_id,
        sender=args.sender,
        limit=None if args.action == "show" or args.limit <= 0 else args.limit,
    )


def _print(output: Output, backend: Any, args: argparse.Namespace) -> int:
    if args.action == "show":
        found = next((r for r in backend.audit_log() if r.id == args.id), None)
        if found is None:
            output.error(f"no decision {args.id} in {args.db}", "not_found")
            return EXIT_NOT_FOUND
        output.record(audit_json(found))
        output.lines(_show(found))
        return EXIT_OK
    for record in select_audit(backend.audit_log(), _query(args)):
        output.record(audit_json(record))
        output.text(_line(record))
        if output.gone:
            break
    return EXIT_OK


def run_audit(args: argparse.Namespace) -> int:
    """Run `ticketmail audit`."""
    output = Output(args)
    if args.action == "show" and args.id is None:
        output.error("'audit show' needs the decision's ID (from 'ticketmail audit')", "invalid_input")
        return EXIT_USAGE
    try:
        backend = open_backend(target(args)[1], create=False)
    except TicketmailError as exc:
        output.error(exc)
        return EXIT_USAGE
    try:
        return _print(output, backend, args)
    except BackendError as exc:
        output.error(exc)
        return EXIT_BACKEND
    finally:
        backend.close()
