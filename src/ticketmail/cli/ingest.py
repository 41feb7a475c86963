"""`ticketmail ingest`: local mail and payload files into the ticket database, exactly once.

`ingest` reads local inputs (.eml files, Maildir folders, mbox files, JSON/XML payload files; see
`ticketmail.sources.local`) into the ticket database through the pipeline. Because every item has a stable
provenance, running the same command twice changes nothing the second time: each message is then a
`duplicate` with `already_processed` set.

Output (`ticketmail.cli._output`): one summary line at the end by default, one JSON object per message
with `--json`, nothing but errors with `--quiet`; a failed message is reported on stderr in every mode,
and a progress line is drawn on stderr while it is a terminal. `--dry-run` also prints one line per
message saying what would happen to it.

Exit codes: 0 all messages committed; 1 some messages failed (quarantined); 2 bad usage, configuration or
unreadable input; 3 the database failed (nothing after that point was acknowledged; rerun later).
`tickets` and `show` live in `ticketmail.cli._tickets`.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from ticketmail.cli._args import ArgSpec, add_arguments, positive_int
from ticketmail.cli._common import (
    EXIT_BACKEND,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    db_argument,
    open_backend,
    target,
)
from ticketmail.cli._config import (
    add_config_argument,
    add_threading_arguments,
    build_pipeline,
    context_for,
    parse_options,
)
from ticketmail.cli._output import Output, RunTally, add_output_flags, message_line, report_failure
from ticketmail.cli._tickets import ticket_summary
from ticketmail.config import Config
from ticketmail.errors import BackendError, SourceError, TicketmailError
from ticketmail.model import MailboxContext
from ticketmail.pipeline import Outcome, Pipeline, unexpected_error
from ticketmail.sources.local import LocalItem, count_local, iter_local

__all__ = ["register", "run_ingest", "ticket_summary"]

# Kept importable from here: the other command modules used to take them from this one.
_open_backend = open_backend
_target = target
_db_argument = db_argument

_INGEST_ARGS: tuple[ArgSpec, ...] = (
    (("paths",), {"nargs": "+", "metavar": "PATH", "help": "files or directories to ingest"}),
    (("--rules",), {"metavar": "FILE", "help": "a rules TOML file (replaces [rules]; default: built-in rules)"}),
    (
        ("--mailbox",),
        {
            "default": "local",
            "metavar": "NAME",
            "help": "the mailbox name recorded on tickets and in Maildir/mbox provenance (default: local); a "
            "[[mailboxes]] entry of that name lends its department, category, priority and addresses",
        },
    ),
    (
        ("--address",),
        {
            "action": "append",
            "default": [],
            "metavar": "EMAIL",
            "help": "the desk's own address at this mailbox (repeatable; mail from it is a loop)",
        },
    ),
    (
        ("--batch",),
        {
            "type": positive_int("a batch size"),
            "default": 50,
            "metavar": "N",
            "help": "commit up to N messages per transaction (default: 50; 1 commits each message on its own)",
        },
    ),
    (("--no-progress",), {"action": "store_true", "help": "never draw the progress line"}),
    (
        ("--dry-run",),
        {
            "action": "store_true",
            "help": "decide and thread every input as for real and print what would happen; store nothing",
        },
    ),
)


def register(subparsers: Any) -> None:
    """Add the `ingest` sub-command."""
    ingest = subparsers.add_parser(
        "ingest",
        help="ingest .eml files, Maildir folders, mbox files and JSON/XML payloads into a ticket database",
        description="Ingest local mail and payload files into the ticket database, exactly once; one summary "
        "line at the end (--json: one JSON object per message).",
    )
    db_argument(ingest)
    add_config_argument(ingest)
    add_arguments(ingest, _INGEST_ARGS)
    add_threading_arguments(ingest)
    add_output_flags(ingest, what="message")
    ingest.set_defaults(func=run_ingest)


@attrs.define
class _Job:
    """One ingest run, ready to go."""

    config: Config
    backend: Any
    pipeline: Pipeline
    context: MailboxContext
    dry_run: bool


def _chunks(items: Iterable[LocalItem], size: int) -> Iterator[list[LocalItem]]:
    """Consecutive emails in groups of up to `size` (one unit of work each); payloads alone."""
    batch: list[LocalItem] = []
    for item in items:
        if item.kind != "email" or item.error is not None:  # payloads and unreadable inputs go alone
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


def message_json(item: LocalItem, outcome: Outcome, *, dry_run: bool = False) -> dict[str, Any]:
    """One ingested message as the JSON object `ingest --json` prints (fields in `docs/cli.md`)."""
    data = outcome.to_dict()
    line = {"source": item.source, "action": data.pop("action"), "ticket": data.pop("ticket")}
    line["reasons"] = data.pop("reasons")
    line["kind"] = item.kind
    if dry_run:
        line["dry_run"] = True
    line.update(data)
    return line


def _prepare(args: argparse.Namespace, output: Output) -> _Job | int:
    """Open the store and build the pipeline, or say what is wrong and return the exit code."""
    try:
        config, store = target(args)
        context = context_for(config, args.mailbox, args.address)
        backend: Any = open_backend(store, create=True)
        if args.dry_run:  # every unit of work runs on the real database and is rolled back
            from ticketmail.dryrun import DryRunBackend

            backend = DryRunBackend(backend)
    except TicketmailError as exc:
        output.error(exc)
        return EXIT_BACKEND if isinstance(exc, BackendError) else EXIT_USAGE
    try:
        pipeline: Pipeline = build_pipeline(config, backend, args, context=context)
    except TicketmailError as exc:
        backend.close()
        output.error(exc)
        return EXIT_USAGE
    return _Job(config, backend, pipeline, context, bool(args.dry_run))


def _outcomes(job: _Job, chunk: list[LocalItem]) -> list[Outcome]:
    first = chunk[0]
    if first.error is not None:  # recorded as failed with the reason it could not be read; the run goes on
        return [job.pipeline.quarantine(b"", provenance=first.provenance, error=first.error)]
    if first.kind == "email":
        return job.pipeline.process_batch([(i.data, i.provenance) for i in chunk], context=job.context)
    return [_process(job.pipeline, chunk[0], job.context, parse_options(job.config))]


def _emit(output: Output, item: LocalItem, outcome: Outcome, job: _Job) -> None:
    data = message_json(item, outcome, dry_run=job.dry_run)
    output.record(data)
    report_failure(output, item.source, data)
    if job.dry_run:
        output.text(message_line(item.source, data))


def _ingest(job: _Job, args: argparse.Namespace, output: Output, tally: RunTally) -> int:
    """Process every input, printing as it goes; the exit code of the inputs (not of the outcomes)."""
    items: Iterable[LocalItem] = iter_local(args.paths, mailbox=args.mailbox)
    progress = output.progress(enabled=not args.no_progress)
    try:
        if progress.enabled:  # the line needs the total: count the inputs first (cheap: no contents read)
            progress = output.progress(count_local(args.paths), enabled=True)
        for chunk in _chunks(items, args.batch):
            for item, outcome in zip(chunk, _outcomes(job, chunk), strict=True):
                tally.add(outcome.action)
                _emit(output, item, outcome, job)
            progress.update(tally.total, tally.counts)
            if output.gone:  # `| head`: stop reading inputs; everything printed so far was committed
                break
    except SourceError as exc:
        output.error(exc)
        return EXIT_USAGE
    except BackendError as exc:
        output.error(exc)
        return EXIT_BACKEND
    finally:
        progress.close()
        job.backend.close()
    return EXIT_OK


def run_ingest(args: argparse.Namespace) -> int:
    """Ingest every item under `args.paths`; return the exit code."""
    output = Output(args)
    job = _prepare(args, output)
    if isinstance(job, int):
        return job
    tally = RunTally()
    code = _ingest(job, args, output, tally)
    output.summary(tally.line(dry_run=job.dry_run))
    if code == EXIT_OK and tally.counts["failed"]:
        return EXIT_FAILED
    return code
