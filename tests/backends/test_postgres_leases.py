"""Mailbox leases on a real PostgreSQL: exclusivity, fencing, takeover of a dead worker, even spread."""

from __future__ import annotations

import datetime as _dt
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from ticketmail.backends.base import ProcessedRecord
from ticketmail.backends.postgres import LeaseLostError, PostgresBackend
from ticketmail.backends.postgres_leases import LeaseManager
from ticketmail.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration

T0 = _dt.datetime(2026, 3, 1, tzinfo=_dt.timezone.utc)
BOXES = [f"box{i}" for i in range(6)]


@pytest.fixture
def backend() -> Iterator[PostgresBackend]:
    server = PostgresServer.shared()
    url = server.create_database()
    store = PostgresBackend(url, schema=f"l_{uuid.uuid4().hex[:12]}")
    yield store
    store.close()
    server.drop_database(url)


def _in_thread(fn):  # type: ignore[no-untyped-def]
    """Run ``fn`` in a fresh thread (fences are per thread, as the poller's mailbox threads are)."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return out[0]


def test_one_holder_at_a_time_and_release_frees(backend: PostgresBackend) -> None:
    with (
        LeaseManager(backend, BOXES, ttl=5, fair_share=False) as a,
        LeaseManager(backend, BOXES, ttl=5, fair_share=False) as b,
    ):
        first, second = a.lock("box0"), b.lock("box0")
        assert _in_thread(first.acquire) is True
        assert _in_thread(second.acquire) is False
        assert first.valid
        assert first.token is not None
        token = first.token
        first.release()
        assert _in_thread(second.acquire) is True
        assert second.token is not None
        assert second.token > token


def test_fenced_commit_refused_after_takeover(backend: PostgresBackend) -> None:
    a = LeaseManager(backend, BOXES, ttl=1, fair_share=False)
    b = LeaseManager(backend, BOXES, ttl=1, fair_share=False)
    try:
        lease = a.lock("box1")
        a._stop.set()  # the worker "freezes": no more heartbeats (a GC pause, a partition)

        def stale_commit() -> object:
            assert lease.acquire()
            with backend.unit_of_work() as uow:
                uow.record_processed(ProcessedRecord("box1/imap/1", "created", T0))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # wait until the other worker took the mailbox over
                if b.lock("box1").held:
                    break
                time.sleep(0.05)
            with backend.unit_of_work() as uow:
                uow.record_processed(ProcessedRecord("box1/imap/2", "created", T0))
            return "committed"

        def take_over() -> object:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if b.lock("box1").acquire():
                    return True
                time.sleep(0.1)
            return False

        results: dict[str, object] = {}
        stale = threading.Thread(target=lambda: results.setdefault("a", _capture(stale_commit)))
        stale.start()
        time.sleep(0.3)
        assert _in_thread(take_over) is True
        stale.join(30)
        assert isinstance(results["a"], LeaseLostError)
        assert backend.is_processed("box1/imap/1")  # committed while the lease was valid
        assert not backend.is_processed("box1/imap/2")  # refused: the lease had moved on
    finally:
        b.close()
        a.close()


def _capture(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except BaseException as exc:
        return exc


def test_dead_worker_is_taken_over_within_the_ttl(backend: PostgresBackend) -> None:
    dead = LeaseManager(backend, BOXES, ttl=1.5, fair_share=False)
    for name in BOXES[:3]:
        assert _in_thread(dead.lock(name).acquire)
    dead._stop.set()  # SIGKILL: no release, no more heartbeats
    alive = LeaseManager(backend, BOXES, ttl=1.5, fair_share=False)
    try:
        started = time.monotonic()
        assert _in_thread(alive.lock("box0").acquire) is False
        taken: set[str] = set()
        while len(taken) < 3 and time.monotonic() - started < 10:
            for name in BOXES[:3]:
                if name not in taken and _in_thread(alive.lock(name).acquire):
                    taken.add(name)
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        assert taken == set(BOXES[:3])
        assert elapsed < 1.5 + 1.0
    finally:
        alive.close()


def test_leases_spread_evenly_and_rebalance_when_a_worker_joins(backend: PostgresBackend) -> None:
    first = LeaseManager(backend, BOXES, ttl=1.5)
    try:
        got = [name for name in BOXES if _in_thread(first.lock(name).acquire)]
        assert got == BOXES  # alone: the whole share
        others = [LeaseManager(backend, BOXES, ttl=1.5) for _ in range(2)]
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and sum(not first.lock(n).valid for n in BOXES) < 4:
                time.sleep(0.1)
            handed = [n for n in BOXES if not first.lock(n).valid]
            assert len(handed) == 4  # three workers: two mailboxes each
            for name in handed:
                first.lock(name).release()  # what the poller does when the visit ends
            for manager in others:
                for name in handed:
                    _in_thread(manager.lock(name).acquire)
            counts = sorted(len(m.holding()) for m in (first, *others))
            assert counts == [2, 2, 2]
        finally:
            for manager in others:
                manager.close()
    finally:
        first.close()


def test_expired_lease_cannot_commit_even_when_nobody_took_it(backend: PostgresBackend) -> None:
    """A worker whose lease ran out (no heartbeat) is refused at commit, so it cannot acknowledge the mail."""
    manager = LeaseManager(backend, BOXES, ttl=1, fair_share=False)
    try:
        lease = manager.lock("box2")

        def late_commit() -> object:
            assert lease.acquire()
            manager._stop.set()  # heartbeats stop (a long pause); the lease row is left to expire
            time.sleep(1.3)
            with backend.unit_of_work() as uow:
                uow.record_processed(ProcessedRecord("box2/imap/1", "created", T0))
            return "committed"

        result = _in_thread(late_commit)
        assert isinstance(result, LeaseLostError), f"an expired lease must refuse the commit, got {result!r}"
        assert result.code == "lease_lost"
        assert not backend.is_processed("box2/imap/1"), "the refused unit must leave nothing behind"
    finally:
        manager.close()


def test_lease_ttl_default_comes_from_the_backend() -> None:
    server = PostgresServer.shared()
    url = server.create_database()
    store = PostgresBackend(url, schema=f"l_{uuid.uuid4().hex[:12]}", lease_ttl=7.5)
    try:
        with store.lease_manager(BOXES) as manager:
            assert manager.ttl == 7.5
        with store.lease_manager(BOXES, ttl=3) as manager:
            assert manager.ttl == 3.0
    finally:
        store.close()
        server.drop_database(url)
