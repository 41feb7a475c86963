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
import datetime as _dt
import logging
import os
import random
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType

from ticketmail.errors import BackendError, ConfigError, SourceError, TicketmailError
from ticketmail.sources._poll_values import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_SIZE,
    Backoff,
    Clock,
    LeasedLock,
    MailboxLocking,
    MailboxRun,
    OutcomeCallback,
    PollReport,
    PollTarget,
    ProcessesBatches,
    ProcessesEmail,
    ReportsOversize,
    ReportsPending,
    Tally,
)
from ticketmail.sources._poll_work import ItemProcessor
from ticketmail.sources._retry import is_retryable
from ticketmail.sources.base import SkipCallback, Source, SourceSession, WaitableSession
from ticketmail.sources.config import MailboxConfig
from ticketmail.sources.health import HealthListener, HealthStore
from ticketmail.sources.lock import MailboxLock

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_SIZE",
    "Backoff",
    "LeasedLock",
    "MailboxLocking",
    "MailboxRun",
    "OutcomeCallback",
    "PollReport",
    "PollTarget",
    "Poller",
    "ProcessesBatches",
    "ProcessesEmail",
    "ReportsOversize",
    "ReportsPending",
    "default_state_dir",
    "source_for",
    "target_for",
]

log = logging.getLogger(__name__)


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def default_state_dir(db_path: str | os.PathLike[str]) -> Path:
    """The state directory next to a database file: `tickets.sqlite3` -> `tickets.sqlite3.state/`.

    It holds `health.json` (read by `ticketmail status`), `locks/<mailbox>.lock` and the local
    sources' retry counters.
    """
    path = Path(db_path)
    return path.with_name(path.name + ".state")


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
        mailboxes: Iterable[PollTarget | MailboxConfig],
        pipeline: ProcessesEmail,
        *,
        clock: Clock = _utcnow,
        sleep: Callable[[float], None] | None = None,
        state: str | os.PathLike[str] | None = None,
        events: Sequence[HealthListener] | None = None,
        on_outcome: OutcomeCallback | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        target_factory: Callable[[MailboxConfig, SkipCallback], PollTarget] | None = None,
        lock_factory: Callable[[str], MailboxLocking] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._clock = clock
        self._sleep = sleep
        self.state_dir = Path(state) if state is not None else None
        self.health = HealthStore(
            self.state_dir / "health.json" if self.state_dir is not None else None, listeners=tuple(events or ())
        )
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
        self._locks: dict[str, MailboxLocking] = {t.name: make_lock(t.name) for t in targets}
        self._work = ItemProcessor(pipeline, stop=self._stop, clock=clock, on_outcome=on_outcome)

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
            return self._record_error(target, Tally(), exc)
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

    def _visit(self, target: PollTarget, keep_open: Callable[[SourceSession, Tally], None] | None) -> MailboxRun:
        """Open a session, drain one batch, record health; `keep_open` may keep using the session."""
        start = self._clock()
        self.health.record_attempt(target.name, at=start)
        tally = Tally()
        try:
            with target.source.session() as session:
                self._work.drain(target, session, tally, start)
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

    def _record_ok(self, target: PollTarget, tally: Tally) -> None:
        self.health.record_success(
            target.name,
            at=self._clock(),
            waiting=tally.waiting,
            processed=tally.acknowledged,
            failed=tally.failed,
            oversized=tally.oversized,
        )

    def _record_error(self, target: PollTarget, tally: Tally, exc: TicketmailError) -> MailboxRun:
        if isinstance(exc, SourceError) and exc.mailbox is None:
            exc.mailbox = target.name
        where = exc.stage if isinstance(exc, SourceError) else exc.code
        log.warning("mailbox %s failed (%s): %s", target.name, where, exc.message)
        self.health.record_failure(
            target.name, at=self._clock(), error=exc, processed=tally.acknowledged, failed=tally.failed
        )
        if isinstance(exc, BackendError):
            tally.stopped = tally.stopped or "backend"
        return tally.run(target.name, "error", exc)

    def _serve(self, target: PollTarget, idle_slice: float) -> None:
        """The worker loop of one mailbox (one thread)."""
        failures = 0
        lock = self._locks[target.name]
        while not self._stop.is_set():
            try:
                acquired = lock.acquire()
            except TicketmailError as exc:
                failures += 1
                self._record_error(target, Tally(), exc)
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
            if run.error is not None and not is_retryable(run.error):
                self._give_up(target, run.error)
                return
            if run.status == "error":
                failures += 1
                delay = self.backoff.delay(failures, self._rng)
                log.info("mailbox %s: failure %d, retrying in %.1fs", target.name, failures, delay)
            else:
                failures = 0
                delay = 0.0 if run.stopped in ("cap", "budget") else target.interval
            if self._wait(delay):
                return

    def _give_up(self, target: PollTarget, error: TicketmailError) -> None:
        """Stop serving a mailbox whose error no retry can fix (its health record says so)."""
        log.error("mailbox %s: %s is not retried until the worker restarts: %s", target.name, error.code, error.message)
        self.health.record_stopped(target.name, at=self._clock(), error=error)

    def _idle_loop(self, target: PollTarget, session: SourceSession, outer: Tally, idle_slice: float) -> None:
        """Keep a session open while the mailbox supports IDLE: wait for changes, drain, repeat."""
        if not (target.idle and isinstance(session, WaitableSession)):
            return
        lock = self._locks[target.name]
        while not self._stop.is_set() and _still_held(lock):  # a lease lost or handed over ends it
            waited = 0.0
            changed = False
            # Re-poll at least every `interval` even without a notification (missed EXISTS, NAT timeouts).
            while not self._stop.is_set() and waited < target.interval and _still_held(lock):
                step = min(idle_slice, target.interval - waited)
                if session.wait_for_changes(step):
                    changed = True
                    break
                waited += step
            if self._stop.is_set() or not _still_held(lock):
                return
            log.debug("mailbox %s: %s", target.name, "changes announced" if changed else "periodic re-poll")
            start = self._clock()
            self.health.record_attempt(target.name, at=start)
            tally = Tally()
            self._work.drain(target, session, tally, start)
            self._record_ok(target, tally)
            if tally.stopped is not None:
                outer.stopped = tally.stopped
                return  # leave the session; the serve loop reconnects at once for the rest


