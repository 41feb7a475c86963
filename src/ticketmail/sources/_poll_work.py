"""One visit's work: hand an open session's items to the pipeline in groups, then acknowledge or release each.

The exactly-once rules of `ticketmail.sources.poller` live here: nothing of a group is acknowledged before
the group committed; a `BackendError` releases every item not yet settled (left in place, not counted
against it) and ends the visit; a pipeline bug on a group sends that group through the one-by-one path, so
a poison message is counted against itself only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import threading
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from ticketmail.errors import BackendError, TicketmailError
from ticketmail.pipeline import Outcome
from ticketmail.sources._poll_values import (
    Clock,
    OutcomeCallback,
    PollTarget,
    ProcessesBatches,
    ProcessesEmail,
    ReportsOversize,
    ReportsPending,
    Tally,
)
from ticketmail.sources.base import RawItem, SourceSession

__all__ = ["ItemProcessor"]

log = logging.getLogger("ticketmail.sources.poller")


@runtime_checkable
class _Closeable(Protocol):
    def close(self) -> None: ...


class _Group:
    """The items gathered for the next commit and their raw size."""

    __slots__ = ("held", "items")

    def __init__(self) -> None:
        self.items: list[RawItem] = []
        self.held = 0

    def add(self, item: RawItem) -> None:
        self.items.append(item)
        self.held += len(item.data)

    def take(self) -> list[RawItem]:
        items, self.items, self.held = self.items, [], 0
        return items


class ItemProcessor:
    """Drains sessions into a pipeline (one per poller; every mailbox thread shares it)."""

    def __init__(
        self, pipeline: ProcessesEmail, *, stop: threading.Event, clock: Clock, on_outcome: OutcomeCallback | None
    ) -> None:
        self.pipeline = pipeline
        self._batches = pipeline if isinstance(pipeline, ProcessesBatches) else None
        self._stop = stop
        self._clock = clock
        self._on_outcome = on_outcome

    def drain(self, target: PollTarget, session: SourceSession, tally: Tally, start: _dt.datetime) -> None:
        """Process items of an open session until the cap, the budget, a stop or a backend failure.

        Items are gathered into groups of up to `target.batch_size` (and `target.batch_bytes`); a group is
        processed when full, when the next item would overflow its bytes, when the visit stops early and when
        the source has nothing more to hand over, so an IDLE wake-up with one new message commits it at once.
        """
        size = target.batch_size if self._batches is not None else 1
        items: Iterator[RawItem] = iter(session.fetch(limit=target.max_messages))
        group = _Group()
        try:
            self._gather(target, session, items, group, tally, (size, start))
            # What was gathered before a stop, the budget or the end of the fetch is processed now: those
            # items are in hand, and the group takes one commit.
            self._flush(target, session, group.take(), tally)
        finally:
            # Only after an exception can items be left here (never processed): leave them in place.
            for leftover in group.take():
                self._release_quietly(session, leftover)
            if isinstance(items, _Closeable):
                items.close()
        self._read_reports(session, tally)

    def _gather(
        self,
        target: PollTarget,
        session: SourceSession,
        items: Iterator[RawItem],
        group: _Group,
        tally: Tally,
        limits: tuple[int, _dt.datetime],
    ) -> None:
        """Take items one at a time into `group`, committing it whenever it is full (`limits`: size, start)."""
        size, start = limits
        while True:
            item = self._next(target, session, items, group, tally)
            if item is None:
                return
            tally.fetched += 1
            if self._stop.is_set() or self._elapsed(start) >= target.time_budget:
                tally.stopped = "stop" if self._stop.is_set() else "budget"
                tally.fetched -= 1
                session.release(item, failed=False)
                return
            if group.items and group.held + len(item.data) > target.batch_bytes:
                try:
                    self._flush(target, session, group.take(), tally)
                except BaseException:
                    self._release_quietly(session, item)  # in hand, not yet in the group
                    raise
            group.add(item)
            if len(group.items) >= size or group.held >= target.batch_bytes:
                self._flush(target, session, group.take(), tally)

    def _next(
        self, target: PollTarget, session: SourceSession, items: Iterator[RawItem], group: _Group, tally: Tally
    ) -> RawItem | None:
        """The next item, or `None` at the end of the fetch (noting a cap that was reached)."""
        try:
            return next(items)
        except StopIteration:
            if target.max_messages is not None and tally.fetched >= target.max_messages:
                tally.stopped = "cap"
            return None
        except Exception:
            # The source failed in the middle of the fetch (a connection drop, an unreadable file): commit
            # and acknowledge what it handed over before, as one-by-one processing would have, so a message
            # that always breaks the fetch cannot hold back the ones before it.
            self._flush(target, session, group.take(), tally)
            raise

    @staticmethod
    def _read_reports(session: SourceSession, tally: Tally) -> None:
        """What the session can tell after the fetch: oversize messages left, messages still waiting."""
        tally.oversized = len(session.oversized or ()) if isinstance(session, ReportsOversize) else 0
        if isinstance(session, ReportsPending):
            with contextlib.suppress(TicketmailError):
                value = session.pending()
                tally.waiting = value if isinstance(value, int) else None

    def _elapsed(self, start: _dt.datetime) -> float:
        return (self._clock() - start).total_seconds()

    def _flush(self, target: PollTarget, session: SourceSession, group: list[RawItem], tally: Tally) -> None:
        """Process the gathered items, then acknowledge or release each in order.

        When this raises, every item of the group not yet handed to its own acknowledge/release has been
        released with `failed=False` (left in place, not counted against it).
        """
        if not group:
            return
        started = 0  # items before this index went to their own acknowledge/release path
        try:
            outcomes = self._process_group(target, group)
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

    def _process_group(self, target: PollTarget, group: list[RawItem]) -> list[Outcome] | None:
        """One outcome per item from `process_batch`, or `None`: process the group one by one instead.

        `BackendError` propagates (nothing committed; the caller releases the whole group).
        """
        if self._batches is None or len(group) == 1:
            return None
        try:
            outcomes = self._batches.process_batch(
                [(item.data, item.provenance) for item in group], context=target.context
            )
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
        if _well_formed(outcomes, len(group)):
            return outcomes
        log.error(
            "process_batch returned %s for %d messages of %s; processing them one by one",
            type(outcomes).__name__,
            len(group),
            target.name,
        )
        return None

    def _process(self, target: PollTarget, session: SourceSession, item: RawItem, tally: Tally) -> None:
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
        self, target: PollTarget, session: SourceSession, item: RawItem, outcome: Outcome, tally: Tally
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


def _well_formed(outcomes: object, count: int) -> bool:
    """Whether `process_batch` kept its contract: a list of one `Outcome` per message."""
    return isinstance(outcomes, list) and len(outcomes) == count and all(isinstance(o, Outcome) for o in outcomes)
