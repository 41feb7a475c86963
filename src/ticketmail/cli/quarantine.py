"""`ticketmail quarantine`: the messages that could not be processed, kept with their raw bytes.

`list` and `show` read them, `export` writes the raw `.eml`, `retry` runs them through the current rules and
threading again (a message that now succeeds leaves the quarantine in the same transaction as its effect, so
it is processed exactly once), and `discard` deletes them for good with an audit record saying so.
"""

from __future__ import annotations

import argparse
import email.header
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ticketmail.backends.base import Backend, QuarantineRecord
from ticketmail.cli._common import EXIT_BACKEND, EXIT_FAILED, EXIT_OK, EXIT_USAGE, db_argument, open_backend, target
from ticketmail.cli._config import add_config_argument, build_pipeline
from ticketmail.cli._output import Output, RunTally, add_output_flags, report_failure
from ticketmail.errors import BackendError, TicketmailError
from ticketmail.pipeline import Pipeline

__all__ = ["quarantine_json", "register"]

_HEADER_SCAN = 64 * 1024


def register(subparsers: Any) -> None:
    """Add `quarantine list|show|export|retry|discard`."""
    quarantine = subparsers.add_parser(
        "quarantine",
        help="list, show, export, retry or discard the messages that could not be processed",
        description="The quarantine: messages kept with their raw bytes because processing them failed.",
    )
    actions = quarantine.add_subparsers(dest="quarantine_action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="one line per quarantined message")
    db_argument(listing)
    add_config_argument(listing)
    add_output_flags(listing, quiet=False, what="quarantined message")
    listing.set_defaults(func=run_list)

    show = actions.add_parser("show", help="one quarantined message: reason, attempts, headers")
    show.add_argument("ids", nargs=1, type=int, metavar="ID")
    db_argument(show)
    add_config_argument(show)
    add_output_flags(show, quiet=False, what="quarantined message")
    show.set_defaults(func=run_show)

    export = actions.add_parser("export", help="write the raw message as .eml")
    export.add_argument("ids", nargs="+", type=int, metavar="ID")
    db_argument(export)
    add_config_argument(export)
    export.add_argument(
        "-o", "--output", metavar="PATH", help="a file (one ID), a directory (several), or - for standard output"
    )
    export.set_defaults(func=run_export)

    retry = actions.add_parser("retry", help="process quarantined messages again with the current rules")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID")
    retry.add_argument("--all", action="store_true", help="retry every quarantined message")
    db_argument(retry)
    add_config_argument(retry)
    retry.add_argument("--rules", metavar="FILE", help="a rules TOML file (replaces [rules])")
    add_output_flags(retry, what="message")
    retry.set_defaults(func=run_retry)

    discard = actions.add_parser("discard", help="delete quarantined messages for good (audited)")
    discard.add_argument("ids", nargs="+", type=int, metavar="ID")
    db_argument(discard)
    add_config_argument(discard)
    discard.set_defaults(func=run_discard)


def _headers(raw: bytes) -> dict[str, str]:
    """From, To, Subject, Date and Message-ID of a raw message, decoded as far as possible (never raises)."""
    head = raw[:_HEADER_SCAN]
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end >= 0:
            head = head[:end]
            break
    unfolded: list[str] = []
    for line in head.decode("utf-8", "replace").splitlines():
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()
        else:
            unfolded.append(line)
    found: dict[str, str] = {}
    for line in unfolded:
        name, colon, value = line.partition(":")
        key = name.strip().lower()
        if colon and key in ("from", "to", "subject", "date", "message-id") and key not in found:
            found[key] = _decode(value.strip())
    return found


def _decode(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))[:300]
    except Exception:
        return value[:300]


