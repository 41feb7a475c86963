"""`ticketmail fetch`, `check`, `status` and `pipe`: mailboxes from the command line.

Every command reads the same `--config` file (`docs/configuration.md`): storage, mailboxes, rules,
threading, forms, attachment policy and limits; flags (`--db`, `--rules`, the threading flags) override it.

* `fetch --config FILE [--once | --watch]` polls the configured mailboxes into the database named by
  `[storage]`. `--once` (the default) suits cron; `--watch` serves every mailbox until SIGTERM/SIGINT (IDLE
  where `idle = true`). `--batch-size N` overrides every mailbox's `batch_size`; `--lease-ttl SECONDS`
  overrides `[storage] lease_ttl` (PostgreSQL leases shared by workers on several machines).
  Output (`ticketmail.cli._output`): a line per mailbox on stderr, and the run's summary line at the end
  (with `--watch`, when it stops); `--json` prints one JSON object per message; `--quiet` only errors.
* `check` and `status` (`ticketmail.cli._health`): each mailbox's connection, and the health recorded by
  fetch runs.
* `pipe` (`ticketmail.cli._pipe`): ONE message from stdin for MTA delivery, with a sysexits status.

State (locks, `health.json`, retry counters) lives in `[storage] state_dir` or, by default, in
`<database>.state/` next to the database (`ticketmail.sources.poller.default_state_dir()`).

Exit codes of fetch: 0 every mailbox polled (or skipped because another fetch holds it) and every message
committed; 1 some message failed (left in place, retried later) or some mailbox failed (see stderr and
`status`); 2 bad usage or configuration (also when only some `[[mailboxes]]` tables are invalid: the
valid ones were still fetched); 3 the database failed.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from typing import Any

import attrs

from ticketmail.cli._args import ArgSpec, add_arguments, bounded_float, positive_int
from ticketmail.cli._common import (
    EXIT_BACKEND,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    LeasingBackend,
    cli_logging,
    close_pipeline,
    open_pipeline,
    select_mailboxes,
)
from ticketmail.cli._config import (
    add_threading_arguments,
    load_config,
    report_mailbox_errors,
    state_dir,
    storage_target,
)
from ticketmail.cli._output import Output, RunTally, add_output_flags, message_line, report_failure
from ticketmail.config import LEASE_TTL_RANGE, Config
from ticketmail.errors import BackendError, SourceError, TicketmailError
from ticketmail.pipeline import Outcome, Pipeline
from ticketmail.sources.base import RawItem
from ticketmail.sources.config import DELIVERED_PROTOCOLS, MailboxConfig
from ticketmail.sources.health import HealthEvent
from ticketmail.sources.poller import Backoff, MailboxRun, Poller, PollReport

__all__ = ["message_json", "register", "run_fetch"]


_FETCH_ARGS: tuple[ArgSpec, ...] = (
    (("--config",), {"required": True, "metavar": "FILE", "help": "the ticketmail TOML file"}),
    (("--mailbox",), {"action": "append", "default": [], "metavar": "NAME", "help": "only this mailbox (repeatable)"}),
    (("--rules",), {"metavar": "FILE", "help": "a rules TOML file (replaces [rules])"}),
    (("--db",), {"metavar": "FILE|URL", "help": "the ticket database (overrides [storage])"}),
    (("--time-budget",), {"type": float, "default": None, "metavar": "SECONDS",
                          "help": "time limit per mailbox visit (default: [poller] time_budget, else 120)"}),
    (("--batch-size",), {"type": positive_int("a batch size"), "default": None, "metavar": "N",
                         "help": "messages committed together per transaction, for every mailbox (default: each "
                         "mailbox's batch_size, else 50; 1 commits each message on its own)"}),
    (("--lease-ttl",), {"type": bounded_float("a lease time in seconds", *LEASE_TTL_RANGE), "default": None,
                        "metavar": "SECONDS",
                        "help": "seconds a mailbox lease lasts without a heartbeat, from 0.5 to 3600 (PostgreSQL: "
                        "workers on several machines; overrides [storage] lease_ttl; default 30)"}),
    (("--state-dir",), {"metavar": "DIR", "help": "locks and health state (default: <database>.state)"}),
    (("-v", "--verbose"), {"action": "store_true", "help": "log details (with tracebacks) on stderr"}),
)  # fmt: skip

_MODES: tuple[ArgSpec, ...] = (
    (("--once",), {"action": "store_true", "help": "visit each mailbox once and exit (default; for cron)"}),
    (("--watch",), {"action": "store_true", "help": "keep serving the mailboxes until SIGTERM/SIGINT"}),
    (("--dry-run",), {"action": "store_true",
                      "help": "read, parse, decide and thread as for real and print what would happen; change "
                      "nothing (no ticket, ledger row or audit record; nothing acknowledged, moved or flagged; "
                      "IMAP read-only)"}),
)  # fmt: skip


def register(subparsers: Any) -> None:
    """Add the `fetch` sub-command (`check` and `status`: `ticketmail.cli._health`; `pipe`: `_pipe`)."""
    fetch = subparsers.add_parser(
        "fetch",
        help="fetch mail from the configured mailboxes into the ticket database",
        description="Poll IMAP/POP3/Maildir/mbox mailboxes; a summary line per mailbox (--json: one JSON object "
        "per message on stdout).",
    )
    add_arguments(fetch.add_mutually_exclusive_group(), _MODES)
    add_arguments(fetch, _FETCH_ARGS)
    add_threading_arguments(fetch)
    add_output_flags(fetch, what="message")
    fetch.set_defaults(func=run_fetch)


def _leases(pipeline: Pipeline, names: list[str], ttl: float | None, *, watch: bool) -> Any:
    """Database leases when the backend has them (PostgreSQL: workers on several machines), else `None`."""
    backend = pipeline.backend
    if not isinstance(backend, LeasingBackend):
        return None  # SQLite: the local flock under the state directory
    return backend.lease_manager(names, ttl=ttl, fair_share=watch)


def _alerter(config: Config) -> Any:
    """An `Alerter` for the file's `[alerts]` table, or `None` without one."""
    if config.alerts is None:
        return None
    from ticketmail.alerts import Alerter

    return Alerter(config.alerts)


