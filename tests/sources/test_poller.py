"""Poller logic against fake sources and a scripted pipeline (the real-server tests are in test_e2e*.py)."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticketmail.errors import BackendError, ConfigError, SourceError
from ticketmail.model import MailboxContext, Provenance
from ticketmail.pipeline import Outcome
from ticketmail.sources.base import RawItem
from ticketmail.sources.health import HealthEvent, read_health
from ticketmail.sources.poller import Backoff, Poller, PollTarget

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0
        self.lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += dt.timedelta(seconds=seconds)


class FakeSession:
    def __init__(self, source: FakeSource) -> None:
        self.source = source

    def fetch(self, *, limit: int | None = None) -> Iterator[RawItem]:
        src = self.source
        if src.fail_fetch is not None:
            raise src.fail_fetch
        n = 0
        for key in list(src.messages):
            if limit is not None and n >= limit:
                return
            if key in src.quarantined:
                continue
            n += 1
            src.fetched.append(key)
            yield RawItem(data=src.messages[key], provenance=Provenance(src.name, "fake", key))

    def acknowledge(self, item: RawItem) -> None:
        src = self.source
        if src.fail_ack:
            raise SourceError("connection lost", stage="ack")
        src.messages.pop(item.provenance.key)
        src.acked.append(item.provenance.key)

    def release(self, item: RawItem, *, failed: bool) -> None:
        self.source.released.append((item.provenance.key, failed))
        if failed:
            n = self.source.failures.get(item.provenance.key, 0) + 1
            self.source.failures[item.provenance.key] = n
            if n >= 3:
                self.source.quarantined.add(item.provenance.key)

    def pending(self) -> int:
        return len([k for k in self.source.messages if k not in self.source.quarantined])


class WaitingSession(FakeSession):
    def wait_for_changes(self, timeout: float) -> bool:
        self.source.waits += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.source.pending_arrivals:
                self.source.messages.update(self.source.pending_arrivals)
                self.source.pending_arrivals.clear()
                return True
            time.sleep(0.01)
        return False


class FakeSource:
    def __init__(self, name: str, count: int = 0, *, waitable: bool = False) -> None:
        self.name = name
        self.messages: dict[str, bytes] = {f"{i:04d}": f"Subject: {name} {i}\n\nbody\n".encode() for i in range(count)}
        self.acked: list[str] = []
        self.fetched: list[str] = []
        self.released: list[tuple[str, bool]] = []
        self.failures: dict[str, int] = {}
        self.quarantined: set[str] = set()
        self.fail_connect: Exception | None = None
        self.fail_fetch: Exception | None = None
        self.fail_ack = False
        self.sessions = 0
        self.waitable = waitable
        self.waits = 0
        self.pending_arrivals: dict[str, bytes] = {}

    @contextmanager
    def session(self) -> Iterator[FakeSession]:
        if self.fail_connect is not None:
            raise self.fail_connect
        self.sessions += 1
        yield WaitingSession(self) if self.waitable else FakeSession(self)


class FakePipeline:
    """Scripted: bodies containing FAIL fail, BACKEND raise BackendError, BOOM raise RuntimeError."""

    def __init__(self, clock: FakeClock | None = None, cost: float = 0.0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.clock = clock
        self.cost = cost
        self.backend_down = False

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        if self.clock is not None:
            self.clock.advance(self.cost)
        if self.backend_down or b"BACKEND" in raw:
            raise BackendError("database is locked")
        if b"BOOM" in raw:
            raise RuntimeError("bug")
        self.calls.append((provenance.mailbox, provenance.key))
        if b"FAIL" in raw:
            return Outcome("failed", provenance=provenance)
        return Outcome("created", ticket="T1", provenance=provenance)

    def is_processed(self, provenance: Provenance) -> bool:
        return False


def make_poller(targets: list[PollTarget], pipeline: Any, **kw: Any) -> Poller:
    kw.setdefault("clock", FakeClock())
    return Poller(targets, pipeline, **kw)


def test_poll_once_processes_and_acknowledges_everything() -> None:
    src = FakeSource("a", 5)
    report = make_poller([PollTarget("a", src)], FakePipeline()).poll_once()
    run = report.run("a")
    assert run.status == "ok"
    assert (run.fetched, run.acknowledged, run.failed) == (5, 5, 0)
    assert run.actions == (("created", 5),)
    assert src.messages == {}
    assert src.acked == [f"{i:04d}" for i in range(5)]
    assert report.ok


def test_failed_outcome_is_released_not_acknowledged() -> None:
    src = FakeSource("a", 3)
    src.messages["0001"] = b"Subject: x\n\nFAIL\n"
    poller = make_poller([PollTarget("a", src)], FakePipeline())
    run = poller.poll_once().run("a")
    assert run.acknowledged == 2
    assert run.failed == 1
    assert "0001" in src.messages
    assert ("0001", True) in src.released
    assert poller.health.get("a").last_failed == 1


def test_backend_error_stops_the_mailbox_without_acknowledging_but_others_continue() -> None:
    a = FakeSource("a", 4)
    a.messages["0002"] = b"Subject: x\n\nBACKEND\n"
    b = FakeSource("b", 2)
    pipeline = FakePipeline()
    poller = make_poller([PollTarget("a", a), PollTarget("b", b)], pipeline)
    report = poller.poll_once()
    run_a = report.run("a")
    assert run_a.status == "error"
    assert isinstance(run_a.error, BackendError)
    assert run_a.stopped == "backend"
    assert a.acked == ["0000", "0001"]
    assert ("0002", False) in a.released  # not counted as a message failure
    assert "0003" not in a.fetched  # the visit stopped at once
    assert report.run("b").acknowledged == 2
    health = poller.health.get("a")
    assert health.reachable is True  # storage failure: the mailbox itself is fine
    assert health.last_error is not None
    assert health.last_error.stage == "backend"


def test_unexpected_pipeline_exception_counts_against_the_message() -> None:
    src = FakeSource("a", 2)
    src.messages["0000"] = b"Subject: x\n\nBOOM\n"
    run = make_poller([PollTarget("a", src)], FakePipeline()).poll_once().run("a")
    assert run.status == "ok"
    assert run.failed == 1
    assert run.acknowledged == 1
    assert dict(run.actions) == {"error": 1, "created": 1}


@pytest.mark.parametrize(
    ("stage", "message"),
    [("auth", "authentication failed"), ("connect", "connection refused"), ("dns", "no such host")],
)
def test_one_failing_mailbox_never_stops_the_others(stage: str, message: str) -> None:
    bad = FakeSource("bad", 3)
    bad.fail_connect = SourceError(message, stage=stage)
    good = FakeSource("good", 3)
    events: list[HealthEvent] = []
    poller = make_poller([PollTarget("bad", bad), PollTarget("good", good)], FakePipeline(), events=[events.append])
    report = poller.poll_once()
    assert report.run("bad").status == "error"
    assert report.run("good").acknowledged == 3
    assert not report.ok
    health = poller.health.get("bad")
    assert health.reachable is False
    assert health.last_error is not None
    assert (health.last_error.stage, health.last_error.message) == (stage, message)
    assert health.consecutive_failures == 1
    assert [(e.kind, e.mailbox) for e in events] == [("unreachable", "bad")]


def test_adapter_bug_is_contained() -> None:
    bad = FakeSource("bad", 1)
    bad.fail_fetch = KeyError("secret-password")
    good = FakeSource("good", 1)
    report = make_poller([PollTarget("bad", bad), PollTarget("good", good)], FakePipeline()).poll_once()
    run = report.run("bad")
    assert run.status == "error"
    assert isinstance(run.error, SourceError)
    assert "secret-password" not in run.error.message
    assert report.run("good").acknowledged == 1


def test_message_cap_bounds_a_visit() -> None:
    src = FakeSource("a", 25)
    poller = make_poller([PollTarget("a", src, max_messages=10)], FakePipeline())
    run = poller.poll_once().run("a")
    assert run.acknowledged == 10
    assert run.stopped == "cap"
    assert run.waiting == 15
    assert poller.health.get("a").waiting == 15


def test_time_budget_bounds_a_visit_so_others_are_served() -> None:
    clock = FakeClock()
    big = FakeSource("big", 1000)
    small = FakeSource("small", 2)
    pipeline = FakePipeline(clock, cost=1.0)
    poller = make_poller(
        [PollTarget("big", big, max_messages=None, time_budget=30), PollTarget("small", small)], pipeline, clock=clock
    )
    report = poller.poll_once()
    assert report.run("big").stopped == "budget"
    assert 29 <= report.run("big").acknowledged <= 31
    assert report.run("small").acknowledged == 2
    # the item fetched past the budget was released untouched, not counted as failed
    assert big.released[-1][1] is False


def test_bounded_retries_then_quarantine_by_the_source() -> None:
    src = FakeSource("a", 1)
    src.messages["0000"] = b"Subject: x\n\nFAIL\n"
    poller = make_poller([PollTarget("a", src)], FakePipeline())
    for _ in range(5):
        poller.poll_once()
    assert src.failures["0000"] == 3  # three attempts, then the source quarantined it
    assert src.quarantined == {"0000"}


def test_acknowledge_failure_is_a_mailbox_error_and_item_is_redelivered() -> None:
    src = FakeSource("a", 2)
    src.fail_ack = True
    poller = make_poller([PollTarget("a", src)], FakePipeline())
    run = poller.poll_once().run("a")
    assert run.status == "error"
    assert isinstance(run.error, SourceError)
    assert run.error.stage == "ack"
    src.fail_ack = False
    run = poller.poll_once().run("a")
    assert run.acknowledged == 2  # the pipeline's ledger makes the second processing a duplicate


def test_disabled_mailbox_is_skipped() -> None:
    src = FakeSource("a", 2)
    run = make_poller([PollTarget("a", src, enabled=False)], FakePipeline()).poll_once().run("a")
    assert run.status == "disabled"
    assert src.sessions == 0


def test_busy_when_another_process_holds_the_lock(tmp_path: Any) -> None:
    src = FakeSource("a", 2)
    poller = make_poller([PollTarget("a", src)], FakePipeline(), state=tmp_path)
    other = make_poller([PollTarget("a", FakeSource("a"))], FakePipeline(), state=tmp_path)
    assert other._locks["a"].acquire()
    try:
        assert poller.poll_once().run("a").status == "busy"
        assert src.sessions == 0
    finally:
        other._locks["a"].release()
    assert poller.poll_once().run("a").acknowledged == 2


def test_health_is_persisted_for_another_process(tmp_path: Any) -> None:
    bad = FakeSource("bad")
    bad.fail_connect = SourceError("TLS handshake failed: certificate verify failed", stage="tls")
    poller = make_poller(
        [PollTarget("good", FakeSource("good", 1)), PollTarget("bad", bad)], FakePipeline(), state=tmp_path
    )
    poller.poll_once()
    poller.poll_once()
    records = read_health(tmp_path / "health.json")
    assert records["good"].state == "ok"
    assert records["good"].last_success == T0
    assert records["bad"].state == "unreachable"
    assert records["bad"].consecutive_failures == 2
    assert records["bad"].last_error is not None
    assert records["bad"].last_error.stage == "tls"


def test_recovery_event_after_unreachable() -> None:
    src = FakeSource("a", 1)
    src.fail_connect = SourceError("refused", stage="connect")
    events: list[HealthEvent] = []
    poller = make_poller([PollTarget("a", src)], FakePipeline(), events=[events.append])
    poller.poll_once()
    poller.poll_once()  # still down: no second event
    src.fail_connect = None
    poller.poll_once()
    assert [e.kind for e in events] == ["unreachable", "recovered"]
    assert events[1].health.consecutive_failures == 0


def test_raising_listener_does_not_break_polling() -> None:
    src = FakeSource("a", 1)
    src.fail_connect = SourceError("refused", stage="connect")

    def listener(event: HealthEvent) -> None:
        raise RuntimeError("pager down")

    other = FakeSource("b", 1)
    report = make_poller([PollTarget("a", src), PollTarget("b", other)], FakePipeline(), events=[listener]).poll_once()
    assert report.run("b").acknowledged == 1


def test_on_outcome_receives_each_item() -> None:
    seen: list[tuple[str, str, str]] = []
    src = FakeSource("a", 3)
    poller = make_poller(
        [PollTarget("a", src)],
        FakePipeline(),
        on_outcome=lambda n, item, o: seen.append((n, item.provenance.key, o.action)),
    )
    poller.poll_once()
    assert seen == [("a", "0000", "created"), ("a", "0001", "created"), ("a", "0002", "created")]


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ConfigError, match="unique"):
        make_poller([PollTarget("a", FakeSource("a")), PollTarget("a", FakeSource("a"))], FakePipeline())


def test_invalid_target_values_name_the_field() -> None:
    with pytest.raises(ConfigError, match="time_budget"):
        PollTarget("a", FakeSource("a"), time_budget=0)


# -- backoff --------------------------------------------------------------------------------------------


@given(failures=st.integers(min_value=1, max_value=10_000), seed=st.integers())
def test_backoff_is_bounded_and_jittered(failures: int, seed: int) -> None:
    backoff = Backoff(base=2, cap=600, jitter=0.5)
    delay = backoff.delay(failures, random.Random(seed))
    nominal = backoff.nominal(failures)
    assert nominal <= 600
    assert nominal / 2 <= delay <= nominal


def test_backoff_grows_exponentially() -> None:
    backoff = Backoff(base=5, cap=900)
    assert [backoff.nominal(n) for n in range(0, 6)] == [0, 5, 10, 20, 40, 80]
    assert backoff.nominal(100) == 900


# -- run() ------------------------------------------------------------------------------------------------


def test_run_polls_each_mailbox_on_its_interval_and_stops() -> None:
    clock = FakeClock()
    a = FakeSource("a", 2)
    poller: Poller

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        time.sleep(0.001)
        if clock() - T0 > dt.timedelta(seconds=650):
            poller.stop()

    poller = Poller([PollTarget("a", a, interval=300)], FakePipeline(), clock=clock, sleep=sleep)
    thread = threading.Thread(target=poller.run)
    thread.start()
    a.messages["new"] = b"Subject: later\n\nx\n"
    thread.join(10)
    assert not thread.is_alive()
    assert a.sessions >= 2
    assert a.messages == {}


def test_run_backs_off_on_errors_with_growing_delays() -> None:
    clock = FakeClock()
    a = FakeSource("a")
    a.fail_connect = SourceError("refused", stage="connect")
    delays: list[float] = []
    poller: Poller

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        delays.append(seconds)
        if len(delays) > 200:
            poller.stop()

    poller = Poller(
        [PollTarget("a", a, interval=60)],
        FakePipeline(),
        clock=clock,
        sleep=sleep,
        backoff=Backoff(base=4, cap=64, jitter=0.0),
    )
    poller.run()
    attempts = poller.health.get("a").consecutive_failures
    assert attempts >= 5
    # 4 + 8 + 16 + 32 + 64 ... seconds between attempts (slept in slices of at most 1s)
    assert sum(delays) >= 4 + 8 + 16 + 32


def test_run_uses_wait_for_changes_when_idle_is_enabled() -> None:
    a = FakeSource("a", 1, waitable=True)
    poller = Poller([PollTarget("a", a, idle=True, interval=30)], FakePipeline())
    thread = threading.Thread(target=poller.run, kwargs={"idle_slice": 0.05})
    thread.start()
    deadline = time.monotonic() + 5
    while a.messages and time.monotonic() < deadline:
        time.sleep(0.01)
    a.pending_arrivals["pushed"] = b"Subject: pushed\n\nx\n"
    while "pushed" not in a.acked and time.monotonic() < deadline:
        time.sleep(0.01)
    poller.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert "pushed" in a.acked
    assert a.sessions == 1  # one connection kept open under IDLE
    assert a.waits >= 1


def test_run_stops_on_sigterm_handler() -> None:
    import os
    import signal

    a = FakeSource("a", 1)
    poller = Poller([PollTarget("a", a, interval=3600)], FakePipeline())
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    poller.run(handle_signals=True)
    assert time.monotonic() - started < 5
    assert a.messages == {}
    assert signal.getsignal(signal.SIGTERM) is before


@settings(max_examples=30, deadline=None)
@given(
    script=st.lists(st.sampled_from(["ok", "FAIL", "BACKEND", "BOOM"]), min_size=0, max_size=30),
    cap=st.integers(min_value=1, max_value=40),
)
def test_every_item_is_either_acknowledged_once_or_left(script: list[str], cap: int) -> None:
    src = FakeSource("a")
    for i, kind in enumerate(script):
        src.messages[f"{i:04d}"] = f"Subject: {i}\n\n{kind}\n".encode()
    original = dict(src.messages)
    poller = make_poller([PollTarget("a", src, max_messages=cap)], FakePipeline())
    for _ in range(3):
        poller.poll_once()
    assert len(src.acked) == len(set(src.acked))
    for key, body in original.items():
        if key in src.acked:
            assert b"ok" in body
        else:
            assert key in src.messages


def test_unusable_state_dir_is_reported_not_raised(tmp_path: Any) -> None:
    state = tmp_path / "state"
    state.write_text("a file where the state directory should be")
    a, b = FakeSource("a", 1), FakeSource("b", 1)
    report = make_poller([PollTarget("a", a), PollTarget("b", b)], FakePipeline(), state=state).poll_once()
    assert [run.status for run in report.runs] == ["error", "error"]
    assert all(isinstance(run.error, SourceError) and run.error.stage == "lock" for run in report.runs)


def test_unwritable_health_file_does_not_stop_fetching(tmp_path: Any) -> None:
    (tmp_path / "health.json").mkdir()  # os.replace onto a directory fails
    src = FakeSource("a", 2)
    poller = make_poller([PollTarget("a", src)], FakePipeline(), state=tmp_path)
    run = poller.poll_once().run("a")
    assert run.acknowledged == 2
    assert poller.health.get("a").state == "ok"  # kept in memory


class BarrierSource(FakeSource):
    def __init__(self, name: str, barrier: threading.Barrier) -> None:
        super().__init__(name, 1)
        self.barrier = barrier

    @contextmanager
    def session(self) -> Iterator[FakeSession]:
        self.barrier.wait()  # only passes when both mailboxes are being visited at the same time
        with super().session() as session:
            yield session


def test_poll_once_with_concurrency_visits_mailboxes_in_parallel_and_keeps_order() -> None:
    barrier = threading.Barrier(2, timeout=10)
    a, b = BarrierSource("a", barrier), BarrierSource("b", barrier)
    report = make_poller([PollTarget("a", a), PollTarget("b", b)], FakePipeline()).poll_once(concurrency=2)
    assert [run.name for run in report.runs] == ["a", "b"]
    assert [run.acknowledged for run in report.runs] == [1, 1]
    with pytest.raises(ConfigError, match="concurrency"):
        make_poller([], FakePipeline()).poll_once(concurrency=0)


def test_run_stops_retrying_a_mailbox_whose_refresh_token_was_revoked() -> None:
    from ticketmail.errors import OAuthError

    clock = FakeClock()
    a = FakeSource("a")
    a.fail_connect = OAuthError("the refresh token was revoked: log in again", reason="invalid_grant", mailbox="a")
    b = FakeSource("b", 1)
    sleeps: list[float] = []
    poller: Poller

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        sleeps.append(seconds)
        if b.sessions >= 3:
            poller.stop()

    poller = Poller(
        [PollTarget("a", a, interval=60), PollTarget("b", b, interval=60)],
        FakePipeline(),
        clock=clock,
        sleep=sleep,
        backoff=Backoff(base=4, cap=64, jitter=0.0),
    )
    thread = threading.Thread(target=poller.run)
    thread.start()
    thread.join(10)
    poller.stop()
    thread.join(5)
    assert not thread.is_alive()
    health = poller.health.get("a")
    assert health.consecutive_failures == 1  # tried once, not again
    assert health.last_error is not None
    assert health.last_error.code == "oauth_error"
    assert health.last_error.retryable is False
    assert "not retried" in health.last_error.message
    assert "log in again" in health.last_error.message
    assert health.to_dict()["last_error"]["retryable"] is False
    assert b.sessions >= 3  # the other mailbox goes on


def test_run_backs_off_and_retries_an_unreachable_token_endpoint() -> None:
    from ticketmail.errors import OAuthError

    clock = FakeClock()
    a = FakeSource("a")
    a.fail_connect = OAuthError("the token endpoint did not answer", reason="unreachable", mailbox="a")
    delays: list[float] = []
    poller: Poller

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        delays.append(seconds)
        if len(delays) > 100:
            poller.stop()

    poller = Poller([PollTarget("a", a)], FakePipeline(), clock=clock, sleep=sleep, backoff=Backoff(base=4, jitter=0))
    poller.run()
    health = poller.health.get("a")
    assert health.consecutive_failures >= 3
    assert health.last_error is not None
    assert health.last_error.retryable is True


@pytest.mark.parametrize(
    ("reason", "retryable"),
    [
        ("unreachable", True),
        ("server", True),
        ("store", True),
        ("invalid_grant", False),
        ("invalid_client", False),
        ("consent", False),
        ("no_token", False),
        ("something_new", True),
    ],
)
def test_oauth_errors_are_retryable_by_reason(reason: str, retryable: bool) -> None:
    from ticketmail.errors import OAuthError
    from ticketmail.sources._retry import is_retryable

    assert is_retryable(OAuthError("x", reason=reason)) is retryable
    assert is_retryable(SourceError("refused", stage="connect")) is True
    assert is_retryable(ConfigError("bad")) is False
