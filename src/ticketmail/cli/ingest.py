"""`ticketmail ingest`, `ticketmail tickets` and `ticketmail show`: the main job on the embedded default.

`ingest` reads local inputs (.eml files, Maildir folders, mbox files, JSON/XML payload files; see
`ticketmail.sources.local`) into a SQLite database through the pipeline and prints one JSON line per
message on stdout. Because every item has a stable provenance, running the same command twice changes
nothing the second time: each line then says `"action": "duplicate", "already_processed": true`.

Standard output carries data only (JSON lines, or the tables of `tickets`/`show`); progress and the
summary go to standard error, and the progress bar is drawn only when standard error is a terminal, so
pipes and log files stay clean.

Exit codes: 0 all messages committed; 1 some messages failed (quarantined) or a ticket was not found;
2 bad usage, configuration or unreadable input; 3 the database failed (nothing after that point was
acknowledged; rerun later).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ticketmail.backends._query import TicketQuery, select_tickets
from ticketmail.backends.base import Backend, Entry, Ticket
from ticketmail.cli._config import (
    DEFAULT_DB,
    UNSET_DB,
    add_config_argument,
    add_threading_arguments,
    build_pipeline,
    context_for,
    load_config,
    parse_options,
    storage_target,
)
from ticketmail.config import Config
from ticketmail.errors import BackendError, SourceError, TicketmailError
from ticketmail.jsonify import to_jsonable
from ticketmail.model import MailboxContext
from ticketmail.pipeline import Outcome, Pipeline, unexpected_error
from ticketmail.sources.local import LocalItem, count_local, iter_local

__all__ = ["register", "ticket_summary"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BACKEND = 0, 1, 2, 3


def register(subparsers: Any) -> None:
    """Add the `ingest`, `tickets` and `show` sub-commands."""
    ingest = subparsers.add_parser(
        "ingest",
        help="ingest .eml files, Maildir folders, mbox files and JSON/XML payloads into a ticket database",
        description="Ingest local mail and payload files into SQLite, exactly once; one JSON line per message.",
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to ingest")
    _db_argument(ingest)
    add_config_argument(ingest)
    ingest.add_argument("--rules", metavar="FILE", help="a rules TOML file (replaces [rules]; default: built-in rules)")
    ingest.add_argument(
        "--mailbox",
        default="local",
        metavar="NAME",
        help="the mailbox name recorded on tickets and in Maildir/mbox provenance (default: local); a "
        "[[mailboxes]] entry of that name lends its department, category, priority and addresses",
    )
    ingest.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="EMAIL",
        help="the desk's own address at this mailbox (repeatable; mail from it is a loop)",
    )
    add_threading_arguments(ingest)
    ingest.add_argument(
        "--batch",
        type=_positive,
        default=50,
        metavar="N",
        help="commit up to N messages per transaction (default: 50; 1 commits each message on its own)",
    )
    ingest.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    ingest.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and thread every input as for real and print what would happen; store nothing",
    )
    ingest.set_defaults(func=run_ingest)

    tickets = subparsers.add_parser("tickets", help="list the tickets in a database")
    _db_argument(tickets)
    add_config_argument(tickets)
    tickets.add_argument("--json", action="store_true", help="one JSON object per ticket per line")
    tickets.add_argument("--limit", type=_positive, default=None, metavar="N", help="at most this many tickets")
    tickets.add_argument(
        "--status", choices=("open", "closed", "merged"), default=None, help="only tickets with this status"
    )
    tickets.add_argument("--mailbox", metavar="NAME", help="only tickets opened from this mailbox")
    tickets.add_argument("--department", metavar="NAME", help="only tickets of this department")
    tickets.add_argument("--requester", metavar="TEXT", help="only requesters whose address contains TEXT")
    tickets.add_argument(
        "--since", type=_since, metavar="WHEN", help="only tickets updated since WHEN (ISO, or 2h, 3d)"
    )
    tickets.add_argument("--oldest-first", action="store_true", help="oldest first (default: newest first)")
    tickets.set_defaults(func=run_tickets)

    show = subparsers.add_parser("show", help="show one ticket with its thread")
    show.add_argument("number", metavar="NUMBER", help="the ticket number")
    _db_argument(show)
    add_config_argument(show)
    show.add_argument("--json", action="store_true", help="the whole ticket with its entries as JSON")
    show.set_defaults(func=run_show)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _since(text: str) -> _dt.datetime:
    """An ISO date/time (naive means UTC) or an age such as `90m`, `2h`, `3d`, `1w` before now."""
    text = text.strip()
    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text[:-1].isdigit() and text[-1:] in units:
        return _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date/time or an age like 2h or 3d, got {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)


def _db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=UNSET_DB,
        metavar="FILE|URL",
        help=f"the SQLite database file or a backend URL (overrides [storage]; default: {DEFAULT_DB})",
    )


def _open_backend(target: str, *, create: bool) -> Backend:
    """Open the ticket store `target` names: a SQLite file, or a backend URL (`postgresql://...`).

    Every command opens its backend here, so one place decides how a `--db`/`[storage]` value is read.
    """
    from ticketmail.backends.url import open_backend

    return open_backend(target, create=create)


def _target(args: argparse.Namespace) -> tuple[Config, str]:
    """The configuration (`--config`) and the ticket store (`--db` over `[storage]`) of a command."""
    config = load_config(getattr(args, "config", None))
    return config, storage_target(config, args)


def _quiet_broken_pipe() -> None:
    """The reader went away (`| head`): send further output to /dev/null so exit is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _error(stream: IO[str], exc: TicketmailError) -> None:
    print(f"ticketmail: error: {exc.message} [{exc.code}]", file=stream)