# -- what is printed ---------------------------------------------------------------------------------------


def message_json(name: str, item: RawItem, outcome: Outcome, *, dry_run: bool = False) -> dict[str, Any]:
    """One fetched message as the JSON object `fetch --json` prints (fields in `docs/cli.md`)."""
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
    return line


def _report_event(output: Output) -> Callable[[HealthEvent], None]:
    """A health listener printing reachability changes on stderr (what a worker's log should show)."""

    def report(event: HealthEvent) -> None:
        if event.kind == "recovered":
            output.note(f"ticketmail: {event.mailbox}: recovered")
        elif event.health.last_error is not None:
            error = event.health.last_error
            output.error(f"unreachable ({error.stage}): {error.message}", error.code, subject=event.mailbox)

    return report


def _run_extra(run: MailboxRun) -> str:
    extra = ""
    if run.stopped in ("cap", "budget"):
        extra += f"; stopped at the {run.stopped}, more waiting"
    elif run.stopped == "stop":
        extra += "; interrupted by a signal, the rest waits for the next run"
    if run.waiting:
        extra += f"; {run.waiting} waiting"
    if run.oversized:
        extra += f"; {run.oversized} oversized left on the server"
    return extra


def _summary(run: MailboxRun) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in run.actions) or "nothing new"
    if run.status == "error" and run.error is not None:
        stage = run.error.stage if isinstance(run.error, SourceError) else "backend"
        return f"{run.name}: FAILED at {stage}: {run.error.message} ({counts} before that)"
    if run.status == "busy":
        return f"{run.name}: skipped, another fetch is running"
    if run.status == "disabled":
        return f"{run.name}: disabled"
    return f"{run.name}: {counts}{_run_extra(run)}"


def _print_report(output: Output, report: PollReport, tally: RunTally, *, dry_run: bool) -> None:
    for run in report.runs:  # one line per mailbox on stderr, then the run's summary line
        if run.status == "error" and run.error is not None:
            output.error(_summary(run), run.error.code)
        else:
            output.note(f"ticketmail: {_summary(run)}")
    line = tally.line(dry_run=dry_run)
    if dry_run:
        line = line.replace("nothing was stored", "nothing was stored, acknowledged, moved or flagged")
    output.summary(line)


def _exit_code(report: PollReport, broken: int) -> int:
    if any(isinstance(run.error, BackendError) for run in report.runs):
        return EXIT_BACKEND
    if broken:
        return EXIT_USAGE
    if not report.ok or any(run.failed for run in report.runs):
        return EXIT_FAILED
    return EXIT_OK


# -- fetch -----------------------------------------------------------------------------------------------


