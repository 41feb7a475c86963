"""`ticketmail quarantine`: the messages that could not be processed, kept with their raw bytes.

`list` and `show` read them, `export` writes the raw `.eml`, `retry` runs them through the current rules and
threading again (a message that now succeeds leaves the quarantine in the same transaction as its effect, so
it is processed exactly once), and `discard` deletes them for good with an audit record saying so.
"""

from __future__ import annotations

import argparse
import email.header
import json
import sys
from pathlib import Path
from typing import IO, Any

from ticketmail.backends.base import Backend, QuarantineRecord
from ticketmail.cli._config import add_config_argument, build_pipeline
from ticketmail.cli.ingest import (
    EXIT_BACKEND,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    _db_argument,
    _error,
    _open_backend,
    _target,
)
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
    _db_argument(listing)
    add_config_argument(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=run_list)

    show = actions.add_parser("show", help="one quarantined message: reason, attempts, headers")
    show.add_argument("ids", nargs=1, type=int, metavar="ID")
    _db_argument(show)
    add_config_argument(show)
    show.add_argument("--json", action="store_true", help="as one JSON object")
    show.set_defaults(func=run_show)

    export = actions.add_parser("export", help="write the raw message as .eml")
    export.add_argument("ids", nargs="+", type=int, metavar="ID")
    _db_argument(export)
    add_config_argument(export)
    export.add_argument(
        "-o", "--output", metavar="PATH", help="a file (one ID), a directory (several), or - for standard output"
    )
    export.set_defaults(func=run_export)

    retry = actions.add_parser("retry", help="process quarantined messages again with the current rules")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID")
    retry.add_argument("--all", action="store_true", help="retry every quarantined message")
    _db_argument(retry)
    add_config_argument(retry)
    retry.add_argument("--rules", metavar="FILE", help="a rules TOML file (replaces [rules])")
    retry.add_argument("--json", action="store_true", help="one JSON object per message")
    retry.set_defaults(func=run_retry)

    discard = actions.add_parser("discard", help="delete quarantined messages for good (audited)")
    discard.add_argument("ids", nargs="+", type=int, metavar="ID")
    _db_argument(discard)
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


def _open(args: argparse.Namespace, err: IO[str]) -> Backend | None:
    try:
        return _open_backend(_target(args)[1], create=False)
    except TicketmailError as exc:
        _error(err, exc)
        return None


def run_list(args: argparse.Namespace) -> int:
    """`ticketmail quarantine list`."""
    out, err = sys.stdout, sys.stderr
    backend = _open(args, err)
    if backend is None:
        return EXIT_USAGE
    try:
        records = backend.quarantined()
        for record in records:
            data = quarantine_json(record)
            if args.json:
                print(json.dumps(data, ensure_ascii=False), file=out)
                continue
            print(
                f"{record.id!s:>6}  {record.at:%Y-%m-%d %H:%M:%S}  {(data['mailbox'] or '-')[:12]:<12}  "
                f"{record.reason_code[:24]:<24}  x{record.attempts:<3} {len(record.raw):>9} B  "
                f"{(data['from'] or '-')[:30]:<30}  {data['subject'] or '-'}",
                file=out,
            )
        if not args.json:
            print(f"{len(records)} quarantined message(s)", file=err)
    except BackendError as exc:
        _error(err, exc)
        return EXIT_BACKEND
    finally:
        backend.close()
    return EXIT_OK


def _lookup(args: argparse.Namespace, err: IO[str]) -> tuple[list[QuarantineRecord], int | None]:
    """The records named by `args.ids`, or an exit code after saying what went wrong."""
    backend = _open(args, err)
    if backend is None:
        return [], EXIT_USAGE
    try:
        found, missing = _find(backend, args.ids)
    except BackendError as exc:
        _error(err, exc)
        return [], EXIT_BACKEND
    finally:
        backend.close()
    if missing:
        print(f"ticketmail: error: no quarantined message {missing[0]} in {args.db}", file=err)
        return [], EXIT_FAILED
    return found, None


