"""`ticketmail pipe`: deliver ONE message from stdin for an MTA (pipe transport or alias).

`pipe [--db PATH] [--config FILE] [--mailbox NAME]` reads one message and exits with a sysexits status (see
`ticketmail.sources.pipe`); never a traceback. By default one line on stderr says what happened (the MTA logs
it); `--json` prints one JSON object on stdout instead (fields in `docs/cli.md`), and `--quiet` prints only a
failure. With `--config`, `--mailbox` must name a `[[mailboxes]]` entry (`protocol = "pipe"` for one that is
only delivered to): an unknown name exits 75 (EX_TEMPFAIL), like every configuration problem, so the MTA keeps
the message queued and retries while the operator fixes the alias; 64 (EX_USAGE) would make it bounce the
message to its sender, and the request would be lost to the desk.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ticketmail.cli._args import ArgSpec, add_arguments
from ticketmail.cli._common import cli_logging, close_pipeline, open_pipeline
from ticketmail.cli._config import DEFAULT_DB, add_config_argument, add_threading_arguments, context_for, load_config
from ticketmail.cli._output import Output, add_output_flags
from ticketmail.errors import PayloadTooLargeError, TicketmailError
from ticketmail.pipeline import Pipeline
from ticketmail.sources.pipe import DEFAULT_MAX_SIZE, EX_DATAERR, EX_OK, EX_TEMPFAIL, PipeResult, deliver, read_message

__all__ = ["pipe_json", "register", "run_pipe"]

_LABELS = {0: "ok", 65: "data error", 77: "refused", 75: "temporary failure"}

_PIPE_ARGS: tuple[ArgSpec, ...] = (
    (("--db",), {"metavar": "FILE|URL", "help": "the ticket database (overrides [storage]; default: tickets.sqlite3)"}),
    (("--mailbox",), {"default": None, "metavar": "NAME",
                      "help": "the mailbox name recorded (default: pipe); with --config it must be a [[mailboxes]] "
                      "entry, whose department, category, priority and addresses apply"}),
    (("--rules",), {"metavar": "FILE", "help": "a rules TOML file (replaces [rules])"}),
    (("--max-size",), {"type": int, "default": DEFAULT_MAX_SIZE, "metavar": "BYTES",
                       "help": "refuse larger messages (65)"}),
    (("-v", "--verbose"), {"action": "store_true", "help": "log details (with tracebacks) on stderr"}),
)  # fmt: skip


def register(subparsers: Any) -> None:
    """Add the `pipe` sub-command."""
    pipe = subparsers.add_parser(
        "pipe",
        help="deliver ONE message from stdin (MTA pipe/alias); exits with sysexits codes",
        description="Read one message on stdin and store it. Exit 0 stored/ignored/refused (refused mail is kept "
        "in the quarantine, never bounced), 65 unusable, 75 temporary failure (the MTA retries; also for any "
        "configuration problem, including a --mailbox the --config file does not define).",
    )
    add_config_argument(pipe)
    add_arguments(pipe, _PIPE_ARGS)
    add_threading_arguments(pipe)
    add_output_flags(pipe, what="message")
    pipe.set_defaults(func=run_pipe)


def pipe_json(mailbox: str, result: PipeResult) -> dict[str, Any]:
    """One delivery as the JSON object `pipe --json` prints: the exit status, its label and the outcome."""
    outcome = result.outcome
    data: dict[str, Any] = {
        "mailbox": mailbox,
        "exit": result.code,
        "result": _LABELS.get(result.code, "error"),
        "message": result.message,
        "source": None,
        "action": None,
        "ticket": None,
        "reasons": [],
    }
    if outcome is not None:
        p = outcome.provenance
        details = outcome.to_dict()
        data["source"] = f"{p.kind}:{p.mailbox}/{p.key}" if p is not None else None
        data.update(details)
    return data


def _report(output: Output, mailbox: str, result: PipeResult) -> None:
    output.record(pipe_json(mailbox, result))
    label = _LABELS.get(result.code, "error")
    failed = result.code != EX_OK or (result.outcome is not None and result.outcome.action == "failed")
    if failed or output.human:
        output.stderr(f"ticketmail: {label}: {result.message}")


def run_pipe(args: argparse.Namespace) -> int:
    """Deliver one message from stdin; return a sysexits status. Never raises, never prints a traceback."""
    output = Output(args)
    try:
        with cli_logging(args.verbose, quiet=True):
            return _pipe(args, output)
    except BaseException as exc:  # the MTA must get 75 (retry later), never a traceback
        print(f"ticketmail: temporary failure: unexpected {type(exc).__name__}; the MTA should retry", file=output.err)
        return EX_TEMPFAIL


def _pipe(args: argparse.Namespace, output: Output) -> int:
    name = args.mailbox or "pipe"
    try:
        config = load_config(args.config)
        if args.config and args.mailbox is not None:
            # A name the file does not define is a typo in the MTA's alias or a missing [[mailboxes]] entry:
            # refuse it (EX_TEMPFAIL, so the MTA keeps the mail) rather than drop the mailbox's defaults.
            config.mailbox(args.mailbox)
        context = context_for(config, name)
        # Without a configuration file the database defaults to ./tickets.sqlite3, as for ingest.
        pipeline: Pipeline = open_pipeline(config, args, context=context, default=None if args.config else DEFAULT_DB)
    except TicketmailError as exc:
        # Configuration or database problems are the operator's to fix: defer, the MTA keeps the mail.
        _report(output, name, PipeResult(EX_TEMPFAIL, f"{exc.message} [{exc.code}]"))
        return EX_TEMPFAIL
    try:
        result = _read_and_deliver(args, pipeline, name, context)
    finally:
        close_pipeline(pipeline)
    _report(output, name, result)
    return result.code


def _read_and_deliver(args: argparse.Namespace, pipeline: Pipeline, name: str, context: Any) -> PipeResult:
    try:
        raw = read_message(sys.stdin.buffer, args.max_size)
    except OSError as exc:
        return PipeResult(EX_TEMPFAIL, f"cannot read standard input: {exc.strerror}")
    except PayloadTooLargeError as exc:
        return PipeResult(EX_DATAERR, exc.message)
    return deliver(raw, pipeline, mailbox=name, context=context)
