"""`ticketmail audit`: why each message did or did not become a ticket.

`ticketmail audit` prints one line per decision, newest first: time, mailbox, sender, subject, outcome,
ticket and the reasons in words. `ticketmail audit show ID` prints one decision in full: where the message
came from, every reason with the rule, filter or signal that fired and its value, the threading route and
the headers that mattered. `--json` prints one object per line (the schema is in docs/cli.md).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from typing import IO, Any

from ticketmail.audit import OUTCOMES, AuditQuery, reasons_in_words, select_audit
from ticketmail.backends.base import AuditRecord
from ticketmail.cli._config import add_config_argument
from ticketmail.cli.ingest import (
    EXIT_BACKEND,
    EXIT_OK,
    EXIT_USAGE,
    _db_argument,
    _error,
    _open_backend,
    _since,
    _target,
)
from ticketmail.errors import BackendError, TicketmailError

__all__ = ["audit_json", "register"]

EXIT_NOT_FOUND = 1


def register(subparsers: Any) -> None:
    """Add `audit` (list decisions) and `audit show ID`."""
    audit = subparsers.add_parser(
        "audit",
        help="why each message did or did not become a ticket (the decision log)",
        description="List decisions, newest first, or show one in full with 'audit show ID'.",
    )
    audit.add_argument("action", nargs="?", choices=("list", "show"), default="list", help="list (default) or show")
    audit.add_argument("id", nargs="?", type=int, metavar="ID", help="the decision to show (with 'show')")
    _db_argument(audit)
    add_config_argument(audit)
    audit.add_argument("--mailbox", metavar="NAME", help="only decisions on mail from this mailbox")
    audit.add_argument(
        "--since", type=_since, metavar="WHEN", help="only decisions since WHEN (ISO date/time, or 2h, 3d)"
    )
    audit.add_argument(
        "--outcome", action="append", choices=OUTCOMES, metavar="OUTCOME", help=f"only these ({', '.join(OUTCOMES)})"
    )
    audit.add_argument("--ticket", metavar="NUMBER", help="only decisions about this ticket")
    audit.add_argument("--message-id", metavar="ID", help="only decisions about this Message-ID")
    audit.add_argument("--sender", metavar="TEXT", help="only senders whose address contains TEXT")
    audit.add_argument("--limit", type=int, default=50, metavar="N", help="at most N decisions (default 50; 0: all)")
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
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


def _show(record: AuditRecord, out: IO[str]) -> None:
    print(f"decision {record.id}: {record.action}", file=out)
    print(f"  at:         {record.at.isoformat()}", file=out)
    print(f"  from:       {record.origin or '-'}", file=out)
    print(f"  sender:     {record.sender or '-'}", file=out)
    print(f"  subject:    {record.subject or '-'}", file=out)
    print(f"  message id: {record.message_id or '-'}", file=out)
    print(
        f"  ticket:     {record.ticket or '-'}" + (f" (entry {record.entry_id})" if record.entry_id else ""), file=out
    )
    print("  reasons:", file=out)
    if not record.reasons:
        print("    (none recorded)", file=out)
    for code, message, value in record.reasons:
        print(f"    - {message}", file=out)
        print(f"      code: {code}" + (f"; value: {value}" if value else ""), file=out)
    route = [f"{message} ({code})" for code, message, _value in record.reasons if code.startswith("thread.")]
    print(f"  threading:  {'; '.join(route) if route else '-'}", file=out)
    print("  headers:", file=out)
    if not record.headers:
        print("    (none recorded)", file=out)
    for name, value in record.headers:
        print(f"    {name}: {value}", file=out)


def run_audit(args: argparse.Namespace) -> int:
    """Run `ticketmail audit`."""
    out, err = sys.stdout, sys.stderr
    if args.action == "show" and args.id is None:
        print("ticketmail: error: 'audit show' needs the decision's ID (from 'ticketmail audit')", file=err)
        return EXIT_USAGE
    try:
        query = AuditQuery(
            mailbox=args.mailbox,
            since=args.since,
            outcome=tuple(args.outcome or ()),
            ticket=args.ticket,
            message_id=args.message_id,
            sender=args.sender,
            limit=None if args.action == "show" or args.limit <= 0 else args.limit,
        )
        backend = _open_backend(_target(args)[1], create=False)
    except TicketmailError as exc:
        _error(err, exc)
        return EXIT_USAGE
    try:
        if args.action == "show":
            found = next((r for r in backend.audit_log() if r.id == args.id), None)
            if found is None:
                print(f"ticketmail: error: no decision {args.id} in {args.db}", file=err)
                return EXIT_NOT_FOUND
            if args.json:
                print(json.dumps(audit_json(found), ensure_ascii=False), file=out)
            else:
                _show(found, out)
            return EXIT_OK
        for record in select_audit(backend.audit_log(), query):
            print(json.dumps(audit_json(record), ensure_ascii=False) if args.json else _line(record), file=out)
    except BackendError as exc:
        _error(err, exc)
        return EXIT_BACKEND
    finally:
        backend.close()
    return EXIT_OK
