r"""Dry runs: read, parse, decide and thread exactly as for real, and change nothing.

A dry run answers "what would happen to the mail in this mailbox with these rules?" before the rules go
live. It uses the same pipeline as a real run, over two wrappers:

* `DryRunBackend` runs every unit of work on the real backend, so lookups (threading, duplicates, the
  ledger, rate limits) see the real tickets, and then rolls it back: no ticket, entry, ledger row, audit
  record or quarantine row is ever committed. Within one group commit, later messages see the effects of
  earlier ones, as they would for real.
* `DryRunSource` opens the real mailbox and hands its messages over, but acknowledges nothing: no delete,
  move or flag, no retry counter, no POP3 `DELE`. IMAP folders are opened read-only (`EXAMINE`), so not even
  `\\Recent` changes. POP3 has no read-only mode: messages are read with `RETR`, which some servers (Dovecot)
  then show to IMAP clients as `\\Seen`; nothing is deleted.

The outcome of every message is still reported (created, appended, ignored, ...) with its reasons.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ticketmail._pipeline.capabilities import LedgerReader
from ticketmail.backends.base import AuditRecord, Backend, Entry, QuarantineRecord, Ticket, UnitOfWork
from ticketmail.sources._poll_values import ReportsOversize, ReportsPending
from ticketmail.sources.base import OversizeNotice, RawItem, Source, SourceSession

if TYPE_CHECKING:
    from ticketmail.sources.config import MailboxConfig

__all__ = ["DryRunBackend", "DryRunSource", "dry_run_source"]


class _RolledBack(Exception):
    """Raised inside a dry-run unit of work so the real backend rolls it back."""


class DryRunBackend:
    """A backend whose units of work run on `inner` and are always rolled back.

    Reads (`get_ticket`, `list_tickets`, ...) go to `inner`. `committed` counts the units that would have
    been committed.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.committed = 0

    @contextlib.contextmanager
    def _unit(self) -> Iterator[UnitOfWork]:
        try:
            with self.inner.unit_of_work() as uow:
                yield uow
                self.committed += 1
                raise _RolledBack
        except _RolledBack:
            return

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        """A unit of work on the real backend that is rolled back when it ends (also on success)."""
        return self._unit()

    def is_processed(self, key: str) -> bool:
        """Whether the real ledger has `key` (read-only)."""
        if isinstance(self.inner, LedgerReader):
            return bool(self.inner.is_processed(key))
        with self.inner.unit_of_work() as uow:
            return uow.processed(key) is not None

    def get_ticket(self, number: str) -> Ticket | None:
        """The real ticket."""
        return self.inner.get_ticket(number)

    def list_tickets(self, *, limit: int | None = None, offset: int = 0) -> Sequence[Ticket]:
        """The real tickets."""
        return self.inner.list_tickets(limit=limit, offset=offset)

    def entries(self, number: str) -> Sequence[Entry]:
        """The real thread."""
        return self.inner.entries(number)

    def attachment(self, sha256: str) -> bytes | None:
        """A real attachment."""
        return self.inner.attachment(sha256)

    def audit_log(self) -> Iterator[AuditRecord]:
        """The real audit log (a dry run adds nothing to it)."""
        return self.inner.audit_log()

    def quarantined(self) -> Sequence[QuarantineRecord]:
        """The real quarantine (a dry run adds nothing to it)."""
        return self.inner.quarantined()

    def close(self) -> None:
        """Close the real backend."""
        self.inner.close()


class _DryRunSession:
    """A session that hands items over and acknowledges or releases nothing.

    It reports what the real session reports to the poller (`oversized`, `pending()`), and never waits for
    changes or flushes (a dry run reads the mailbox once and changes nothing).
    """

    def __init__(self, inner: SourceSession) -> None:
        self._inner = inner
        self.acknowledged: list[RawItem] = []
        self.released: list[RawItem] = []

    def fetch(self, *, limit: int | None = None) -> Iterator[RawItem]:
        """The real session's items."""
        return self._inner.fetch(limit=limit)

    def acknowledge(self, item: RawItem) -> None:
        """Nothing happens at the mailbox; the item is only counted."""
        self.acknowledged.append(item)

    def release(self, item: RawItem, *, failed: bool) -> None:
        """Nothing happens at the mailbox (no retry counter either)."""
        self.released.append(item)

    @property
    def oversized(self) -> list[OversizeNotice]:
        """The real session's oversize notices (none when it keeps no such list)."""
        return list(self._inner.oversized) if isinstance(self._inner, ReportsOversize) else []

    def pending(self) -> int | None:
        """What the real session says still waits, or `None`."""
        return self._inner.pending() if isinstance(self._inner, ReportsPending) else None


class DryRunSource:
    """A source whose sessions acknowledge nothing (see the module docstring)."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.name = inner.name

    @contextlib.contextmanager
    def session(self) -> Iterator[SourceSession]:
        """The real session, wrapped so that it changes nothing at the mailbox."""
        with self.inner.session() as session:
            yield _DryRunSession(session)


class _ReadOnlyImapSource:
    """An IMAP mailbox opened with `EXAMINE` and never flushed: nothing on the server changes."""

    def __init__(self, config: MailboxConfig) -> None:
        self.config = config
        self.name = config.name

    @contextlib.contextmanager
    def session(self) -> Iterator[SourceSession]:
        from ticketmail.sources.imap import ImapSession

        session = ImapSession(self.config, readonly=True)
        try:
            session.open()
            yield session
        finally:
            session.close()


def dry_run_source(config: MailboxConfig) -> DryRunSource:
    """The dry-run source for a mailbox configuration: IMAP read-only, and every protocol acknowledges nothing.

    Items the ledger already has are fetched too (a real run would skip or acknowledge them unread), so the
    dry run reports them as duplicates instead of touching the mailbox.
    """
    from ticketmail.sources.poller import source_for

    if config.protocol == "imap":
        return DryRunSource(_ReadOnlyImapSource(config))
    return DryRunSource(source_for(config, skip=None, state_dir=None))