def quarantine_json(record: QuarantineRecord) -> dict[str, Any]:
    """One quarantined message as the JSON object `ticketmail quarantine list --json` prints."""
    prov = record.provenance
    headers = _headers(record.raw)
    return {
        "id": record.id,
        "at": record.at.isoformat(),
        "mailbox": prov.mailbox if prov else None,
        "provenance": None if prov is None else {"mailbox": prov.mailbox, "kind": prov.kind, "key": prov.key},
        "reason_code": record.reason_code,
        "reason": record.reason,
        "attempts": record.attempts,
        "size": len(record.raw),
        "from": headers.get("from"),
        "subject": headers.get("subject"),
        "message_id": headers.get("message-id"),
    }


def _find(backend: Backend, ids: list[int]) -> tuple[list[QuarantineRecord], list[int]]:
    by_id = {record.id: record for record in backend.quarantined()}
    found = [by_id[i] for i in ids if i in by_id]
    return found, [i for i in ids if i not in by_id]


def _open(args: argparse.Namespace, output: Output) -> Backend | None:
    try:
        return open_backend(target(args)[1], create=False)
    except TicketmailError as exc:
        output.error(exc)
        return None


def _list_line(record: QuarantineRecord, data: dict[str, Any]) -> str:
    return (
        f"{record.id!s:>6}  {record.at:%Y-%m-%d %H:%M:%S}  {(data['mailbox'] or '-')[:12]:<12}  "
        f"{record.reason_code[:24]:<24}  x{record.attempts:<3} {len(record.raw):>9} B  "
        f"{(data['from'] or '-')[:30]:<30}  {data['subject'] or '-'}"
    )


def run_list(args: argparse.Namespace) -> int:
    """`ticketmail quarantine list`."""
    output = Output(args)
    backend = _open(args, output)
    if backend is None:
        return EXIT_USAGE
    try:
        records = backend.quarantined()
    except BackendError as exc:
        output.error(exc)
        return EXIT_BACKEND
    finally:
        backend.close()
    for record in records:
        data = quarantine_json(record)
        output.record(data)
        output.text(_list_line(record, data))
    output.text(f"{len(records)} quarantined message(s)")
    return EXIT_OK


def _lookup(args: argparse.Namespace, output: Output) -> tuple[list[QuarantineRecord], int | None]:
    """The records named by `args.ids`, or an exit code after saying what went wrong."""
    backend = _open(args, output)
    if backend is None:
        return [], EXIT_USAGE
    try:
        found, missing = _find(backend, args.ids)
    except BackendError as exc:
        output.error(exc)
        return [], EXIT_BACKEND
    finally:
        backend.close()
    if missing:
        output.error(f"no quarantined message {missing[0]} in {args.db}", "not_found")
        return [], EXIT_FAILED
    return found, None


def _show_lines(record: QuarantineRecord) -> Iterator[str]:
    from ticketmail.audit import describe_provenance

    yield f"quarantined message {record.id}"
    yield f"  since:      {record.at.isoformat()} ({record.attempts} attempt(s))"
    yield f"  from:       {describe_provenance(record.provenance)}"
    yield f"  reason:     {record.reason} [{record.reason_code}]"
    yield f"  size:       {len(record.raw)} bytes"
    headers = _headers(record.raw)
    for name in ("from", "to", "subject", "date", "message-id"):
        value = headers.get(name)
        if value:
            yield f"  {name + ':':<11} {value}"


def run_show(args: argparse.Namespace) -> int:
    """`ticketmail quarantine show ID`."""
    output = Output(args)
    found, failed = _lookup(args, output)
    if failed is not None:
        return failed
    output.record(quarantine_json(found[0]))
    output.lines(_show_lines(found[0]))
    return EXIT_OK


def _export_paths(args: argparse.Namespace, found: list[QuarantineRecord]) -> list[Path]:
    target_path = Path(args.output) if args.output else Path.cwd()
    if len(found) > 1 or target_path.is_dir() or not args.output:
        target_path.mkdir(parents=True, exist_ok=True)
        return [target_path / f"quarantine-{record.id}.eml" for record in found]
    return [target_path]


