"""`ticketmail fetch`, `check`, `status` and `pipe`: mailboxes from the command line.

Every command reads the same `--config` file (`docs/configuration.md`): storage, mailboxes, rules,
threading, forms, attachment policy and limits; flags (`--db`, `--rules`, the threading flags) override it.

* `fetch --config FILE [--once | --watch]` polls the configured mailboxes into the database named by
  `[storage]` and prints one JSON line per message on stdout (like `ingest`). `--once` (the
  default) suits cron; `--watch` serves every mailbox until SIGTERM/SIGINT (IDLE where `idle = true`).
  `--batch-size N` overrides every mailbox's `batch_size` (messages committed per transaction).
* `check --config FILE [--json]` validates each mailbox's settings (credentials first), then tests its
  connection and names the failing stage; a disabled mailbox is checked and marked as disabled.
* `status --config FILE [--json]` prints the health table written by fetch runs (another process).
* `pipe [--db PATH] [--config FILE] [--mailbox NAME]` reads ONE message from stdin for MTA delivery and
  exits with a sysexits status (see `ticketmail.sources.pipe`); never a traceback, one line on stderr.
  With `--config`, `--mailbox` must name a `[[mailboxes]]` entry (`protocol = "pipe"` for one that
  is only delivered to): an unknown name exits 75 (EX_TEMPFAIL), like every configuration problem, so the
  MTA keeps the message queued and retries while the operator fixes the alias; 64 (EX_USAGE) would make
  it bounce the message to its sender, and the request would be lost to the desk.

State (locks, `health.json`, retry counters) lives in `[storage] state_dir` or, by default, in
`<database>.state/` next to the database (`ticketmail.sources.poller.default_state_dir()`).

Exit codes of fetch: 0 every mailbox polled (or skipped because another fetch holds it) and every message
committed; 1 some message failed (left in place, retried later) or some mailbox failed (see stderr and
`status`); 2 bad usage or configuration (also when only some `[[mailboxes]]` tables are invalid: the
valid ones were still fetched); 3 the database failed. `check`: 0 all ok, 1 some mailbox failed (an
invalid table fails at the `config` stage). `status`: 0 all ok (or never polled), 1 some mailbox is
failing or unreachable, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from ticketmail.cli._args import positive_int
from ticketmail.cli._config import (
    DEFAULT_DB,
    add_config_argument,
    add_threading_arguments,
    build_pipeline,
    context_for,
    load_config,
    report_mailbox_errors,
    state_dir,
    storage_target,
)
from ticketmail.config import Config
from ticketmail.errors import BackendError, ConfigError, PayloadTooLargeError, TicketmailError
from ticketmail.model import MailboxContext
from ticketmail.pipeline import Outcome, Pipeline
from ticketmail.sources.base import RawItem
from ticketmail.sources.config import DELIVERED_PROTOCOLS, MailboxConfig, SourcesConfig
from ticketmail.sources.health import HealthEvent, MailboxHealth, read_health
from ticketmail.sources.pipe import DEFAULT_MAX_SIZE, EX_DATAERR, EX_TEMPFAIL, deliver, read_message
from ticketmail.sources.poller import Backoff, MailboxRun, Poller

__all__ = ["register"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BACKEND = 0, 1, 2, 3


def register(subparsers: Any) -> None:
    """Add the `fetch`, `check`, `status` and `pipe` sub-commands."""
    fetch = subparsers.add_parser(
        "fetch",
        help="fetch mail from the configured mailboxes into the ticket database",
        description="Poll IMAP/POP3/Maildir/mbox mailboxes; one JSON line per message on stdout.",
    )
    _config_argument(fetch)
    mode = fetch.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="visit each mailbox once and exit (default; for cron)")
    mode.add_argument("--watch", action="store_true", help="keep serving the mailboxes until SIGTERM/SIGINT")
    mode.add_argument(
        "--dry-run",
        action="store_true",
        help="read, parse, decide and thread as for real and print what would happen; change nothing "
        "(no ticket, ledger row or audit record; nothing acknowledged, moved or flagged; IMAP read-only)",
    )
    fetch.add_argument("--mailbox", action="append", default=[], metavar="NAME", help="only this mailbox (repeatable)")
    fetch.add_argument("--rules", metavar="FILE", help="a rules TOML file (replaces [rules])")
    fetch.add_argument("--db", metavar="FILE|URL", help="the ticket database (overrides [storage])")
    fetch.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time limit per mailbox visit (default: [poller] time_budget, else 120)",
    )
    fetch.add_argument(
        "--batch-size",
        type=positive_int("a batch size"),
        default=None,
        metavar="N",
        help="messages committed together per transaction, for every mailbox (default: each mailbox's "
        "batch_size, else 50; 1 commits each message on its own)",
    )
    add_threading_arguments(fetch)
    _common(fetch)
    fetch.set_defaults(func=run_fetch)

    check = subparsers.add_parser(
        "check", help="test each mailbox's connection", description="Connect, authenticate and open each mailbox."
    )
    _config_argument(check)
    check.add_argument("--mailbox", action="append", default=[], metavar="NAME", help="only this mailbox (repeatable)")
    check.add_argument("--json", action="store_true", help="one JSON object per mailbox per line")
    _common(check)
    check.set_defaults(func=run_check)

    status = subparsers.add_parser(
        "status", help="show mailbox health", description="Health of each mailbox as recorded by fetch runs."
    )
    _config_argument(status)
    status.add_argument("--db", metavar="FILE|URL", help="the ticket database (overrides [storage])")
    status.add_argument("--json", action="store_true", help="one JSON object per mailbox per line")
    _common(status)
    status.set_defaults(func=run_status)

    pipe = subparsers.add_parser(
        "pipe",
        help="deliver ONE message from stdin (MTA pipe/alias); exits with sysexits codes",
        description="Read one message on stdin and store it. Exit 0 stored/ignored/refused (refused mail is kept "
        "in the quarantine, never bounced), 65 unusable, 75 temporary failure (the MTA retries; also for any "
        "configuration problem, including a --mailbox the --config file does not define).",
    )
    pipe.add_argument(
        "--db", metavar="FILE|URL", help="the ticket database (overrides [storage]; default: tickets.sqlite3)"
    )
    add_config_argument(pipe)
    pipe.add_argument(
        "--mailbox",
        default=None,
        metavar="NAME",
        help="the mailbox name recorded (default: pipe); with --config it must be a [[mailboxes]] entry, "
        "whose department, category, priority and addresses apply",
    )
    pipe.add_argument("--rules", metavar="FILE", help="a rules TOML file (replaces [rules])")
    add_threading_arguments(pipe)
    pipe.add_argument(
        "--max-size", type=int, default=DEFAULT_MAX_SIZE, metavar="BYTES", help="refuse larger messages (65)"
    )
    pipe.add_argument("-v", "--verbose", action="store_true", help="log details (with tracebacks) on stderr")
    pipe.set_defaults(func=run_pipe)


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="the ticketmail TOML file")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", metavar="DIR", help="locks and health state (default: <database>.state)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (with tracebacks) on stderr")


class _OneLine(logging.Formatter):
    """`ticketmail: warning: message`; tracebacks only with `--verbose`."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        line = f"ticketmail: {record.levelname.lower()}: {record.getMessage()}"
        if self.verbose and record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


