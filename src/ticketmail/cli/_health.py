"""`ticketmail check` and `ticketmail status`: can each mailbox be reached, and how did its last poll go.

* `check --config FILE` validates each mailbox's settings (credentials first), then tests its connection and
  names the failing stage; a disabled mailbox is checked and marked as disabled.
* `status --config FILE` prints the health table written by fetch runs (any process).

Both print a readable table by default, one JSON object per mailbox per line with `--json`, and with
`--quiet` only the failing mailboxes, as error lines on stderr (for monitoring checks).
Exit codes: `check`: 0 all ok, 1 some mailbox failed (an invalid table fails at the `config` stage), 2 bad
configuration. `status`: 0 all ok (or never polled), 1 some mailbox is failing or unreachable, 2 bad
configuration.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ticketmail.cli._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, cli_logging, select_mailboxes
from ticketmail.cli._config import load_config, report_mailbox_errors, state_dir, storage_target
from ticketmail.cli._output import Output, add_output_flags
from ticketmail.config import Config
from ticketmail.errors import ConfigError, SourceError, TicketmailError
from ticketmail.sources.config import DELIVERED_PROTOCOLS, MailboxConfig, SourcesConfig
from ticketmail.sources.health import MailboxHealth, read_health

__all__ = ["check_json", "register", "run_check", "run_status"]


def register(subparsers: Any) -> None:
    """Add the `check` and `status` sub-commands."""
    check = subparsers.add_parser(
        "check", help="test each mailbox's connection", description="Connect, authenticate and open each mailbox."
    )
    check.add_argument("--config", required=True, metavar="FILE", help="the ticketmail TOML file")
    check.add_argument("--mailbox", action="append", default=[], metavar="NAME", help="only this mailbox (repeatable)")
    add_output_flags(check, what="mailbox")
    _common(check)
    check.set_defaults(func=run_check)

    status = subparsers.add_parser(
        "status", help="show mailbox health", description="Health of each mailbox as recorded by fetch runs."
    )
    status.add_argument("--config", required=True, metavar="FILE", help="the ticketmail TOML file")
    status.add_argument("--db", metavar="FILE|URL", help="the ticket database (overrides [storage])")
    add_output_flags(status, what="mailbox")
    _common(status)
    status.set_defaults(func=run_status)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", metavar="DIR", help="locks and health state (default: <database>.state)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (with tracebacks) on stderr")


# -- check -----------------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    """Test each mailbox's connection; return the exit code."""
    with cli_logging(args.verbose):
        return _check(args, Output(args))


def _check_state_dir(args: argparse.Namespace, config: Config | SourcesConfig) -> Path | None:
    """Where `fetch` keeps its state (the OAuth2 token files live there), if the config says."""
    try:
        if isinstance(config, SourcesConfig):  # a caller holding the older mailbox-only view of the file
            config = load_config(config.path)
        return state_dir(config, args, storage_target(config, args, default=None))
    except ConfigError:
        return Path(args.state_dir) if getattr(args, "state_dir", None) else None


def check_json(mailbox: MailboxConfig, args: argparse.Namespace, config: Config) -> dict[str, Any]:
    """The check of one mailbox as the JSON object `check --json` prints."""
    from ticketmail.sources.check import check

    try:
        data: dict[str, Any] = dict(check(mailbox, state_dir=_check_state_dir(args, config)).to_dict())
    except TicketmailError as exc:  # check() should report, not raise; be safe anyway
        data = {
            "mailbox": mailbox.name,
            "ok": False,
            "stage": exc.stage if isinstance(exc, SourceError) else None,
            "message": exc.message,
        }
    data.setdefault("mailbox", mailbox.name)
    data.setdefault("enabled", mailbox.enabled)
    return data


def _check_text(data: dict[str, Any]) -> str:
    disabled = "" if data.get("enabled") is not False else " [disabled: fetch skips this mailbox]"
    if data.get("ok"):
        caps = data.get("capabilities") or []
        extra = f" (capabilities: {' '.join(caps)})" if caps else ""
        return f"{data['mailbox']}: ok{extra}{disabled}"
    return f"{data['mailbox']}: FAILED at {data.get('stage')}: {data.get('message')}{disabled}"


def _print_check(output: Output, data: dict[str, Any]) -> None:
    output.record(data)
    output.text(_check_text(data))
    if output.quiet and not data.get("ok"):
        output.error(_check_text(data), data.get("code") or "source_error")


def _check(args: argparse.Namespace, output: Output) -> int:
    try:
        config = load_config(args.config)
        mailboxes = select_mailboxes(config, args.mailbox)
    except TicketmailError as exc:
        output.error(exc)
        return EXIT_USAGE
    code = EXIT_OK
    # An invalid mailbox table is a failed check at the config stage; the other mailboxes are still checked.
    for error in config.mailbox_errors:
        name = (error.field or "").removeprefix("mailbox:")
        if args.mailbox and name not in args.mailbox:
            continue
        code = EXIT_FAILED
        row = {"mailbox": name, "ok": False, "stage": "config", "message": error.message, "enabled": None}
        _print_check(output, row)
    for mailbox in mailboxes:
        data = check_json(mailbox, args, config)
        # fetch never polls a disabled mailbox: its failure counts only when it was asked for by name.
        if not data.get("ok") and (mailbox.enabled or mailbox.name in args.mailbox):
            code = EXIT_FAILED
        _print_check(output, data)
    return code


# -- status ----------------------------------------------------------------------------------------------


def _ago(health: MailboxHealth) -> str:
    return health.last_success.strftime("%Y-%m-%d %H:%M:%S%z") if health.last_success else "never"


def run_status(args: argparse.Namespace) -> int:
    """Print the health table; return the exit code."""
    with cli_logging(args.verbose):
        return _status(args, Output(args))


def _health_rows(config: Config, records: dict[str, MailboxHealth]) -> list[MailboxHealth]:
    polled = [m for m in config.mailboxes if m.protocol not in DELIVERED_PROTOCOLS]  # never polled
    rows: list[MailboxHealth] = [records.get(m.name) or MailboxHealth(name=m.name) for m in polled]
    rows += [h for name, h in sorted(records.items()) if name not in {m.name for m in polled}]
    return rows


def _status_row(h: MailboxHealth) -> list[str]:
    error = f"{h.last_error.stage}: {h.last_error.message}" if h.last_error else ""
    waiting = "?" if h.waiting is None else str(h.waiting)
    if h.last_oversized:
        waiting += f" (+{h.last_oversized} oversize)"
    return [h.name, h.state, _ago(h), waiting, str(h.consecutive_failures), error]


def _status(args: argparse.Namespace, output: Output) -> int:
    try:
        config = load_config(args.config)
        db = storage_target(config, args, default=None)
        records = read_health(state_dir(config, args, db) / "health.json")
    except TicketmailError as exc:
        output.error(exc)
        return EXIT_USAGE
    broken = report_mailbox_errors(config, output.err)
    rows = _health_rows(config, dict(records))
    for health in rows:
        output.record(health.to_dict())
        if output.quiet and health.state in ("failing", "unreachable"):
            error = health.last_error
            detail = f" ({error.stage}): {error.message}" if error else ""
            output.error(f"{health.state}{detail}", error.code if error else "source_error", subject=health.name)
    output.table([["MAILBOX", "STATE", "LAST SUCCESS", "WAITING", "FAILURES", "LAST ERROR"], *map(_status_row, rows)])
    if broken:
        return EXIT_USAGE
    return EXIT_FAILED if any(h.state in ("failing", "unreachable") for h in rows) else EXIT_OK