@attrs.define
class _Job:
    """One fetch run, ready to poll."""

    config: Config
    mailboxes: list[MailboxConfig]
    broken: int
    db: str
    pipeline: Pipeline
    alerter: Any = None
    leases: Any = None

    def close(self) -> None:
        if self.leases is not None:
            self.leases.close()
        close_pipeline(self.pipeline)
        if self.alerter is not None:
            self.alerter.close()


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch once or watch; return the exit code."""
    # --once prints a summary per mailbox at the end; the poller's warnings would only repeat it.
    with cli_logging(args.verbose, poller_level=None if args.watch else logging.ERROR):
        return _fetch(args, Output(args))


def _chosen(config: Config, args: argparse.Namespace, output: Output) -> tuple[list[MailboxConfig], int] | int:
    """The mailboxes to poll and how many tables were invalid, or the exit code when there is nothing to do."""
    # A mailbox whose table is invalid is reported; the others still run and the exit status says so.
    broken = report_mailbox_errors(config, output.err, args.mailbox)
    mailboxes, piped = [], 0
    for mailbox in select_mailboxes(config, args.mailbox):
        if mailbox.protocol in DELIVERED_PROTOCOLS:  # named with --mailbox: say why nothing happens
            output.note(
                f"ticketmail: {mailbox.name}: delivered by the mail server (protocol {mailbox.protocol}), "
                "nothing to fetch"
            )
            piped += 1
        else:
            mailboxes.append(mailbox)
    if not mailboxes:
        if not broken and not piped:
            output.error(f"{args.config} defines no [[mailboxes]] to fetch", "invalid_config")
        return EXIT_USAGE
    return mailboxes, broken


def _prepare(args: argparse.Namespace, output: Output) -> _Job | int:
    alerter: Any = None
    try:
        config = load_config(args.config)
        chosen = _chosen(config, args, output)
        if isinstance(chosen, int):
            return chosen
        db = storage_target(config, args, default=None)
        alerter = None if args.dry_run else _alerter(config)  # a dry run alerts nobody
        pipeline = open_pipeline(config, args, hooks=alerter.hooks() if alerter is not None else None)
    except TicketmailError as exc:
        if alerter is not None:
            alerter.close()
        output.error(exc)
        return EXIT_BACKEND if isinstance(exc, BackendError) else EXIT_USAGE
    return _Job(config, chosen[0], chosen[1], db, pipeline, alerter)


def _poller(job: _Job, args: argparse.Namespace, output: Output, on_outcome: _Printer) -> Poller:
    from ticketmail.sources.poller import target_for

    state: Any = state_dir(job.config, args, job.db)
    settings = job.config.poller
    budget = args.time_budget if args.time_budget is not None else settings["time_budget"]
    targets = [
        target_for(m, skip=job.pipeline.is_processed, state_dir=state, time_budget=budget, batch_size=args.batch_size)
        for m in job.mailboxes
    ]
    if args.dry_run:  # never with --watch (argparse: one mode)
        from ticketmail.dryrun import dry_run_source

        # The mailboxes opened so that nothing changes there; health and locks kept in this process only.
        targets = [attrs.evolve(t, source=dry_run_source(m)) for t, m in zip(targets, job.mailboxes, strict=True)]
        state = None
    events = [_report_event(output)]
    if job.alerter is not None:  # [alerts]: down / recovered / quarantined, delivered in the background
        events.append(job.alerter.health_listener())
    if not args.dry_run:
        ttl = args.lease_ttl if args.lease_ttl is not None else job.config.storage.lease_ttl
        job.leases = _leases(job.pipeline, [t.name for t in targets], ttl, watch=args.watch)
        if job.leases is None and args.lease_ttl is not None:
            output.note("ticketmail: --lease-ttl has no effect here: this database uses local locks, not leases")
    backoff = Backoff(base=settings["backoff_base"], cap=settings["backoff_cap"], jitter=settings["backoff_jitter"])
    return Poller(
        targets,
        job.pipeline,
        state=state,
        on_outcome=on_outcome,
        backoff=backoff,
        events=events,
        lock_factory=None if job.leases is None else job.leases.lock,
    )


class _Printer:
    """The poller's `on_outcome`: count, print and report each message (called from any mailbox thread)."""

    def __init__(self, output: Output, tally: RunTally, *, dry_run: bool) -> None:
        self._output = output
        self._tally = tally
        self._dry_run = dry_run
        self._lock = threading.Lock()
        self._progress = output.progress()

    def __call__(self, name: str, item: RawItem, outcome: Outcome) -> None:
        data = message_json(name, item, outcome, dry_run=self._dry_run)
        with self._lock:
            self._tally.add(outcome.action)
            self._output.record(data)
            report_failure(self._output, data["source"], data)
            if self._dry_run:
                self._output.text(message_line(data["source"], data))
            self._progress.update(self._tally.total, self._tally.counts)

    def close(self) -> None:
        """Erase the progress line."""
        with self._lock:
            self._progress.close()


def _fetch(args: argparse.Namespace, output: Output) -> int:
    job = _prepare(args, output)
    if isinstance(job, int):
        return job
    tally = RunTally()
    on_outcome = _Printer(output, tally, dry_run=args.dry_run)
    try:
        poller = _poller(job, args, output, on_outcome)
        if args.watch:
            output.note(f"ticketmail: watching {len(job.mailboxes)} mailbox(es); SIGTERM or Ctrl-C stops")
            poller.run(handle_signals=True, idle_slice=job.config.poller["idle_slice"])
            on_outcome.close()
            output.summary(tally.line())
            return EXIT_USAGE if job.broken else EXIT_OK
        restore = poller.install_signal_handlers()  # SIGTERM: finish the message in hand, then stop
        try:
            report = poller.poll_once(concurrency=max(1, int(job.config.poller["concurrency"])))
        finally:
            restore()
    except TicketmailError as exc:
        output.error(exc)
        return EXIT_BACKEND if isinstance(exc, BackendError) else EXIT_USAGE
    finally:
        on_outcome.close()
        job.close()
    _print_report(output, report, tally, dry_run=args.dry_run)
    return _exit_code(report, job.broken)