@contextlib.contextmanager
def _cli_logging(verbose: bool, *, quiet: bool = False, poller_level: int | None = None) -> Iterator[None]:
    """Route `ticketmail` logs to stderr as one-liners for the command's duration, then restore."""
    logger = logging.getLogger("ticketmail")
    poller = logging.getLogger("ticketmail.sources.poller")
    saved = (logger.level, logger.propagate, poller.level)
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if not quiet or verbose else logging.NullHandler()
    handler.setFormatter(_OneLine(verbose))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logger.propagate = False
    if poller_level is not None and not verbose:
        poller.setLevel(poller_level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        poller.setLevel(saved[2])


def _error(stream: IO[str], exc: TicketmailError) -> None:
    print(f"ticketmail: error: {exc.message} [{exc.code}]", file=stream)


def _leases(pipeline: Pipeline, names: list[str], config: Config, *, watch: bool) -> Any:
    """Database leases when the backend has them (PostgreSQL: workers on several machines), else `None`."""
    make = getattr(pipeline.backend, "lease_manager", None)
    if not callable(make):
        return None  # SQLite: the local flock under the state directory
    return make(names, ttl=config.storage.lease_ttl, fair_share=watch)


def _close(pipeline: Pipeline) -> None:
    close = getattr(pipeline.backend, "close", None)
    if callable(close):
        with contextlib.suppress(TicketmailError):
            close()


def _open(
    config: Config,
    args: argparse.Namespace,
    *,
    context: MailboxContext | None = None,
    default: str | None = None,
    hooks: Any = None,
) -> Pipeline:
    from ticketmail.cli.ingest import _open_backend

    backend: Any = _open_backend(storage_target(config, args, default=default), create=True)
    if getattr(args, "dry_run", False):
        from ticketmail.dryrun import DryRunBackend

        backend = DryRunBackend(backend)
    try:
        pipeline: Pipeline = build_pipeline(config, backend, args, context=context, hooks=hooks)
    except BaseException:
        backend.close()
        raise
    return pipeline


def _alerter(config: Config) -> Any:
    """An `Alerter` for the file's `[alerts]` table, or `None` without one."""
    if config.alerts is None:
        return None
    from ticketmail.alerts import Alerter

    return Alerter(config.alerts)


def _select(config: Config, names: Sequence[str]) -> list[MailboxConfig]:
    """The mailboxes named (all polled ones by default).

    A name with a configuration error is left out here and reported by `report_mailbox_errors`.
    """
    if not names:
        return [m for m in config.mailboxes if m.protocol not in DELIVERED_PROTOCOLS]
    broken = {(e.field or "").removeprefix("mailbox:") for e in config.mailbox_errors}
    return [config.mailbox(name) for name in names if name not in broken]


# -- fetch -----------------------------------------------------------------------------------------------


def _line(name: str, item: RawItem, outcome: Outcome, *, dry_run: bool = False) -> str:
    data = outcome.to_dict()
    p = item.provenance
    line: dict[str, Any] = {
        "source": f"{p.kind}:{p.mailbox}/{p.key}",
        "action": data.pop("action"),
        "ticket": data.pop("ticket"),
        "reasons": data.pop("reasons"),
        "mailbox": name,
    }
    if dry_run:
        line["dry_run"] = True
    if item.truncated:
        line["truncated"] = True
        line["note"] = item.note
    line.update(data)
    return json.dumps(line, ensure_ascii=False)


def _report_event(err: IO[str]) -> Callable[[HealthEvent], None]:
    """A health listener printing reachability changes on stderr (what a worker's log should show)."""

    def report(event: HealthEvent) -> None:
        if event.kind == "recovered":
            print(f"ticketmail: {event.mailbox}: recovered", file=err, flush=True)
        elif event.health.last_error is not None:
            error = event.health.last_error
            print(f"ticketmail: {event.mailbox}: unreachable ({error.stage}): {error.message}", file=err, flush=True)

    return report


def _summary(run: MailboxRun) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in run.actions) or "nothing new"
    extra = ""
    if run.stopped in ("cap", "budget"):
        extra += f"; stopped at the {run.stopped}, more waiting"
    elif run.stopped == "stop":
        extra += "; interrupted by a signal, the rest waits for the next run"
    if run.waiting:
        extra += f"; {run.waiting} waiting"
    if run.oversized:
        extra += f"; {run.oversized} oversized left on the server"
    if run.status == "error" and run.error is not None:
        stage = getattr(run.error, "stage", "backend")
        return f"{run.name}: FAILED at {stage}: {run.error.message} ({counts} before that)"
    if run.status == "busy":
        return f"{run.name}: skipped, another fetch is running"
    if run.status == "disabled":
        return f"{run.name}: disabled"
    return f"{run.name}: {counts}{extra}"


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch once or watch; return the exit code."""
    # --once prints a summary per mailbox at the end; the poller's warnings would only repeat it.
    with _cli_logging(args.verbose, poller_level=None if args.watch else logging.ERROR):
        return _fetch(args)


def _fetch(args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    alerter: Any = None
    try:
        config = load_config(args.config)
        # A mailbox whose table is invalid is reported; the others still run and the exit status says so.
        broken = report_mailbox_errors(config, err, args.mailbox)
        mailboxes = []
        piped = 0
        for mailbox in _select(config, args.mailbox):
            if mailbox.protocol in DELIVERED_PROTOCOLS:  # named with --mailbox: say why nothing happens
                print(
                    f"ticketmail: {mailbox.name}: delivered by the mail server (protocol {mailbox.protocol}), "
                    "nothing to fetch",
                    file=err,
                )
                piped += 1
            else:
                mailboxes.append(mailbox)
        if not mailboxes:
            if not broken and not piped:
                print(f"ticketmail: error: {args.config} defines no [[mailboxes]] to fetch", file=err)
            return EXIT_USAGE
        db = storage_target(config, args, default=None)
        alerter = None if args.dry_run else _alerter(config)  # a dry run alerts nobody
        pipeline = _open(config, args, hooks=alerter.hooks() if alerter is not None else None)
    except TicketmailError as exc:
        if alerter is not None:
            alerter.close()
        _error(err, exc)
        return EXIT_BACKEND if isinstance(exc, BackendError) else EXIT_USAGE
    write_lock = threading.Lock()
    leases: Any = None

    def on_outcome(name: str, item: RawItem, outcome: Outcome) -> None:
        with write_lock:
            out.write(_line(name, item, outcome, dry_run=args.dry_run) + "\n")
            out.flush()

    try:
        from ticketmail.sources.poller import target_for

        state: Any = state_dir(config, args, db)
        settings = config.poller
        budget = args.time_budget if args.time_budget is not None else settings["time_budget"]
        targets = [
            target_for(m, skip=pipeline.is_processed, state_dir=state, time_budget=budget, batch_size=args.batch_size)
            for m in mailboxes
        ]
        if args.dry_run:  # never with --watch (argparse: one mode)
            from ticketmail.dryrun import dry_run_source

            # The mailboxes opened so that nothing changes there; health and locks kept in this process only.
            targets = [attrs.evolve(t, source=dry_run_source(m)) for t, m in zip(targets, mailboxes, strict=True)]
            state = None
        backoff = Backoff(base=settings["backoff_base"], cap=settings["backoff_cap"], jitter=settings["backoff_jitter"])
        events = [_report_event(err)]
        if alerter is not None:  # [alerts]: down / recovered / quarantined, delivered in the background
            events.append(alerter.health_listener())
        leases = None if args.dry_run else _leases(pipeline, [t.name for t in targets], config, watch=args.watch)
        poller = Poller(
            targets,
            pipeline,
            state=state,
            on_outcome=on_outcome,
            backoff=backoff,
            events=events,
            lock_factory=None if leases is None else leases.lock,
        )
        if args.watch:
            print(f"ticketmail: watching {len(targets)} mailbox(es); SIGTERM or Ctrl-C stops", file=err)
            poller.run(handle_signals=True, idle_slice=settings["idle_slice"])
            return EXIT_USAGE if broken else EXIT_OK
        restore = poller.install_signal_handlers()  # SIGTERM: finish the message in hand, then stop
        try:
            report = poller.poll_once(concurrency=max(1, int(settings["concurrency"])))
        finally:
            restore()
    except TicketmailError as exc:
        _error(err, exc)
        return EXIT_BACKEND if isinstance(exc, BackendError) else EXIT_USAGE
    finally:
        out.flush()
        if leases is not None:
            leases.close()
        _close(pipeline)
        if alerter is not None:
            alerter.close()
    for run in report.runs:
        print(f"ticketmail: {_summary(run)}", file=err)
    if args.dry_run:
        print("ticketmail: dry run: nothing was stored, acknowledged, moved or flagged", file=err)
    if any(isinstance(run.error, BackendError) for run in report.runs):
        return EXIT_BACKEND
    if broken:
        return EXIT_USAGE
    if not report.ok or any(run.failed for run in report.runs):
        return EXIT_FAILED
    return EXIT_OK


# -- check -----------------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    """Test each mailbox's connection; return the exit code."""
    with _cli_logging(args.verbose):
        return _check(args)


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        mailboxes = _select(config, args.mailbox)
    except TicketmailError as exc:
        _error(sys.stderr, exc)
        return EXIT_USAGE
    from ticketmail.sources.check import check

    code = EXIT_OK
    out = sys.stdout
    # An invalid mailbox table is a failed check at the config stage; the other mailboxes are still checked.
    for error in config.mailbox_errors:
        name = (error.field or "").removeprefix("mailbox:")
        if args.mailbox and name not in args.mailbox:
            continue
        code = EXIT_FAILED
        if args.json:
            row = {"mailbox": name, "ok": False, "stage": "config", "message": error.message, "enabled": None}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            out.write(f"{name}: FAILED at config: {error.message}\n")
    for mailbox in mailboxes:
        try:
            result = check(mailbox, state_dir=_check_state_dir(args, config))
            data: dict[str, Any] = dict(result.to_dict())
        except TicketmailError as exc:  # check() should report, not raise; be safe anyway
            data = {"mailbox": mailbox.name, "ok": False, "stage": getattr(exc, "stage", None), "message": exc.message}
        data.setdefault("mailbox", mailbox.name)
        data.setdefault("enabled", mailbox.enabled)
        # fetch never polls a disabled mailbox: its failure counts only when it was asked for by name.
        if not data.get("ok") and (mailbox.enabled or mailbox.name in args.mailbox):
            code = EXIT_FAILED
        disabled = "" if mailbox.enabled else " [disabled: fetch skips this mailbox]"
        if args.json:
            out.write(json.dumps(data, ensure_ascii=False) + "\n")
        elif data.get("ok"):
            caps = data.get("capabilities") or []
            extra = f" (capabilities: {' '.join(caps)})" if caps else ""
            out.write(f"{mailbox.name}: ok{extra}{disabled}\n")
        else:
            out.write(f"{mailbox.name}: FAILED at {data.get('stage')}: {data.get('message')}{disabled}\n")
    return code


