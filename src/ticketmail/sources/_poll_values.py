"""The values the poller works with: targets, backoff, run reports, and what it needs of its collaborators.

The collaborators are described by `typing.Protocol`s, each for one capability, so the poller asks
`isinstance(x, Protocol)` instead of probing attributes: a pipeline (`ProcessesEmail`) that may also commit
groups (`ProcessesBatches`), a per-mailbox lock (`MailboxLocking`) that may be a lease which can be lost
(`LeasedLock`), and sessions that report oversize messages (`ReportsOversize`) or how many messages
still wait (`ReportsPending`).
"""

from __future__ import annotations

import datetime as _dt
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

from ticketmail._validators import fail, optional, positive
from ticketmail.errors import TicketmailError
from ticketmail.model import MailboxContext, Provenance
from ticketmail.pipeline import Outcome
from ticketmail.sources.base import OversizeNotice, RawItem, Source

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_SIZE",
    "Backoff",
    "Clock",
    "LeasedLock",
    "MailboxLocking",
    "MailboxRun",
    "OutcomeCallback",
    "PollReport",
    "PollTarget",
    "ProcessesBatches",
    "ProcessesEmail",
    "ReportsOversize",
    "ReportsPending",
    "RunStatus",
]

Clock = Callable[[], _dt.datetime]
OutcomeCallback = Callable[[str, RawItem, Outcome], None]
"""`on_outcome(mailbox_name, item, outcome)`, called after each processed item (e.g. to print a line)."""


@runtime_checkable
class ProcessesEmail(Protocol):
    """What the poller needs of a `Pipeline`."""

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        """Process one raw message (raises `BackendError` when storage is unavailable)."""

    def is_processed(self, provenance: Provenance) -> bool:
        """Whether this mailbox item was already committed."""


@runtime_checkable
class ProcessesBatches(ProcessesEmail, Protocol):
    """A pipeline that can also commit several messages in one unit of work (group commit).

    The poller uses `process_batch` when the pipeline has it and `batch_size` is above 1; see
    `ticketmail.pipeline.Pipeline.process_batch()` for the contract (outcomes in input order, each message
    all-or-nothing, `BackendError` with nothing committed).
    """

    def process_batch(
        self, items: Iterable[tuple[bytes, Provenance]], *, context: MailboxContext | None = None
    ) -> list[Outcome]:
        """Process `(raw, provenance)` pairs in one unit of work; one outcome per pair, in order."""


@runtime_checkable
class MailboxLocking(Protocol):
    """The per-mailbox lock the poller takes around a visit (`MailboxLock`, or a PostgreSQL lease)."""

    def acquire(self) -> bool:
        """Take the lock without waiting; `False` when another run holds it."""

    def release(self) -> None:
        """Give the lock up."""


@runtime_checkable
class LeasedLock(MailboxLocking, Protocol):
    """A lock that can be lost while held (a lease that expired or was handed to another worker)."""

    @property
    def valid(self) -> bool:
        """Whether the lock is still held; an idling visit ends when it turns false."""


@runtime_checkable
class ReportsOversize(Protocol):
    """A session that lists the messages it left on the server for exceeding `max_message_size`."""

    @property
    def oversized(self) -> Sequence[OversizeNotice]:
        """The oversize messages left during this session."""


@runtime_checkable
class ReportsPending(Protocol):
    """A session that can tell how many messages still wait after a fetch."""

    def pending(self) -> int | None:
        """Messages still waiting (`None` when it cannot tell)."""


