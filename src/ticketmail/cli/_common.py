"""What the commands share besides output: exit codes, `--db`, opening the ticket store, logging to stderr."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any, Protocol, runtime_checkable

from ticketmail.backends.base import Backend
from ticketmail.cli._config import DEFAULT_DB, UNSET_DB, build_pipeline, load_config, storage_target
from ticketmail.cli._output import error_line
from ticketmail.config import Config
from ticketmail.errors import TicketmailError
from ticketmail.model import MailboxContext
from ticketmail.pipeline import Pipeline
from ticketmail.sources.config import DELIVERED_PROTOCOLS, MailboxConfig

__all__ = [
    "EXIT_BACKEND",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "LeasingBackend",
    "cli_logging",
    "close_pipeline",
    "db_argument",
    "open_backend",
    "open_pipeline",
    "print_error",
    "select_mailboxes",
    "target",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BACKEND = 0, 1, 2, 3


@runtime_checkable
class LeasingBackend(Protocol):
    """A backend whose workers on several machines share the mailboxes through leases (PostgreSQL)."""

    def lease_manager(self, mailboxes: Sequence[str], *, ttl: float | None = None, fair_share: bool = True) -> Any:
        """The leases of `mailboxes` for this worker."""


def db_argument(parser: argparse.ArgumentParser) -> None:
    """`--db FILE|URL`, whose default lets `[storage]` decide (see `storage_target`)."""
    parser.add_argument(
        "--db",
        default=UNSET_DB,
        metavar="FILE|URL",
        help=f"the SQLite database file or a backend URL (overrides [storage]; default: {DEFAULT_DB})",
    )


def open_backend(target_name: str, *, create: bool) -> Backend:
    """Open the ticket store `target_name` names: a SQLite file, or a backend URL (`postgresql://...`).

    Every command opens its backend here, so one place decides how a `--db`/`[storage]` value is read.
    """
    from ticketmail.backends.url import open_backend as open_url

    return open_url(target_name, create=create)


def target(args: argparse.Namespace) -> tuple[Config, str]:
    """The configuration (`--config`) and the ticket store (`--db` over `[storage]`) of a command."""
    config = load_config(getattr(args, "config", None))
    return config, storage_target(config, args)


def open_pipeline(
    config: Config,
    args: argparse.Namespace,
    *,
    context: MailboxContext | None = None,
    default: str | None = None,
    hooks: Any = None,
) -> Pipeline:
    """The pipeline of a mailbox command on the store `--db`/`[storage]` names (rolled back with `--dry-run`)."""
    backend: Any = open_backend(storage_target(config, args, default=default), create=True)
    if getattr(args, "dry_run", False):
        from ticketmail.dryrun import DryRunBackend

        backend = DryRunBackend(backend)
    try:
        pipeline: Pipeline = build_pipeline(config, backend, args, context=context, hooks=hooks)
    except BaseException:
        backend.close()
        raise
    return pipeline


def close_pipeline(pipeline: Pipeline) -> None:
    """Close the pipeline's backend; a failure to close is not worth reporting."""
    with contextlib.suppress(TicketmailError):
        pipeline.backend.close()


def select_mailboxes(config: Config, names: Sequence[str]) -> list[MailboxConfig]:
    """The mailboxes named (all polled ones by default).

    A name with a configuration error is left out here and reported by `report_mailbox_errors`.
    """
    if not names:
        return [m for m in config.mailboxes if m.protocol not in DELIVERED_PROTOCOLS]
    broken = {(e.field or "").removeprefix("mailbox:") for e in config.mailbox_errors}
    return [config.mailbox(name) for name in names if name not in broken]


def print_error(stream: IO[str], exc: TicketmailError) -> None:
    """`ticketmail: error: message [code]` on `stream`."""
    print(error_line(exc), file=stream)


class OneLine(logging.Formatter):
    """`ticketmail: warning: message`; tracebacks only with `--verbose`."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        """One line per record (plus the traceback when verbose)."""
        line = f"ticketmail: {record.levelname.lower()}: {record.getMessage()}"
        if self.verbose and record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


@contextlib.contextmanager
def cli_logging(verbose: bool, *, quiet: bool = False, poller_level: int | None = None) -> Iterator[None]:
    """Route `ticketmail` logs to stderr as one-liners for the command's duration, then restore."""
    logger = logging.getLogger("ticketmail")
    poller = logging.getLogger("ticketmail.sources.poller")
    saved = (logger.level, logger.propagate, poller.level)
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if not quiet or verbose else logging.NullHandler()
    handler.setFormatter(OneLine(verbose))
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