# -- ingest ----------------------------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, stream: IO[str], total: int | None, enabled: bool) -> None:
        self._stream = stream
        self._total = total
        self._enabled = enabled
        self._last = 0.0
        self._start = time.monotonic()

    def update(self, done: int, counts: Counter[str]) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done != self._total:
            return
        self._last = now
        rate = done / max(now - self._start, 1e-6)
        if self._total:
            width = 30
            filled = int(width * done / self._total)
            bar = "#" * filled + "-" * (width - filled)
            head = f"[{bar}] {done}/{self._total}"
        else:
            head = f"{done} messages"
        detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        self._stream.write(f"\r{head} {rate:,.0f}/s {detail}\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        if self._enabled:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def _chunks(items: Iterable[LocalItem], size: int) -> Iterator[list[LocalItem]]:
    """Consecutive emails in groups of up to `size` (one unit of work each); payloads alone."""
    batch: list[LocalItem] = []
    for item in items:
        if item.kind != "email":
            if batch:
                yield batch
                batch = []
            yield [item]
            continue
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _process(
    pipeline: Pipeline, item: LocalItem, context: MailboxContext, options: dict[str, Any] | None = None
) -> Outcome:
    if item.kind == "email":
        return pipeline.process_email(item.data, provenance=item.provenance, context=context)
    from ticketmail.parsing import parse_json, parse_xml

    try:
        parse = parse_json if item.kind == "json" else parse_xml
        request = parse(item.data, **(options or {}))
    except BackendError:
        raise
    except TicketmailError as exc:
        return pipeline.quarantine(item.data, provenance=item.provenance, error=exc)
    except Exception as exc:  # a parser bug must not end the run: keep the bytes, with a stable code
        return pipeline.quarantine(item.data, provenance=item.provenance, error=unexpected_error(exc, "parsing"))
    return pipeline.process_request(request, context=context, idempotency_key=hashlib.sha256(item.data).hexdigest())


def _line(item: LocalItem, outcome: Outcome, *, dry_run: bool = False) -> str:
    data = outcome.to_dict()
    line = {"source": item.source, "action": data.pop("action"), "ticket": data.pop("ticket")}
    line["reasons"] = data.pop("reasons")
    line["kind"] = item.kind
    if dry_run:
        line["dry_run"] = True
    line.update(data)
    return json.dumps(line, ensure_ascii=False)


def run_ingest(args: argparse.Namespace) -> int:
    """Ingest every item under `args.paths`; return the exit code."""
    out, err = sys.stdout, sys.stderr
    try:
        config, target = _target(args)
        context = context_for(config, args.mailbox, args.address)
        backend: Any = _open_backend(target, create=True)
        if args.dry_run:  # every unit of work runs on the real database and is rolled back
            from ticketmail.dryrun import DryRunBackend

            backend = DryRunBackend(backend)
    except TicketmailError as exc:
        _error(err, exc)
        return EXIT_BACKEND if isinstance(exc, BackendError) else EXIT_USAGE
    try:
        pipeline: Pipeline = build_pipeline(config, backend, args, context=context)
    except TicketmailError as exc:
        backend.close()
        _error(err, exc)
        return EXIT_USAGE
    show_progress = not args.no_progress and err.isatty()
    items: Iterable[LocalItem] = iter_local(args.paths, mailbox=args.mailbox)
    total: int | None = None
    counts: Counter[str] = Counter()
    started = time.monotonic()
    code = EXIT_OK
    try:
        if show_progress:  # a bar needs the total: count the inputs first (cheap: no contents read)
            total = count_local(args.paths)
        progress = _Progress(err, total, show_progress)
        done = 0
        for chunk in _chunks(items, args.batch):
            if chunk[0].kind == "email":
                outcomes = pipeline.process_batch([(i.data, i.provenance) for i in chunk], context=context)
            else:
                outcomes = [_process(pipeline, chunk[0], context, parse_options(config))]
            for item, outcome in zip(chunk, outcomes, strict=True):
                done += 1
                counts[outcome.action] += 1
                out.write(_line(item, outcome, dry_run=args.dry_run) + "\n")
            out.flush()
            progress.update(done, counts)
        progress.close()
    except BrokenPipeError:  # stop reading inputs; everything printed so far was committed
        _quiet_broken_pipe()
    except SourceError as exc:
        _error(err, exc)
        code = EXIT_USAGE
    except BackendError as exc:
        _error(err, exc)
        code = EXIT_BACKEND
    finally:
        out.flush()
        backend.close()
    elapsed = time.monotonic() - started
    processed = sum(counts.values())
    summary = ", ".join(f"{counts[k]} {k}" for k in sorted(counts)) or "nothing"
    rate = f" ({processed / elapsed:,.0f}/s)" if elapsed > 0 and processed else ""
    shown = target
    if "://" in target:
        from ticketmail.config import mask_url

        shown = mask_url(target)
    if args.dry_run:
        print(f"dry run: {processed} item(s) would go into {shown}: {summary}; nothing was stored", file=err)
    else:
        print(f"ingested {processed} item(s) into {shown} in {elapsed:.2f}s{rate}: {summary}", file=err)
    if code == EXIT_OK and counts["failed"]:
        code = EXIT_FAILED
    return code


# -- tickets / show --------------------------------------------------------------------------------------


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


def _table(rows: list[list[str]], stream: IO[str]) -> None:
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        stream.write("  ".join(cells).rstrip() + "\n")


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def run_tickets(args: argparse.Namespace) -> int:
    """List tickets; return the exit code."""
    try:
        _, target = _target(args)
        backend = _open_backend(target, create=False)
    except TicketmailError as exc:
        _error(sys.stderr, exc)
        return EXIT_USAGE
    query = TicketQuery(
        mailbox=args.mailbox,
        department=args.department,
        requester=args.requester,
        status=args.status,
        since=args.since,
        limit=args.limit,
        newest_first=not args.oldest_first,
    )
    try:
        tickets = select_tickets(backend, query)
    except BackendError as exc:
        _error(sys.stderr, exc)
        return EXIT_BACKEND
    finally:
        backend.close()
    try:
        _print_tickets(tickets, as_json=args.json, out=sys.stdout)
    except BrokenPipeError:
        _quiet_broken_pipe()
    return EXIT_OK


def _print_tickets(tickets: list[Ticket], *, as_json: bool, out: IO[str]) -> None:
    if as_json:
        for ticket in tickets:
            out.write(json.dumps(ticket_summary(ticket), ensure_ascii=False) + "\n")
        out.flush()
        return
    rows = [["NUMBER", "STATUS", "ENTRIES", "UPDATED", "REQUESTER", "SUBJECT"]]
    rows.extend(
        [
            t.number,
            t.status if t.merged_into is None else f"merged>{t.merged_into}",
            str(t.entry_count),
            t.updated.strftime("%Y-%m-%d %H:%M"),
            t.requester.email,
            _short(t.subject, 60),
        ]
        for t in tickets
    )
    _table(rows, out)
    out.write(f"{len(tickets)} ticket(s)\n")
    out.flush()


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
    try:
        _, target = _target(args)
        backend = _open_backend(target, create=False)
    except TicketmailError as exc:
        _error(sys.stderr, exc)
        return EXIT_USAGE
    try:
        ticket = backend.get_ticket(args.number)
        entries = list(backend.entries(args.number)) if ticket is not None else []
    except BackendError as exc:
        _error(sys.stderr, exc)
        return EXIT_BACKEND
    finally:
        backend.close()
    if ticket is None:
        print(f"ticketmail: error: no ticket {args.number} in {target} [not_found]", file=sys.stderr)
        return EXIT_FAILED
    out = sys.stdout
    try:
        if args.json:
            data = ticket_summary(ticket)
            data["entry_count"] = data["entries"]
            data["entries"] = [_entry_json(e, position) for position, e in enumerate(entries, 1)]
            out.write(json.dumps(data, ensure_ascii=False) + "\n")
        else:
            for line in _text_lines(ticket, entries):
                out.write(line + "\n")
        out.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    return EXIT_OK
