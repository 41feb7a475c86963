"""The poller: drives mailbox sources into the pipeline, from cron or as a long-running worker.

Two ways to run it, same guarantees:

* `Poller.poll_once()` (cron, a task queue, an app's own scheduler): visit each enabled mailbox once and
  return a `PollReport`.
* `Poller.run()` (a worker process): serve every mailbox until `Poller.stop()` (or SIGTERM/SIGINT
  with `handle_signals=True`). Each mailbox gets its own thread, so one slow or hanging server cannot
  delay another; a mailbox with `idle` enabled whose session implements
  `WaitableSession` (IMAP IDLE, RFC 2177) keeps its connection open and
  waits for the server to announce new mail; the others are polled every `interval` seconds.

What each visit guarantees (the exactly-once contract of `ticketmail.sources.base`):

* an item is acknowledged (deleted, moved, flagged) only when the pipeline's outcome says so, i.e. after the
  backend committed; a `failed` outcome is released with `failed=True` so the source can count retries
  and eventually quarantine it;
* items are committed in groups of up to `batch_size` (group commit through
  `process_batch()`): one transaction per group instead of one per
  message, which on SQLite is where the time goes. Each message is still all-or-nothing and carries its own
  outcome; nothing of a group is acknowledged before the group committed; a group is processed as soon as
  the source has nothing more to hand over (never held back waiting for mail, so IDLE stays real-time);
  an unexpected exception from the batch call sends that group through the one-by-one path, so a poison
  message is counted against itself only. `batch_size = 1` (or a pipeline without `process_batch`)
  processes each message on its own, as before;
* a `BackendError` (storage down) stops that mailbox's visit at once, with the
  item (or every item of the group) released unacknowledged: nothing is lost, the next visit fetches it
  again;
* a per-visit message cap (`max_messages`) and time budget (`time_budget` seconds) bound the work, so a
  backlog of 50,000 messages in one mailbox cannot starve the others; what is left waits for the next visit;
* any failure of one mailbox (bad credentials, expired OAuth token, unreachable host, a bug in an adapter) is
  recorded in `health` and never stops the others;
* a per-mailbox `MailboxLock` (`flock` under the state directory) makes a
  second concurrent visit, in this process or another, skip the mailbox with status `busy`.

Errors back off exponentially with jitter (`Backoff`): `base * 2**(n-1)` capped at `cap`, of
which a random part (`jitter`) is shaved off so that many workers restarted together do not hammer a
recovering server in lockstep.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as _dt
import importlib
import logging
import os
import random
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol, cast

import attrs

from ticketmail.errors import BackendError, ConfigError, SourceError, TicketmailError
from ticketmail.model import MailboxContext, Provenance
from ticketmail.pipeline import Outcome
from ticketmail.sources.base import RawItem, SkipCallback, Source, SourceSession, WaitableSession
from ticketmail.sources.health import HealthListener, HealthStore
from ticketmail.sources.lock import MailboxLock

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_SIZE",
    "Backoff",
    "MailboxRun",
    "OutcomeCallback",
    "PollReport",
    "PollTarget",
    "Poller",
    "ProcessesBatches",
    "ProcessesEmail",
    "default_state_dir",
    "source_for",
    "target_for",
]

log = logging.getLogger(__name__)

Clock = Callable[[], _dt.datetime]
OutcomeCallback = Callable[[str, RawItem, Outcome], None]
"""`on_outcome(mailbox_name, item, outcome)`, called after each processed item (e.g. to print a line)."""


class ProcessesEmail(Protocol):
    """What the poller needs of a `Pipeline`."""

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        """Process one raw message (raises `BackendError` when storage is unavailable)."""

    def is_processed(self, provenance: Provenance) -> bool:
        """Whether this mailbox item was already committed."""


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


BatchFunction = Callable[..., Any]

DEFAULT_BATCH_SIZE = 50
"""Messages per group commit when a mailbox does not say (`batch_size`)."""

DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
"""Raw bytes one group may hold in memory before it is processed, whatever `batch_size` says."""


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def default_state_dir(db_path: str | os.PathLike[str]) -> Path:
    """The state directory next to a database file: `tickets.sqlite3` -> `tickets.sqlite3.state/`.

    It holds `health.json` (read by `ticketmail status`), `locks/<mailbox>.lock` and the local
    sources' retry counters.
    """
    path = Path(db_path)
    return path.with_name(path.name + ".state")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{attribute.name} must be positive, got {value!r}", field=attribute.name)


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attribute.name} must be an integer >= 1, got {value!r}", field=attribute.name)


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ConfigError(f"{attribute.name} must be >= 0, got {value!r}", field=attribute.name)


def _fraction(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value <= 1:
        raise ConfigError(f"{attribute.name} must be between 0 and 1, got {value!r}", field=attribute.name)


@attrs.frozen
class Backoff:
    """Jittered exponential backoff after consecutive errors.

    `delay(n)` for the n-th consecutive failure is `min(cap, base * 2**(n-1))` minus up to `jitter` of
    it at random (`jitter=0.5`: between half and all of the nominal delay).
    """

    base: float = attrs.field(default=5.0, validator=_positive)
    cap: float = attrs.field(default=900.0, validator=_positive)
    jitter: float = attrs.field(default=0.5, validator=_fraction)

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
    max_messages: int | None = attrs.field(default=100, validator=_positive)
    time_budget: float = attrs.field(default=120.0, validator=_positive)
    interval: float = attrs.field(default=300.0, validator=_positive)
    idle: bool = False
    enabled: bool = True
    batch_size: int = attrs.field(default=DEFAULT_BATCH_SIZE, validator=_positive_int)
    batch_bytes: int = attrs.field(default=DEFAULT_BATCH_BYTES, validator=_positive_int)


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


class _Tally:
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


def _unexpected(exc: BaseException, target: str, stage: str) -> SourceError:
    # Only the exception type: an arbitrary library message might quote a secret (a URL with a password).
    return SourceError(f"unexpected {type(exc).__name__} while polling {target!r}", stage=stage, mailbox=target)


class Poller:
    """Polls many mailboxes into one pipeline.

    Args:
        mailboxes: `PollTarget` values, or mailbox configurations that `target_factory` turns into
            targets (the CLI passes `MailboxConfig` values).
        pipeline: The `Pipeline` (anything with `process_email`/`is_processed`;
            `process_batch`, when present, commits each mailbox's items in groups of `batch_size`).
        clock: Returns the current aware datetime; used for budgets and health timestamps.
        sleep: `sleep(seconds)` used by `run()` between polls (tests pass a fake that advances their
            clock). `None` waits on the internal stop event, which `stop()` interrupts at once.
        state: The state directory (locks and `health.json`); `None` keeps locks per process and health
            in memory.
        events: Health listeners (see `HealthEvent`).
        on_outcome: Called after every processed item.
        backoff: Error backoff policy for `run()`.
        rng: Random source for jitter (seed it for reproducible tests).
        target_factory: `factory(config, skip) -> PollTarget` for non-target mailbox entries.
        lock_factory: `factory(mailbox_name)` returning the per-mailbox lock (`acquire() -> bool` and
            `release()`; an optional `valid` property ends an idling visit when it turns false). Default:
            a `MailboxLock` under `state`. PostgreSQL workers on several
            machines pass `ticketmail.backends.postgres_leases.LeaseManager.lock()`.
    """

    def __init__(
        self,
        mailboxes: Iterable[PollTarget | Any],
        pipeline: ProcessesEmail,
        *,
        clock: Clock = _utcnow,
        sleep: Callable[[float], None] | None = None,
        state: str | os.PathLike[str] | None = None,
        events: Sequence[HealthListener] | None = None,
        on_outcome: OutcomeCallback | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        target_factory: Callable[[Any, SkipCallback], PollTarget] | None = None,
        lock_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._clock = clock
        self._sleep = sleep
        self.state_dir = Path(state) if state is not None else None
        self.health = HealthStore(
            self.state_dir / "health.json" if self.state_dir is not None else None, listeners=tuple(events or ())
        )
        self._on_outcome = on_outcome
        self.backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        targets: list[PollTarget] = []
        for entry in mailboxes:
            if isinstance(entry, PollTarget):
                targets.append(entry)
                continue
            if target_factory is not None:
                targets.append(target_factory(entry, pipeline.is_processed))
            else:
                targets.append(target_for(entry, skip=pipeline.is_processed, state_dir=self.state_dir))
        names = [t.name for t in targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"mailbox names must be unique; repeated: {', '.join(dupes)}", field="name")
        self.targets: tuple[PollTarget, ...] = tuple(targets)
        make_lock = lock_factory or (lambda name: MailboxLock(self.state_dir, name))
        self._locks = {t.name: make_lock(t.name) for t in targets}

    # -- one-shot ---------------------------------------------------------------------------------------

    def poll_once(self, *, concurrency: int = 1) -> PollReport:
        """Visit every enabled mailbox once; never raises for a mailbox's failure.

        Args:
            concurrency: Mailboxes visited at the same time (threads). 1 visits them in order; more helps
                a cron job with many mailboxes where slow servers would otherwise add up. The report keeps
                the configuration order either way.
        """
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}", field="concurrency")
        if concurrency == 1:
            runs = []
            for target in self.targets:
                if self._stop.is_set():
                    break
                runs.append(self.poll_mailbox(target.name))
            return PollReport(runs=tuple(runs))
        with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ticketmail") as pool:
            futures = [pool.submit(self._poll_unless_stopped, t.name) for t in self.targets]
            results = [f.result() for f in futures]
        return PollReport(runs=tuple(r for r in results if r is not None))

    def _poll_unless_stopped(self, name: str) -> MailboxRun | None:
        return None if self._stop.is_set() else self.poll_mailbox(name)

    def poll_mailbox(self, name: str) -> MailboxRun:
        """Visit one mailbox once: lock, connect, process up to the cap/budget, record health."""
        target = self._target(name)
        if not target.enabled:
            return MailboxRun(name=name, status="disabled")
        lock = self._locks[name]
        try:
            acquired = lock.acquire()
        except TicketmailError as exc:  # the state directory is unusable: report, do not stop the others
            return self._record_error(target, _Tally(), exc)
        if not acquired:
            log.info("mailbox %s is already being fetched elsewhere; skipping", name)
            return MailboxRun(name=name, status="busy")
        try:
            return self._visit(target, keep_open=None)
        finally:
            lock.release()

    # -- long-running -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run()` (and a running `poll_once()`) to finish the current item or group and return.

        A stopped poller stays stopped (a later `poll_once()` visits nothing); make a new one to resume.
        """
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether `stop()` was called."""
        return self._stop.is_set()

    def run(self, *, handle_signals: bool = False, idle_slice: float = 5.0) -> None:
        """Serve every enabled mailbox until `stop()` is called.

        Args:
            handle_signals: Install SIGTERM/SIGINT handlers that call `stop()` (main thread only); the
                previous handlers are restored on return.
            idle_slice: Longest single `wait_for_changes` call, so a stop is noticed within this time.
        """
        restore = self.install_signal_handlers() if handle_signals else None
        try:
            threads = [
                threading.Thread(
                    target=self._serve, args=(t, idle_slice), name=f"ticketmail-poll-{t.name}", daemon=True
                )
                for t in self.targets
                if t.enabled
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.5)  # short joins keep the main thread responsive to signals
        finally:
            if restore is not None:
                restore()

    # -- internals --------------------------------------------------------------------------------------

    def _target(self, name: str) -> PollTarget:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def install_signal_handlers(self) -> Callable[[], None]:
        """Make SIGTERM/SIGINT call `stop()`; returns a function restoring the previous handlers.

        Only the main thread may install signal handlers; elsewhere this does nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s received; stopping after the current message", signum)
            self.stop()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def _wait(self, seconds: float) -> bool:
        """Wait `seconds` (interruptible by `stop()`); returns True when stopping."""
        if seconds <= 0:
            return self._stop.is_set()
        if self._sleep is None:
            return self._stop.wait(seconds)
        remaining = seconds
        while remaining > 0 and not self._stop.is_set():
            step = min(remaining, 1.0)
            self._sleep(step)
            remaining -= step
        return self._stop.is_set()

    def _elapsed(self, start: _dt.datetime) -> float:
        return (self._clock() - start).total_seconds()

    def _visit(self, target: PollTarget, keep_open: Callable[[SourceSession, _Tally], None] | None) -> MailboxRun:
        """Open a session, drain one batch, record health; `keep_open` may keep using the session."""
        start = self._clock()
        self.health.record_attempt(target.name, at=start)
        tally = _Tally()
        try:
            with target.source.session() as session:
                self._drain(target, session, tally, start)
                self._record_ok(target, tally)
                if keep_open is not None and tally.stopped is None:
                    keep_open(session, tally)
        except TicketmailError as exc:
            return self._record_error(target, tally, exc)
        except Exception as exc:  # one broken adapter must not stop the other mailboxes
            log.exception("unexpected error while polling mailbox %s", target.name)
            stage = "backend" if tally.fetched else "connect"
            return self._record_error(target, tally, _unexpected(exc, target.name, stage))
        return tally.run(target.name, "ok")

    def _record_ok(self, target: PollTarget, tally: _Tally) -> None:
        self.health.record_success(
            target.name,
            at=self._clock(),
            waiting=tally.waiting,
            processed=tally.acknowledged,
            failed=tally.failed,
            oversized=tally.oversized,
        )

    def _record_error(self, target: PollTarget, tally: _Tally, exc: TicketmailError) -> MailboxRun:
        if isinstance(exc, SourceError) and exc.mailbox is None:
            exc.mailbox = target.name
        log.warning("mailbox %s failed (%s): %s", target.name, getattr(exc, "stage", exc.code), exc.message)
        self.health.record_failure(
            target.name, at=self._clock(), error=exc, processed=tally.acknowledged, failed=tally.failed
        )
        if isinstance(exc, BackendError):
            tally.stopped = tally.stopped or "backend"
        return tally.run(target.name, "error", exc)

    def _batch_function(self) -> BatchFunction | None:
        """The pipeline's `process_batch`, or `None` for a pipeline that only has `process_email`."""
        function = getattr(self.pipeline, "process_batch", None)
        return function if callable(function) else None

    def _drain(self, target: PollTarget, session: SourceSession, tally: _Tally, start: _dt.datetime) -> None:
        """Process items of an open session until the cap, the budget, a stop or a backend failure.

        Items are gathered into groups of up to `target.batch_size` (and `target.batch_bytes`); a group is
        processed when full, when the next item would overflow its bytes, when the visit stops early and when
        the source has nothing more to hand over, so an IDLE wake-up with one new message commits it at once.
        """
        batch_function = self._batch_function()
        size = target.batch_size if batch_function is not None else 1
        items: Iterator[RawItem] = iter(session.fetch(limit=target.max_messages))
        batch: list[RawItem] = []
        held = 0
        try:
            while True:
                try:
                    item = next(items)
                except StopIteration:
                    if target.max_messages is not None and tally.fetched >= target.max_messages:
                        tally.stopped = "cap"
                    break
                except Exception:
                    # The source failed in the middle of the fetch (a connection drop, an unreadable file):
                    # commit and acknowledge what it handed over before, as one-by-one processing would
                    # have, so a message that always breaks the fetch cannot hold back the ones before it.
                    self._flush(target, session, batch, tally, batch_function)
                    raise
                tally.fetched += 1
                if self._stop.is_set() or self._elapsed(start) >= target.time_budget:
                    tally.stopped = "stop" if self._stop.is_set() else "budget"
                    tally.fetched -= 1
                    session.release(item, failed=False)
                    break
                if batch and held + len(item.data) > target.batch_bytes:
                    try:
                        self._flush(target, session, batch, tally, batch_function)
                    except BaseException:
                        self._release_quietly(session, item)  # in hand, not yet in the group
                        raise
                    held = 0
                batch.append(item)
                held += len(item.data)
                if len(batch) >= size or held >= target.batch_bytes:
                    self._flush(target, session, batch, tally, batch_function)
                    held = 0
            # What was gathered before a stop, the budget or the end of the fetch is processed now: those
            # items are in hand, and the group takes one commit.
            self._flush(target, session, batch, tally, batch_function)
        finally:
            # Only after an exception can items be left here (never processed): leave them in place.
            for leftover in batch:
                self._release_quietly(session, leftover)
            batch.clear()
            close = getattr(items, "close", None)
            if close is not None:
                close()
        tally.oversized = len(getattr(session, "oversized", ()) or ())
        pending = getattr(session, "pending", None)
        if callable(pending):
            with contextlib.suppress(TicketmailError):
                value = pending()
                tally.waiting = value if isinstance(value, int) else None

    def _flush(
        self,
        target: PollTarget,
        session: SourceSession,
        batch: list[RawItem],
        tally: _Tally,
        batch_function: BatchFunction | None,
    ) -> None:
        """Process the gathered items (emptying `batch`), then acknowledge or release each in order.

        When this raises, every item of the group not yet handed to its own acknowledge/release has been
        released with `failed=False` (left in place, not counted against it).
        """
        group = list(batch)
        batch.clear()
        if not group:
            return
        started = 0  # items before this index went to their own acknowledge/release path
        try:
            outcomes = self._process_group(target, group, batch_function)
            if outcomes is None:  # one by one: each item settles (or raises) on its own
                for item in group:
                    started += 1
                    self._process(target, session, item, tally)
                return
            for item, outcome in zip(group, outcomes, strict=True):
                started += 1
                self._settle(target, session, item, outcome, tally)
        finally:
            for item in group[started:]:
                self._release_quietly(session, item)

    def _process_group(
        self, target: PollTarget, group: list[RawItem], batch_function: BatchFunction | None
    ) -> list[Outcome] | None:
        """One outcome per item from `process_batch`, or `None`: process the group one by one instead.

        `BackendError` propagates (nothing committed; the caller releases the whole group).
        """
        if batch_function is None or len(group) == 1:
            return None
        try:
            outcomes = batch_function([(item.data, item.provenance) for item in group], context=target.context)
        except BackendError:
            log.info(
                "storage failed while committing %d messages of %s; leaving them in place", len(group), target.name
            )
            raise
        except Exception:
            # A bug in the pipeline on some message of the group: the one-by-one path counts it against that
            # message only. Messages of the group that were committed come back as duplicates (acknowledged).
            log.exception(
                "pipeline raised on a group of %d from %s; processing them one by one", len(group), target.name
            )
            return None
        if (
            not isinstance(outcomes, list)
            or len(outcomes) != len(group)
            or not all(isinstance(o, Outcome) for o in outcomes)
        ):
            log.error(
                "process_batch returned %s for %d messages of %s; processing them one by one",
                type(outcomes).__name__,
                len(group),
                target.name,
            )
            return None
        return outcomes

    def _process(self, target: PollTarget, session: SourceSession, item: RawItem, tally: _Tally) -> None:
        try:
            outcome = self.pipeline.process_email(item.data, provenance=item.provenance, context=target.context)
        except BackendError:
            # Storage is down: leave the item untouched (not a failure of the message) and stop this visit.
            session.release(item, failed=False)
            raise
        except Exception:
            # A bug in the pipeline on this message: count it against the message (bounded retries, then
            # quarantine) rather than stop the mailbox at the same poison message forever.
            log.exception("pipeline raised on %s/%s; leaving it in place", target.name, item.provenance.key)
            tally.failed += 1
            tally.actions["error"] = tally.actions.get("error", 0) + 1
            session.release(item, failed=True)
            return
        self._settle(target, session, item, outcome, tally)

    def _settle(
        self, target: PollTarget, session: SourceSession, item: RawItem, outcome: Outcome, tally: _Tally
    ) -> None:
        """Acknowledge or release one item from its own (committed) outcome; count it; tell `on_outcome`."""
        tally.actions[outcome.action] = tally.actions.get(outcome.action, 0) + 1
        if outcome.acknowledge:
            session.acknowledge(item)
            tally.acknowledged += 1
        else:
            session.release(item, failed=True)
            tally.failed += 1
        if self._on_outcome is not None:
            try:
                self._on_outcome(target.name, item, outcome)
            except Exception:
                log.exception("on_outcome callback failed")

    @staticmethod
    def _release_quietly(session: SourceSession, item: RawItem) -> None:
        """Leave an unprocessed item in place while another error is on its way out (that one is reported)."""
        try:
            session.release(item, failed=False)
        except Exception:
            log.debug("could not release %s while handling another error", item.provenance.key, exc_info=True)

    def _serve(self, target: PollTarget, idle_slice: float) -> None:
        """The worker loop of one mailbox (one thread)."""
        failures = 0
        lock = self._locks[target.name]
        while not self._stop.is_set():
            try:
                acquired = lock.acquire()
            except TicketmailError as exc:
                failures += 1
                self._record_error(target, _Tally(), exc)
                if self._wait(self.backoff.delay(failures, self._rng)):
                    return
                continue
            if not acquired:
                log.info("mailbox %s is busy in another process; retrying in %ss", target.name, target.interval)
                if self._wait(target.interval):
                    return
                continue
            try:
                run = self._visit(target, keep_open=lambda s, t: self._idle_loop(target, s, t, idle_slice))
            finally:
                lock.release()
            if run.status == "error":
                failures += 1
                delay = self.backoff.delay(failures, self._rng)
                log.info("mailbox %s: failure %d, retrying in %.1fs", target.name, failures, delay)
            else:
                failures = 0
                delay = 0.0 if run.stopped in ("cap", "budget") else target.interval
            if self._wait(delay):
                return

    def _idle_loop(self, target: PollTarget, session: SourceSession, outer: _Tally, idle_slice: float) -> None:
        """Keep a session open while the mailbox supports IDLE: wait for changes, drain, repeat."""
        if not (target.idle and isinstance(session, WaitableSession)):
            return
        lock = self._locks[target.name]
        while not self._stop.is_set() and getattr(lock, "valid", True):  # a lease lost or handed over ends it
            waited = 0.0
            changed = False
            # Re-poll at least every `interval` even without a notification (missed EXISTS, NAT timeouts).
            while not self._stop.is_set() and waited < target.interval and getattr(lock, "valid", True):
                step = min(idle_slice, target.interval - waited)
                if session.wait_for_changes(step):
                    changed = True
                    break
                waited += step
            if self._stop.is_set() or not getattr(lock, "valid", True):
                return
            log.debug("mailbox %s: %s", target.name, "changes announced" if changed else "periodic re-poll")
            start = self._clock()
            self.health.record_attempt(target.name, at=start)
            tally = _Tally()
            self._drain(target, session, tally, start)
            self._record_ok(target, tally)
            if tally.stopped is not None:
                outer.stopped = tally.stopped
                return  # leave the session; the serve loop reconnects at once for the rest


def source_for(
    config: Any, *, skip: SkipCallback | None = None, state_dir: str | os.PathLike[str] | None = None
) -> Source:
    """The `Source` for a `MailboxConfig`."""
    protocol = getattr(config, "protocol", None)
    if getattr(config, "provider", None) is not None:  # built-in OAuth2: tokens kept under the state directory
        from ticketmail.oauth import bind_state_dir

        config = bind_state_dir(config, state_dir)
    if protocol == "graph":
        from ticketmail.sources.graph import GraphSource

        return GraphSource(config, skip=skip, state_dir=state_dir)
    if protocol == "maildir":
        from ticketmail.sources.maildir import MaildirSource

        return MaildirSource.from_config(config, skip=skip, state_dir=state_dir)
    if protocol == "mbox":
        from ticketmail.sources.mbox import MboxSource

        return MboxSource.from_config(config, skip=skip, state_dir=state_dir)
    if protocol == "imap":
        imap = importlib.import_module("ticketmail.sources.imap")
        return cast(Source, imap.ImapSource(config, skip=skip))
    if protocol == "pop3":
        pop3 = importlib.import_module("ticketmail.sources.pop3")
        from ticketmail.sources.maildir import RetryCounter

        retries = RetryCounter(Path(state_dir) / f"retries-{config.name}.json" if state_dir is not None else None)
        keep = RetryCounter(Path(state_dir) / f"kept-{config.name}.json" if state_dir is not None else None)
        return cast(Source, pop3.Pop3Source(config, skip=skip, retries=retries, keep=keep))
    raise ConfigError(f"mailbox {getattr(config, 'name', '?')!r}: unknown protocol {protocol!r}", field="protocol")


def target_for(
    config: Any,
    *,
    skip: SkipCallback | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    time_budget: float = 120.0,
    batch_size: int | None = None,
) -> PollTarget:
    """A `PollTarget` from a mailbox configuration (cap `max_per_run`, `poll_interval`, `idle`).

    `batch_size` overrides the configuration's `batch_size` (a configuration without one gets
    `DEFAULT_BATCH_SIZE`).
    """
    if batch_size is None:
        batch_size = getattr(config, "batch_size", DEFAULT_BATCH_SIZE)
    return PollTarget(
        name=config.name,
        source=source_for(config, skip=skip, state_dir=state_dir),
        context=config.context(),
        max_messages=config.max_per_run,
        time_budget=time_budget,
        interval=config.poll_interval,
        idle=config.idle,
        enabled=config.enabled,
        batch_size=batch_size,
    )
