"""Group commit in the poller: ``batch_size`` items per ``Pipeline.process_batch`` call, same guarantees.

Fakes here record every event of a visit in order (fetch, batch commit, acknowledge, release) so the tests
can check the exactly-once rules directly: an item is acknowledged only after the group holding it
committed, every fetched item ends acknowledged xor released, a storage failure acknowledges nothing of its
group, and a poison message is failed alone. The real-thing tests run the real Pipeline on SQLite files
against a real Maildir and the real Dovecot of ``conftest.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import mailbox
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.errors import BackendError, ConfigError, SourceError
from ticketmail.model import MailboxContext, Provenance
from ticketmail.pipeline import Outcome, Pipeline
from ticketmail.sources.base import RawItem
from ticketmail.sources.config import MailboxConfig, mailbox_from_dict
from ticketmail.sources.poller import DEFAULT_BATCH_SIZE, Poller, PollTarget, target_for

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
DATE = "Mon, 02 Nov 2026 10:00:00 +0000"
UNPARSEABLE = b"  \r\n\r\n \r\n"  # no header at all: the pipeline fails (and quarantines) it


# -- fakes ----------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Session:
    def __init__(self, source: Source) -> None:
        self.source = source

    def fetch(self, *, limit: int | None = None) -> Iterator[RawItem]:
        src = self.source
        n = 0
        for key in list(src.messages):
            if limit is not None and n >= limit:
                return
            if key in src.quarantined:
                continue
            if src.fail_fetch_after is not None and n >= src.fail_fetch_after:
                raise SourceError("connection reset during FETCH", stage="fetch")
            n += 1
            src.events.append(("fetch", key))
            yield RawItem(data=src.messages[key], provenance=Provenance(src.name, "fake", key))

    def acknowledge(self, item: RawItem) -> None:
        key = item.provenance.key
        self.source.events.append(("ack", key))
        self.source.messages.pop(key)
        self.source.acked.append(key)

    def release(self, item: RawItem, *, failed: bool) -> None:
        key = item.provenance.key
        self.source.events.append(("release-failed" if failed else "release", key))
        if failed:
            self.source.failures[key] = self.source.failures.get(key, 0) + 1
            if self.source.failures[key] >= 3:
                self.source.quarantined.add(key)


class WaitingSession(Session):
    def wait_for_changes(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.source.arrivals:
                self.source.messages.update(self.source.arrivals)
                self.source.arrivals.clear()
                return True
            time.sleep(0.005)
        return False


class Source:
    def __init__(self, name: str = "a", bodies: Iterable[str] = (), *, waitable: bool = False) -> None:
        self.name = name
        self.messages: dict[str, bytes] = {}
        for i, body in enumerate(bodies):
            self.messages[f"{i:04d}"] = f"Subject: {i}\n\n{body}\n".encode()
        self.events: list[tuple[str, str]] = []
        self.acked: list[str] = []
        self.failures: dict[str, int] = {}
        self.quarantined: set[str] = set()
        self.fail_fetch_after: int | None = None
        self.waitable = waitable
        self.arrivals: dict[str, bytes] = {}

    @contextmanager
    def session(self) -> Iterator[Session]:
        yield WaitingSession(self) if self.waitable else Session(self)

    def released(self, *, failed: bool) -> list[str]:
        kind = "release-failed" if failed else "release"
        return [key for event, key in self.events if event == kind]


class EmailPipeline:
    """Only ``process_email``/``is_processed`` (the poller's documented minimum). Bodies script the result:
    ``FAIL`` -> failed outcome, ``BACKEND`` -> BackendError, ``BOOM`` -> RuntimeError (a pipeline bug)."""

    def __init__(self, source: Source, clock: Clock | None = None, cost: float = 0.0) -> None:
        self.source = source
        self.committed: set[str] = set()
        self.clock = clock
        self.cost = cost
        self.backend_down = False

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        if self.clock is not None:
            self.clock.advance(self.cost)
        if self.backend_down or b"BACKEND" in raw:
            raise BackendError("database is locked")
        if b"BOOM" in raw:
            raise RuntimeError("bug on this message")
        self.source.events.append(("commit", provenance.key))
        self.committed.add(provenance.key)
        if b"FAIL" in raw:
            return Outcome("failed", provenance=provenance)
        return Outcome("created", ticket=f"T{provenance.key}", provenance=provenance)

    def is_processed(self, provenance: Provenance) -> bool:
        return provenance.key in self.committed


class BatchPipeline(EmailPipeline):
    """Adds ``process_batch`` with the real contract's shape: all of the group commits, or nothing does.

    ``BACKEND`` anywhere in the group (or ``backend_down``, or the n-th call in ``down_on_calls``) raises
    BackendError with nothing committed; ``BOOM`` anywhere raises RuntimeError with nothing committed (the
    poller must then fall back to one by one).
    """

    def __init__(self, source: Source, clock: Clock | None = None, cost: float = 0.0) -> None:
        super().__init__(source, clock, cost)
        self.batches: list[list[str]] = []
        self.down_on_calls: set[int] = set()

    def process_batch(
        self, items: Iterable[tuple[bytes, Provenance]], *, context: MailboxContext | None = None
    ) -> list[Outcome]:
        pairs = list(items)
        self.batches.append([p.key for _, p in pairs])
        if self.clock is not None:
            self.clock.advance(self.cost)
        if self.backend_down or len(self.batches) in self.down_on_calls or any(b"BACKEND" in r for r, _ in pairs):
            raise BackendError("database is locked")
        if any(b"BOOM" in raw for raw, _ in pairs):
            raise RuntimeError("bug somewhere in this group")
        outcomes = []
        for raw, provenance in pairs:
            self.committed.add(provenance.key)
            if b"FAIL" in raw:
                outcomes.append(Outcome("failed", provenance=provenance))
            else:
                outcomes.append(Outcome("created", ticket=f"T{provenance.key}", provenance=provenance))
        self.source.events.append(("commit-batch", ",".join(p.key for _, p in pairs)))
        return outcomes


def poller(source: Source, pipeline: Any, clock: Clock | None = None, **target: Any) -> Poller:
    return Poller([PollTarget(source.name, source, **target)], pipeline, clock=clock or Clock())


def check_visit(events: list[tuple[str, str]], *, commits_logged: bool = True) -> None:
    """The exactly-once rules over one visit's event log (a real pipeline logs no commits: skip that rule)."""
    committed: set[str] = set()
    fetched: list[str] = []
    settled: dict[str, str] = {}
    for kind, key in events:
        if kind == "fetch":
            fetched.append(key)
        elif kind == "commit":
            committed.add(key)
        elif kind == "commit-batch":
            committed.update(key.split(","))
        else:
            assert key not in settled, f"{key} settled twice ({settled[key]}, {kind})"
            settled[key] = kind
            if kind == "ack" and commits_logged:
                assert key in committed, f"{key} acknowledged before its commit"
    for key in fetched:
        assert key in settled, f"{key} fetched but neither acknowledged nor released"


# -- same results for every batch size ------------------------------------------------------------------


def _message(i: int, *, reply_to: int | None = None, mid: str | None = None) -> bytes:
    mid = mid or f"m{i}@example.org"
    head = (
        f"From: Customer {i % 5} <c{i % 5}@example.org>\r\nTo: support@example.test\r\nSubject: Request {i}\r\n"
        f"Date: {DATE}\r\nMessage-ID: <{mid}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    )
    if reply_to is not None:
        head = head.replace(f"Subject: Request {i}", f"Subject: Re: Request {reply_to}")
        head += f"In-Reply-To: <m{reply_to}@example.org>\r\nReferences: <m{reply_to}@example.org>\r\n"
    return (head + f"\r\nHello, message {i}.\r\n").encode()


def mixed_mail(n: int = 40) -> list[bytes]:
    """New requests, replies right after them (often in the same group), re-sent duplicates, one junk item.

    Position ``n - 3`` is unparseable; ``i % 4 == 1`` replies to ``i - 1``; ``i % 12 == 3`` is ``i - 3``
    delivered again; the rest are new requests.
    """
    out: list[bytes] = []
    for i in range(n):
        if i == n - 3:
            out.append(UNPARSEABLE)  # fails on its own
        elif i % 4 == 1:
            out.append(_message(i, reply_to=i - 1))  # threads onto a ticket opened just before, same group
        elif i % 12 == 3:
            out.append(out[i - 3])  # the same message delivered again
        else:
            out.append(_message(i))
    return out


def shape(outcomes: list[tuple[str, Outcome]]) -> list[tuple[str, str, int | None]]:
    """(key, action, ticket index by first appearance): comparable across runs with random numbers."""
    index: dict[str, int] = {}
    out: list[tuple[str, str, int | None]] = []
    for key, outcome in outcomes:
        ticket = None
        if outcome.ticket is not None:
            ticket = index.setdefault(outcome.ticket, len(index))
        out.append((key, outcome.action, ticket))
    return out


def real_run(tmp_path: Path, raws: list[bytes], batch_size: int) -> tuple[Any, list[str], int]:
    src = Source("support")
    for i, raw in enumerate(raws):
        src.messages[f"{i:04d}"] = raw
    db = tmp_path / f"b{batch_size}.sqlite3"
    pipeline = Pipeline(SQLiteBackend(str(db)))
    seen: list[tuple[str, Outcome]] = []
    p = Poller(
        [PollTarget("support", src, batch_size=batch_size, max_messages=None)],
        pipeline,
        on_outcome=lambda name, item, outcome: seen.append((item.provenance.key, outcome)),
    )
    run = p.poll_once().run("support")
    assert run.status == "ok"
    check_visit(src.events, commits_logged=False)
    with sqlite3.connect(db) as conn:
        (tickets,) = conn.execute("SELECT count(*) FROM tickets").fetchone()
    pipeline.backend.close()
    return shape(seen), src.acked, int(tickets)


def record_groups(pipeline: Pipeline) -> list[int]:
    """Wrap ``pipeline.process_batch`` so each call's group size is appended to the returned list."""
    groups: list[int] = []
    real = pipeline.process_batch

    def spy(items: Iterable[tuple[bytes, Provenance]], *, context: MailboxContext | None = None) -> list[Outcome]:
        pairs = list(items)
        groups.append(len(pairs))
        return real(pairs, context=context)

    pipeline.process_batch = spy  # type: ignore[method-assign]
    return groups


def test_batch_sizes_1_3_50_give_the_same_tickets_and_acknowledgements(tmp_path: Path) -> None:
    raws = mixed_mail(40)
    one, three, fifty = (real_run(tmp_path, raws, size) for size in (1, 3, 50))
    assert one == three == fifty
    outcomes, acked, tickets = one
    actions = [action for _, action, _ in outcomes]
    assert actions.count("appended") == 9
    assert actions.count("duplicate") == 4
    assert actions.count("failed") == 1
    assert tickets == actions.count("created")
    assert len(acked) == 39  # everything but the unparseable one
    assert outcomes[1][2] == outcomes[0][2]  # the reply landed on the ticket of the message before it


def test_the_real_pipeline_gets_groups_of_batch_size(tmp_path: Path) -> None:
    src = Source("support")
    for i, raw in enumerate(mixed_mail(23)):
        src.messages[f"{i:04d}"] = raw
    pipeline = Pipeline(SQLiteBackend(str(tmp_path / "t.sqlite3")))
    groups = record_groups(pipeline)
    run = Poller([PollTarget("support", src, batch_size=10)], pipeline).poll_once().run("support")
    assert groups == [10, 10, 3]
    assert (run.fetched, run.acknowledged, run.failed) == (23, 22, 1)
    pipeline.backend.close()


# -- safety rules ---------------------------------------------------------------------------------------


def test_backend_error_on_the_second_batch_leaves_it_unacknowledged_and_the_first_acknowledged() -> None:
    src = Source("a", ["ok"] * 10)
    pipeline = BatchPipeline(src)
    pipeline.down_on_calls = {2}
    p = poller(src, pipeline, batch_size=3)
    run = p.poll_once().run("a")
    assert run.status == "error"
    assert isinstance(run.error, BackendError)
    assert run.stopped == "backend"
    assert src.acked == ["0000", "0001", "0002"]
    assert src.released(failed=False) == ["0003", "0004", "0005"]  # not counted against the messages
    assert src.released(failed=True) == []
    assert "0006" not in [key for kind, key in src.events if kind == "fetch"]  # the visit stopped at once
    assert run.acknowledged == 3
    check_visit(src.events)
    # storage back: the next visit picks up exactly where it stopped
    pipeline.down_on_calls = set()
    src.events.clear()
    again = p.poll_once().run("a")
    assert again.acknowledged == 7
    assert src.messages == {}
    check_visit(src.events)


def test_nothing_of_a_group_is_acknowledged_before_the_group_committed() -> None:
    src = Source("a", ["ok"] * 7)
    p = poller(src, BatchPipeline(src), batch_size=3)
    p.poll_once()
    kinds = [kind for kind, _ in src.events]
    assert kinds == ["fetch"] * 3 + ["commit-batch"] + ["ack"] * 3 + ["fetch"] * 3 + ["commit-batch"] + ["ack"] * 3 + [
        "fetch",
        "commit",  # a group of one goes through process_email
        "ack",
    ]


def test_a_poison_message_in_a_group_is_failed_alone() -> None:
    src = Source("a", ["ok", "ok", "BOOM", "ok", "FAIL", "ok"])
    pipeline = BatchPipeline(src)
    run = poller(src, pipeline, batch_size=50).poll_once().run("a")
    assert run.status == "ok"
    assert src.acked == ["0000", "0001", "0003", "0005"]
    assert src.released(failed=True) == ["0002", "0004"]  # the bug counted against BOOM only, FAIL as usual
    assert src.released(failed=False) == []
    assert dict(run.actions) == {"created": 4, "error": 1, "failed": 1}
    assert (run.acknowledged, run.failed) == (4, 2)
    assert pipeline.batches == [["0000", "0001", "0002", "0003", "0004", "0005"]]  # one try as a group
    check_visit(src.events)


def test_a_poison_message_reaches_quarantine_by_its_own_retries() -> None:
    src = Source("a", ["ok", "BOOM", "ok", "ok"])
    pipeline = BatchPipeline(src)
    p = poller(src, pipeline, batch_size=3)
    for _ in range(4):
        p.poll_once()
    assert src.failures == {"0001": 3}
    assert src.quarantined == {"0001"}
    assert src.messages.keys() == {"0001"}  # the others were acknowledged on the first visit


def test_a_real_pipeline_quarantines_an_unparseable_message_without_costing_the_group(tmp_path: Path) -> None:
    src = Source("support")
    raws = [_message(0), UNPARSEABLE, _message(2, reply_to=0), _message(3)]
    for i, raw in enumerate(raws):
        src.messages[f"{i:04d}"] = raw
    pipeline = Pipeline(SQLiteBackend(str(tmp_path / "t.sqlite3")))
    run = Poller([PollTarget("support", src, batch_size=50)], pipeline).poll_once().run("support")
    assert src.acked == ["0000", "0002", "0003"]
    assert src.released(failed=True) == ["0001"]
    assert dict(run.actions) == {"created": 2, "appended": 1, "failed": 1}
    pipeline.backend.close()


def test_a_pipeline_without_process_batch_is_processed_one_by_one() -> None:
    src = Source("a", ["ok", "FAIL", "ok", "BOOM", "ok"])
    pipeline = EmailPipeline(src)
    run = poller(src, pipeline, batch_size=50).poll_once().run("a")
    assert run.status == "ok"
    assert src.acked == ["0000", "0002", "0004"]
    assert src.released(failed=True) == ["0001", "0003"]
    # no point gathering a group that is processed one by one anyway: each item is done before the next fetch
    kinds = [kind for kind, _ in src.events]
    assert kinds[:3] == ["fetch", "commit", "ack"]
    check_visit(src.events)


def test_a_pipeline_returning_the_wrong_number_of_outcomes_falls_back_to_one_by_one() -> None:
    src = Source("a", ["ok"] * 4)

    class Short(BatchPipeline):
        def process_batch(
            self, items: Iterable[tuple[bytes, Provenance]], *, context: MailboxContext | None = None
        ) -> list[Outcome]:
            return super().process_batch(items, context=context)[:-1]

    run = poller(src, Short(src), batch_size=4).poll_once().run("a")
    assert run.acknowledged == 4
    assert src.messages == {}
    check_visit(src.events)


def test_budget_is_checked_before_each_item_joins_a_group() -> None:
    clock = Clock()
    src = Source("a", ["ok"] * 10)
    pipeline = BatchPipeline(src, clock=clock, cost=4.0)  # every commit takes 4 s of the 10 s budget
    run = poller(src, pipeline, clock, batch_size=2, time_budget=10).poll_once().run("a")
    assert run.stopped == "budget"
    assert pipeline.batches == [["0000", "0001"], ["0002", "0003"], ["0004", "0005"]]
    assert src.acked == ["0000", "0001", "0002", "0003", "0004", "0005"]
    assert src.released(failed=False) == ["0006"]  # fetched when the budget was spent: left as it was
    assert run.fetched == 6
    check_visit(src.events)


def test_stop_finishes_the_group_in_hand_and_leaves_the_next_item() -> None:
    src = Source("a", ["ok"] * 7)
    pipeline = BatchPipeline(src)
    holder: list[Poller] = []
    p = Poller(
        [PollTarget("a", src, batch_size=3)],
        pipeline,
        clock=Clock(),
        on_outcome=lambda name, item, outcome: holder[0].stop(),
    )
    holder.append(p)
    run = p.poll_once().run("a")
    assert run.stopped == "stop"
    assert src.acked == ["0000", "0001", "0002"]  # committed together, so acknowledged together
    assert src.released(failed=False) == ["0003"]
    check_visit(src.events)


def test_the_cap_is_unchanged_by_batching() -> None:
    src = Source("a", ["ok"] * 12)
    pipeline = BatchPipeline(src)
    run = poller(src, pipeline, batch_size=3, max_messages=5).poll_once().run("a")
    assert run.stopped == "cap"
    assert (run.fetched, run.acknowledged) == (5, 5)
    assert pipeline.batches == [["0000", "0001", "0002"], ["0003", "0004"]]


def test_groups_are_bounded_by_bytes_too() -> None:
    src = Source("a")
    for i in range(7):
        src.messages[f"{i:04d}"] = b"Subject: x\n\n" + b"x" * 988  # 1000 bytes each
    src.messages["big"] = b"Subject: big\n\n" + b"y" * 5000
    src.messages["last"] = b"Subject: last\n\nz\n"
    pipeline = BatchPipeline(src)
    run = poller(src, pipeline, batch_size=50, batch_bytes=2500).poll_once().run("a")
    assert run.acknowledged == 9
    assert pipeline.batches == [["0000", "0001"], ["0002", "0003"], ["0004", "0005"]]
    # then 0006 alone (big would overflow it), big alone (over the limit by itself), last alone (the end of
    # the fetch): groups of one go through process_email
    assert [kind for kind, key in src.events if key in ("0006", "big", "last")] == [
        "fetch",
        "fetch",
        "commit",
        "ack",
        "commit",
        "ack",
        "fetch",
        "commit",
        "ack",
    ]


def test_a_fetch_failure_mid_group_commits_what_was_handed_over_first() -> None:
    src = Source("a", ["ok"] * 10)
    src.fail_fetch_after = 4
    pipeline = BatchPipeline(src)
    p = poller(src, pipeline, batch_size=50)
    run = p.poll_once().run("a")
    assert run.status == "error"
    assert isinstance(run.error, SourceError)
    assert src.acked == ["0000", "0001", "0002", "0003"]  # not held back by the message that breaks the fetch
    check_visit(src.events)


def test_an_acknowledge_failure_releases_the_rest_of_the_group() -> None:
    src = Source("a", ["ok"] * 5)

    class Flaky(Session):
        def acknowledge(self, item: RawItem) -> None:
            if item.provenance.key == "0002":
                raise SourceError("connection lost", stage="ack")
            super().acknowledge(item)

    @contextmanager
    def session() -> Iterator[Session]:
        yield Flaky(src)

    src.session = session  # type: ignore[method-assign]
    run = poller(src, BatchPipeline(src), batch_size=5).poll_once().run("a")
    assert run.status == "error"
    assert src.acked == ["0000", "0001"]
    assert src.released(failed=False) == ["0003", "0004"]  # committed; the next visit acknowledges them
    # 0002 is committed but unacknowledged: redelivered, then a duplicate for the ledger


def test_idle_does_not_wait_for_a_group_to_fill() -> None:
    src = Source("a", ["ok"], waitable=True)
    pipeline = BatchPipeline(src)
    p = Poller([PollTarget("a", src, idle=True, interval=30, batch_size=50)], pipeline)
    worker = threading.Thread(target=p.run, kwargs={"idle_slice": 0.05})
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while src.messages and time.monotonic() < deadline:
            time.sleep(0.005)
        sent = time.monotonic()
        src.arrivals["pushed"] = b"Subject: pushed\n\nok\n"
        while "pushed" not in src.acked and time.monotonic() < deadline:
            time.sleep(0.005)
        latency = time.monotonic() - sent
    finally:
        p.stop()
        worker.join(10)
    assert not worker.is_alive()
    assert "pushed" in src.acked
    assert latency < 2.0  # one message in a group of 50 committed at once, not when 49 more arrive


# -- property -------------------------------------------------------------------------------------------


@settings(deadline=None)
@given(
    script=st.lists(st.sampled_from(["ok", "ok", "ok", "FAIL", "BOOM", "BACKEND"]), max_size=40),
    batch_size=st.integers(min_value=1, max_value=12),
    batch_bytes=st.sampled_from([40, 100, 1000, 16 * 1024 * 1024]),
    cap=st.one_of(st.none(), st.integers(min_value=1, max_value=45)),
    budget=st.sampled_from([5.0, 1000.0]),
    fail_fetch_after=st.one_of(st.none(), st.integers(min_value=0, max_value=40)),
    down=st.sets(st.integers(min_value=1, max_value=6), max_size=2),
    batch_capable=st.booleans(),
)
def test_every_item_ends_acknowledged_xor_released_and_acknowledged_only_if_committed(
    script: list[str],
    batch_size: int,
    batch_bytes: int,
    cap: int | None,
    budget: float,
    fail_fetch_after: int | None,
    down: set[int],
    batch_capable: bool,
) -> None:
    src = Source("a", script)
    src.fail_fetch_after = fail_fetch_after
    clock = Clock()
    pipeline: EmailPipeline
    if batch_capable:
        pipeline = BatchPipeline(src, clock=clock, cost=1.0)
        pipeline.down_on_calls = down
    else:
        pipeline = EmailPipeline(src, clock=clock, cost=1.0)
    p = poller(
        src, pipeline, clock, batch_size=batch_size, batch_bytes=batch_bytes, max_messages=cap, time_budget=budget
    )
    original = dict(src.messages)
    for _ in range(3):
        src.events.clear()
        run = p.poll_once().run("a")
        check_visit(src.events)
        fetched = [key for kind, key in src.events if kind == "fetch"]
        if cap is not None:
            assert len(fetched) <= cap
        settled_by_outcome = [key for kind, key in src.events if kind in ("ack", "release-failed")]
        assert run.acknowledged + run.failed == len(settled_by_outcome)
        if run.status == "ok" and run.stopped is None:
            assert set(settled_by_outcome) == set(fetched)  # a clean visit leaves nothing merely released
    assert len(src.acked) == len(set(src.acked))
    for key in src.acked:
        assert key in pipeline.committed
        assert b"ok" in original[key]
    for key in original:
        if key not in src.acked:
            assert key in src.messages  # never lost


# -- configuration --------------------------------------------------------------------------------------


def test_batch_size_flows_from_the_mailbox_configuration(tmp_path: Path) -> None:
    config = mailbox_from_dict({"name": "box", "protocol": "maildir", "path": str(tmp_path), "batch_size": 7})
    assert config.batch_size == 7
    assert target_for(config).batch_size == 7
    assert target_for(config, batch_size=1).batch_size == 1  # an override (the CLI's --batch-size)
    assert MailboxConfig(name="b", protocol="maildir", path=str(tmp_path)).batch_size == DEFAULT_BATCH_SIZE == 50


@pytest.mark.parametrize("value", [0, -1, "5", 2.5, True])
def test_invalid_batch_size_names_the_field(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        mailbox_from_dict({"name": "box", "protocol": "maildir", "path": str(tmp_path), "batch_size": value})
    assert "batch_size" in info.value.message
    with pytest.raises(ConfigError) as again:
        PollTarget("box", Source(), batch_size=value)
    assert again.value.field == "batch_size"
    assert repr(value) in again.value.message


def test_invalid_batch_bytes_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        PollTarget("box", Source(), batch_bytes=0)
    assert info.value.field == "batch_bytes"


# -- real things ----------------------------------------------------------------------------------------


def collect(into: list[Outcome]) -> Any:
    def on_outcome(name: str, item: RawItem, outcome: Outcome) -> None:
        into.append(outcome)

    return on_outcome


def _maildir_with(path: Path, raws: list[bytes]) -> None:
    box = mailbox.Maildir(str(path), create=True)
    for raw in raws:
        box.add(raw)
        time.sleep(0.001)  # distinct mtimes keep delivery order


def test_maildir_end_to_end_with_group_commit(tmp_path: Path) -> None:
    raws = mixed_mail(60)
    results = {}
    for size in (1, 8):
        folder = tmp_path / f"maildir{size}"
        _maildir_with(folder, raws)
        db = tmp_path / f"t{size}.sqlite3"
        pipeline = Pipeline(SQLiteBackend(str(db)))
        config = MailboxConfig(
            name="support", protocol="maildir", path=str(folder), after="delete", batch_size=size, max_retries=2
        )
        seen: list[Outcome] = []
        p = Poller([config], pipeline, state=tmp_path / f"state{size}", on_outcome=collect(seen))
        for _ in range(3):  # the unparseable one fails max_retries times, then is quarantined
            p.poll_once()
        with sqlite3.connect(db) as conn:
            tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
            entries = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        left = sorted(p.name for p in (folder / "new").iterdir()) + sorted(p.name for p in (folder / "cur").iterdir())
        in_quarantine = len(list((folder / ".Quarantine" / "new").iterdir()))
        actions = sorted(o.action for o in seen)
        results[size] = (tickets, entries, left, in_quarantine, actions)
        pipeline.backend.close()
    assert results[1] == results[8]
    tickets, entries, left, in_quarantine, actions = results[8]
    assert left == []
    assert in_quarantine == 1
    assert actions.count("failed") == 2
    assert tickets == actions.count("created")
    assert entries == actions.count("created") + actions.count("appended")


@pytest.mark.integration
def test_imap_end_to_end_with_group_commit(tmp_path: Path, dovecot: Any) -> None:
    user = dovecot.new_user("batch")
    raws = [raw for raw in mixed_mail(45) if raw != UNPARSEABLE]
    dovecot.append_many(user, raws)
    config = dovecot.config(user, name="support", after="delete", batch_size=10, max_per_run=30)
    db = tmp_path / "t.sqlite3"
    pipeline = Pipeline(SQLiteBackend(str(db)))
    groups = record_groups(pipeline)
    seen: list[Outcome] = []
    p = Poller([config], pipeline, state=tmp_path / "state", on_outcome=lambda n, item, o: seen.append(o))
    first = p.poll_once().run("support")
    assert first.stopped == "cap"
    assert first.acknowledged == 30
    second = p.poll_once().run("support")
    assert second.acknowledged == len(raws) - 30
    assert groups == [10, 10, 10, 10, 4]
    assert dovecot.state(user) == []
    with sqlite3.connect(db) as conn:
        appended = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
    actions = [o.action for o in seen]
    assert actions.count("appended") == 11
    assert actions.count("duplicate") == 4
    assert tickets == actions.count("created") == len(raws) - 15
    assert appended == tickets + 11
    pipeline.backend.close()


def _fetch_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ticketmail", "fetch", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_fetch_cli_reads_batch_size_and_takes_an_override(tmp_path: Path) -> None:
    raws = mixed_mail(20)
    _maildir_with(tmp_path / "Maildir", raws)
    config = tmp_path / "ticketmail.toml"
    config.write_text(
        '[storage]\nsqlite = "tickets.sqlite3"\n\n[[mailboxes]]\nname = "support"\nprotocol = "maildir"\n'
        'path = "Maildir"\nafter = "delete"\nbatch_size = 4\n'
    )
    proc = _fetch_cli("--json", "--config", str(config), "--batch-size", "6")
    assert proc.returncode == 1, proc.stderr  # the unparseable message failed (left in place, retried later)
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(printed) == 20
    assert sorted(line["action"] for line in printed).count("failed") == 1
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 1  # only the failed one is left
    bad = _fetch_cli("--config", str(config), "--batch-size", "0")
    assert bad.returncode == 2
    assert "--batch-size: expected a batch size (an integer >= 1), got 0" in bad.stderr
    config.write_text(config.read_text().replace("batch_size = 4", "batch_size = 0"))
    wrong = _fetch_cli("--config", str(config))
    assert wrong.returncode == 2
    assert "mailboxes[0].batch_size" in wrong.stderr