def run_export(args: argparse.Namespace) -> int:
    """`ticketmail quarantine export ID... [-o PATH]`."""
    output = Output(args)
    found, failed = _lookup(args, output)
    if failed is not None:
        return failed
    if args.output == "-":
        if len(found) != 1:
            output.error("only one message can go to standard output", "invalid_input")
            return EXIT_USAGE
        sys.stdout.buffer.write(found[0].raw)
        sys.stdout.flush()
        return EXIT_OK
    for record, path in zip(found, _export_paths(args, found), strict=True):
        path.write_bytes(record.raw)
        output.note(f"wrote {path} ({len(record.raw)} bytes)")
    return EXIT_OK


def _retry_pipeline(args: argparse.Namespace, output: Output) -> tuple[Pipeline, dict[str, Any]] | int:
    """The pipeline of the current configuration and the mailbox contexts, or an exit code."""
    try:
        config, store = target(args)
        contexts = {mailbox.name: mailbox.context() for mailbox in config.mailboxes}
        backend = open_backend(store, create=False)
    except TicketmailError as exc:
        output.error(exc)
        return EXIT_USAGE
    try:
        # The current configuration: its rules, threading, attachment policy and limits decide again.
        pipeline: Pipeline = build_pipeline(config, backend, args)
    except TicketmailError as exc:
        backend.close()
        output.error(exc)
        return EXIT_USAGE
    return pipeline, contexts


def _retry_all(args: argparse.Namespace, output: Output, pipeline: Pipeline, contexts: dict[str, Any]) -> int:
    """Retry the chosen records; how many were missing or failed again."""
    backend = pipeline.backend
    failed = 0
    tally = RunTally()
    if args.all:
        chosen = list(backend.quarantined())
    else:
        chosen, missing = _find(backend, args.ids)
        for quarantine_id in missing:
            output.error(f"no quarantined message {quarantine_id}", "not_found")
            failed += 1
    for record in chosen:
        mailbox = record.provenance.mailbox if record.provenance else ""
        outcome = pipeline.retry_quarantined(record, context=contexts.get(mailbox))
        tally.add(outcome.action)
        failed += outcome.action == "failed"
        data = {"id": record.id, **outcome.to_dict()}
        output.record(data)
        report_failure(output, f"quarantined message {record.id}", data)
    output.summary(tally.line(verb="retried"))
    return failed


def run_retry(args: argparse.Namespace) -> int:
    """`ticketmail quarantine retry ID...|--all`: exactly once; exit 1 when any fails again."""
    output = Output(args)
    if not args.ids and not args.all:
        output.error("name the messages to retry (IDs) or give --all", "invalid_input")
        return EXIT_USAGE
    prepared = _retry_pipeline(args, output)
    if isinstance(prepared, int):
        return prepared
    pipeline, contexts = prepared
    try:
        failed = _retry_all(args, output, pipeline, contexts)
    except BackendError as exc:
        output.error(exc)
        return EXIT_BACKEND
    except TicketmailError as exc:
        output.error(exc)
        return EXIT_USAGE
    finally:
        pipeline.backend.close()
    return EXIT_FAILED if failed else EXIT_OK


def run_discard(args: argparse.Namespace) -> int:
    """`ticketmail quarantine discard ID...`."""
    output = Output(args)
    backend = _open(args, output)
    if backend is None:
        return EXIT_USAGE
    pipeline = Pipeline(backend)
    missing = 0
    try:
        for quarantine_id in args.ids:
            if pipeline.discard_quarantined(quarantine_id):
                output.note(f"discarded quarantined message {quarantine_id}")
            else:
                output.error(f"no quarantined message {quarantine_id}", "not_found")
                missing += 1
    except BackendError as exc:
        output.error(exc)
        return EXIT_BACKEND
    except TicketmailError as exc:
        output.error(exc)
        return EXIT_USAGE
    finally:
        backend.close()
    return EXIT_FAILED if missing else EXIT_OK