def _still_held(lock: MailboxLocking) -> bool:
    """False once a lease was lost or handed over (a plain lock is held until released)."""
    return lock.valid if isinstance(lock, LeasedLock) else True


def source_for(
    config: MailboxConfig, *, skip: SkipCallback | None = None, state_dir: str | os.PathLike[str] | None = None
) -> Source:
    """The `Source` for a `MailboxConfig`."""
    protocol = config.protocol
    if config.provider is not None:  # built-in OAuth2: tokens kept under the state directory
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
        from ticketmail.sources.imap import ImapSource

        return ImapSource(config, skip=skip)
    if protocol == "pop3":
        from ticketmail.sources.maildir import RetryCounter
        from ticketmail.sources.pop3 import Pop3Source

        retries = RetryCounter(Path(state_dir) / f"retries-{config.name}.json" if state_dir is not None else None)
        keep = RetryCounter(Path(state_dir) / f"kept-{config.name}.json" if state_dir is not None else None)
        return Pop3Source(config, skip=skip, retries=retries, keep=keep)
    raise ConfigError(f"mailbox {config.name!r}: unknown protocol {protocol!r}", field="protocol")


def target_for(
    config: MailboxConfig,
    *,
    skip: SkipCallback | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    time_budget: float = 120.0,
    batch_size: int | None = None,
) -> PollTarget:
    """A `PollTarget` from a mailbox configuration (cap `max_per_run`, `poll_interval`, `idle`).

    `batch_size` overrides the configuration's `batch_size`.
    """
    return PollTarget(
        name=config.name,
        source=source_for(config, skip=skip, state_dir=state_dir),
        context=config.context(),
        max_messages=config.max_per_run,
        time_budget=time_budget,
        interval=config.poll_interval,
        idle=config.idle,
        enabled=config.enabled,
        batch_size=config.batch_size if batch_size is None else batch_size,
    )