def _fraction(prefix: str) -> Any:
    def check(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise fail(prefix, attribute, "a number between 0 and 1", value)

    return check


DEFAULT_BATCH_SIZE = 50
"""Messages per group commit when a mailbox does not say (`batch_size`)."""

DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
"""Raw bytes one group may hold in memory before it is processed, whatever `batch_size` says."""


@attrs.frozen
class Backoff:
    """Jittered exponential backoff after consecutive errors.

    `delay(n)` for the n-th consecutive failure is `min(cap, base * 2**(n-1))` minus up to `jitter` of
    it at random (`jitter=0.5`: between half and all of the nominal delay).
    """

    base: float = attrs.field(default=5.0, validator=positive("backoff"))
    cap: float = attrs.field(default=900.0, validator=positive("backoff"))
    jitter: float = attrs.field(default=0.5, validator=_fraction("backoff"))

    def nominal(self, failures: int) -> float:
        """The delay before jitter (0 for no failures)."""
        if failures <= 0:
            return 0.0
        return float(min(self.cap, self.base * 2 ** min(failures - 1, 62)))

    def delay(self, failures: int, rng: random.Random) -> float:
        """The jittered delay for `failures` consecutive failures."""
        nominal = self.nominal(failures)
        return nominal * (1.0 - self.jitter * rng.random())


@attrs.frozen
class PollTarget:
    """One mailbox as the poller serves it.

    Attributes:
        name: The mailbox name (health records, locks, output).
        source: The `Source` to open.
        context: The `MailboxContext` handed to the pipeline.
        max_messages: Message cap per visit (`None`: no cap; the time budget still applies).
        time_budget: Seconds one visit may spend before leaving the rest for the next one.
        interval: Seconds between polls in `Poller.run()` (also the safety re-poll period under IDLE).
        idle: Use the session's `wait_for_changes` (IMAP IDLE) in `Poller.run()` when it has one.
        enabled: Disabled mailboxes are skipped (status `disabled`).
        batch_size: Messages committed together in one unit of work (group commit, through the pipeline's
            `process_batch`); 1 processes and commits each message on its own.
        batch_bytes: Raw bytes a group may hold before it is processed even if it has fewer than
            `batch_size` messages, so a run of large messages never sits in memory at once.
    """

    name: str
    source: Source
    context: MailboxContext | None = None
    max_messages: int | None = attrs.field(default=100, validator=optional(positive()))
    time_budget: float = attrs.field(default=120.0, validator=positive())
    interval: float = attrs.field(default=300.0, validator=positive())
    idle: bool = False
    enabled: bool = True
    batch_size: int = attrs.field(default=DEFAULT_BATCH_SIZE, validator=positive(integer=True))
    batch_bytes: int = attrs.field(default=DEFAULT_BATCH_BYTES, validator=positive(integer=True))


RunStatus = Literal["ok", "busy", "error", "disabled"]


@attrs.frozen
class MailboxRun:
    """What one visit of one mailbox did.

    `status`: `ok`; `busy` (another run holds the lock; nothing done); `error` (see `error`; the
    counters say what happened before it); `disabled`. `stopped` says why the visit ended early
    (`cap`, `budget`, `backend`, `stop`), if it did; `waiting` is what the source reports as still
    waiting (`None` when it cannot tell).
    """

    name: str
    status: RunStatus
    fetched: int = 0
    acknowledged: int = 0
    failed: int = 0
    oversized: int = 0
    actions: tuple[tuple[str, int], ...] = ()
    stopped: str | None = None
    waiting: int | None = None
    error: TicketmailError | None = attrs.field(default=None, eq=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "mailbox": self.name,
            "status": self.status,
            "fetched": self.fetched,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "oversized": self.oversized,
            "actions": dict(self.actions),
            "stopped": self.stopped,
            "waiting": self.waiting,
            "error": self.error.to_dict() if self.error else None,
        }


@attrs.frozen
class PollReport:
    """The result of `Poller.poll_once()`: one `MailboxRun` per mailbox, in configuration order."""

    runs: tuple[MailboxRun, ...]

    @property
    def ok(self) -> bool:
        """True when no mailbox ended in `error`."""
        return all(run.status != "error" for run in self.runs)

    def run(self, name: str) -> MailboxRun:
        """The run of mailbox `name`."""
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(name)


class Tally:
    """Mutable counters of one visit (internal)."""

    def __init__(self) -> None:
        self.fetched = 0
        self.acknowledged = 0
        self.failed = 0
        self.oversized = 0
        self.actions: dict[str, int] = {}
        self.stopped: str | None = None
        self.waiting: int | None = None

    def run(self, name: str, status: RunStatus, error: TicketmailError | None = None) -> MailboxRun:
        return MailboxRun(
            name=name,
            status=status,
            fetched=self.fetched,
            acknowledged=self.acknowledged,
            failed=self.failed,
            oversized=self.oversized,
            actions=tuple(sorted(self.actions.items())),
            stopped=self.stopped,
            waiting=self.waiting,
            error=error,
        )