def _check_state_dir(args: argparse.Namespace, config: Config | SourcesConfig) -> Path | None:
    """Where `fetch` keeps its state (the OAuth2 token files live there), if the config says."""
    try:
        if isinstance(config, SourcesConfig):  # a caller holding the older mailbox-only view of the file
            config = load_config(config.path)
        return state_dir(config, args, storage_target(config, args, default=None))
    except ConfigError:
        return Path(args.state_dir) if getattr(args, "state_dir", None) else None


# -- status ----------------------------------------------------------------------------------------------


def _ago(health: MailboxHealth) -> str:
    return health.last_success.strftime("%Y-%m-%d %H:%M:%S%z") if health.last_success else "never"


def run_status(args: argparse.Namespace) -> int:
    """Print the health table; return the exit code."""
    with _cli_logging(args.verbose):
        return _status(args)


def _status(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        db = storage_target(config, args, default=None)
        records = read_health(state_dir(config, args, db) / "health.json")
    except TicketmailError as exc:
        _error(sys.stderr, exc)
        return EXIT_USAGE
    broken = report_mailbox_errors(config, sys.stderr)
    polled = [m for m in config.mailboxes if m.protocol not in DELIVERED_PROTOCOLS]  # never polled
    rows: list[MailboxHealth] = [records.get(m.name) or MailboxHealth(name=m.name) for m in polled]
    rows += [h for name, h in sorted(records.items()) if name not in {m.name for m in polled}]
    out = sys.stdout
    if args.json:
        for health in rows:
            out.write(json.dumps(health.to_dict(), ensure_ascii=False) + "\n")
    else:
        table = [["MAILBOX", "STATE", "LAST SUCCESS", "WAITING", "FAILURES", "LAST ERROR"]]
        for h in rows:
            error = f"{h.last_error.stage}: {h.last_error.message}" if h.last_error else ""
            waiting = "?" if h.waiting is None else str(h.waiting)
            if h.last_oversized:
                waiting += f" (+{h.last_oversized} oversize)"
            table.append([h.name, h.state, _ago(h), waiting, str(h.consecutive_failures), error])
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    if broken:
        return EXIT_USAGE
    return EXIT_FAILED if any(h.state in ("failing", "unreachable") for h in rows) else EXIT_OK


# -- pipe ------------------------------------------------------------------------------------------------


def run_pipe(args: argparse.Namespace) -> int:
    """Deliver one message from stdin; return a sysexits status. Never raises, never prints a traceback."""
    err = sys.stderr
    try:
        with _cli_logging(args.verbose, quiet=True):
            return _pipe(args, err)
    except BaseException as exc:  # the MTA must get 75 (retry later), never a traceback
        print(f"ticketmail: temporary failure: unexpected {type(exc).__name__}; the MTA should retry", file=err)
        return EX_TEMPFAIL


def _pipe(args: argparse.Namespace, err: IO[str]) -> int:
    name = args.mailbox or "pipe"
    try:
        config = load_config(args.config)
        if args.config and args.mailbox is not None:
            # A name the file does not define is a typo in the MTA's alias or a missing [[mailboxes]] entry:
            # refuse it (EX_TEMPFAIL, so the MTA keeps the mail) rather than drop the mailbox's defaults.
            config.mailbox(args.mailbox)
        context = context_for(config, name)
        # Without a configuration file the database defaults to ./tickets.sqlite3, as for ingest.
        pipeline = _open(config, args, context=context, default=None if args.config else DEFAULT_DB)
    except TicketmailError as exc:
        # Configuration or database problems are the operator's to fix: defer, the MTA keeps the mail.
        print(f"ticketmail: temporary failure: {exc.message} [{exc.code}]", file=err)
        return EX_TEMPFAIL
    try:
        try:
            raw = read_message(sys.stdin.buffer, args.max_size)
        except OSError as exc:
            print(f"ticketmail: temporary failure: cannot read standard input: {exc.strerror}", file=err)
            return EX_TEMPFAIL
        except PayloadTooLargeError as exc:
            print(f"ticketmail: data error: {exc.message}", file=err)
            return EX_DATAERR
        result = deliver(raw, pipeline, mailbox=name, context=context)
    finally:
        _close(pipeline)
    label = {0: "ok", 65: "data error", 77: "refused", 75: "temporary failure"}.get(result.code, "error")
    print(f"ticketmail: {label}: {result.message}", file=err)
    return result.code