def run_show(args: argparse.Namespace) -> int:
    """`ticketmail quarantine show ID`."""
    out = sys.stdout
    found, failed = _lookup(args, sys.stderr)
    if failed is not None:
        return failed
    record = found[0]
    data = quarantine_json(record)
    if args.json:
        print(json.dumps(data, ensure_ascii=False), file=out)
        return EXIT_OK
    from ticketmail.audit import describe_provenance

    print(f"quarantined message {record.id}", file=out)
    print(f"  since:      {record.at.isoformat()} ({record.attempts} attempt(s))", file=out)
    print(f"  from:       {describe_provenance(record.provenance)}", file=out)
    print(f"  reason:     {record.reason} [{record.reason_code}]", file=out)
    print(f"  size:       {len(record.raw)} bytes", file=out)
    for name in ("from", "to", "subject", "date", "message-id"):
        value = _headers(record.raw).get(name)
        if value:
            print(f"  {name + ':':<11} {value}", file=out)
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    """`ticketmail quarantine export ID... [-o PATH]`."""
    err = sys.stderr
    found, failed = _lookup(args, err)
    if failed is not None:
        return failed
    if args.output == "-":
        if len(found) != 1:
            print("ticketmail: error: only one message can go to standard output", file=err)
            return EXIT_USAGE
        sys.stdout.buffer.write(found[0].raw)
        sys.stdout.flush()
        return EXIT_OK
    target = Path(args.output) if args.output else Path.cwd()
    if len(found) > 1 or target.is_dir() or not args.output:
        target.mkdir(parents=True, exist_ok=True)
        paths = [target / f"quarantine-{record.id}.eml" for record in found]
    else:
        paths = [target]
    for record, path in zip(found, paths, strict=True):
        path.write_bytes(record.raw)
        print(f"wrote {path} ({len(record.raw)} bytes)", file=err)
    return EXIT_OK


def run_retry(args: argparse.Namespace) -> int:
    """`ticketmail quarantine retry ID...|--all`: exactly once; exit 1 when any fails again."""
    out, err = sys.stdout, sys.stderr
    if not args.ids and not args.all:
        print("ticketmail: error: name the messages to retry (IDs) or give --all", file=err)
        return EXIT_USAGE
    try:
        config, target = _target(args)
        contexts = {mailbox.name: mailbox.context() for mailbox in config.mailboxes}
        backend = _open_backend(target, create=False)
    except TicketmailError as exc:
        _error(err, exc)
        return EXIT_USAGE
    try:
        # The current configuration: its rules, threading, attachment policy and limits decide again.
        pipeline = build_pipeline(config, backend, args)
    except TicketmailError as exc:
        backend.close()
        _error(err, exc)
        return EXIT_USAGE
    failed = 0
    try:
        records = backend.quarantined()
        if args.all:
            chosen = list(records)
        else:
            chosen, missing = _find(backend, args.ids)
            for quarantine_id in missing:
                print(f"ticketmail: error: no quarantined message {quarantine_id}", file=err)
                failed += 1
        for record in chosen:
            mailbox = record.provenance.mailbox if record.provenance else ""
            outcome = pipeline.retry_quarantined(record, context=contexts.get(mailbox))
            failed += outcome.action == "failed"
            if args.json:
                print(json.dumps({"id": record.id, **outcome.to_dict()}, ensure_ascii=False), file=out)
            else:
                why = "; ".join(r.message for r in outcome.reasons) or "-"
                print(f"{record.id!s:>6}  {outcome.action:<9}  {outcome.ticket or '-':<10}  {why}", file=out)
    except BackendError as exc:
        _error(err, exc)
        return EXIT_BACKEND
    except TicketmailError as exc:
        _error(err, exc)
        return EXIT_USAGE
    finally:
        backend.close()
    return EXIT_FAILED if failed else EXIT_OK


def run_discard(args: argparse.Namespace) -> int:
    """`ticketmail quarantine discard ID...`."""
    err = sys.stderr
    backend = _open(args, err)
    if backend is None:
        return EXIT_USAGE
    pipeline = Pipeline(backend)
    missing = 0
    try:
        for quarantine_id in args.ids:
            if pipeline.discard_quarantined(quarantine_id):
                print(f"discarded quarantined message {quarantine_id}", file=err)
            else:
                print(f"ticketmail: error: no quarantined message {quarantine_id}", file=err)
                missing += 1
    except BackendError as exc:
        _error(err, exc)
        return EXIT_BACKEND
    except TicketmailError as exc:
        _error(err, exc)
        return EXIT_USAGE
    finally:
        backend.close()
    return EXIT_FAILED if missing else EXIT_OK
