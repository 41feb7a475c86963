"""Retries inside the PostgreSQL backend against a real server: a real deadlock is replayed away.

Two units of work lock two tickets in opposite order. PostgreSQL aborts one of them (SQLSTATE 40P01); the
backend rolls that unit back, begins again and replays its calls, so the caller never sees the deadlock:
both units commit, the replayed one exactly once (one ticket, one entry, one ledger row).
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from ticketmail.backends._pg_unit import PgUnitOfWork
from ticketmail.backends.base import AuditRecord, NewEntry, NewTicket, ProcessedRecord, TicketNumberTakenError
from ticketmail.backends.postgres import BackendConflictError, PostgresBackend
from ticketmail.backends.postgres_schema import RetryableError
from ticketmail.model import Address
from ticketmail.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration

T0 = _dt.datetime(2026, 3, 1, 9, 0, tzinfo=_dt.timezone.utc)
ALICE = Address("alice@example.org", "Alice")


@pytest.fixture
def backend() -> Iterator[PostgresBackend]:
    server = PostgresServer.shared()
    url = server.create_database()
    store = PostgresBackend(url, schema=f"r_{uuid.uuid4().hex[:12]}", pool_size=3)
    yield store
    store.close()
    server.drop_database(url)


def _ticket(number: str) -> NewTicket:
    return NewTicket(number=number, subject=f"Subject {number}", requester=ALICE, created=T0)


def test_deadlock_is_replayed_once_and_leaves_exactly_one_ticket(backend: PostgresBackend) -> None:
    with backend.unit_of_work() as uow:
        uow.create_ticket(_ticket("LOCKA001"))
        uow.create_ticket(_ticket("LOCKB001"))
    holding = threading.Barrier(2, timeout=30)
    units: dict[str, PgUnitOfWork] = {}
    errors: list[BaseException] = []

    def message() -> None:
        """A new conversation that also touches A, then B (it waits first, so it is the victim)."""
        with backend.unit_of_work() as uow:
            units["message"] = uow
            uow.create_ticket(_ticket("NEWT0001"))
            entry = uow.append_entry("NEWT0001", NewEntry("message", ALICE, "hello", T0, message_id="m1@x"))
            uow.add_participant("LOCKA001", "one@example.org")  # holds A
            holding.wait()
            uow.add_participant("LOCKB001", "one@example.org")  # waits for B: deadlock
            uow.record_processed(ProcessedRecord("box/imap/1", "created", T0, "NEWT0001", entry.id, "m1@x"))

    def other() -> None:
        with backend.unit_of_work() as uow:
            units["other"] = uow
            uow.add_participant("LOCKB001", "two@example.org")  # holds B
            holding.wait()
            time.sleep(0.3)  # the message unit waits first; PostgreSQL's deadlock check then picks it
            uow.add_participant("LOCKA001", "two@example.org")

    def run(fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in (message, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, f"the deadlock reached the caller: {errors!r}"
    attempts = {name: unit.attempts for name, unit in units.items()}
    assert sorted(attempts.values()) == [1, 2], f"exactly one unit should have been replayed once, got {attempts}"
    numbers = [t.number for t in backend.list_tickets()]
    assert numbers.count("NEWT0001") == 1, f"the replayed unit must leave exactly one ticket, got {numbers}"
    assert len(numbers) == 3, numbers
    thread_entries = backend.entries("NEWT0001")
    assert [e.message_id for e in thread_entries] == ["m1@x"], thread_entries
    new = backend.get_ticket("NEWT0001")
    assert new is not None
    assert new.entry_count == 1, new
    assert backend.is_processed("box/imap/1")
    for number in ("LOCKA001", "LOCKB001"):
        ticket = backend.get_ticket(number)
        assert ticket is not None
        assert sorted(ticket.participants) == ["one@example.org", "two@example.org"], ticket


def test_a_replay_that_would_answer_differently_gives_up_without_committing(backend: PostgresBackend) -> None:
    """If a concurrent commit changed what the unit already read, the replay refuses (a transient error)."""

    def other_worker() -> None:
        with backend.unit_of_work() as uow:
            uow.create_ticket(_ticket("RACE0001"))

    def unit() -> None:
        with backend.unit_of_work() as uow:
            assert uow.ticket_by_number("RACE0001") is None
            worker = threading.Thread(target=other_worker)
            worker.start()
            worker.join(30)
            uow.record_processed(ProcessedRecord("box/imap/9", "ignored", T0))
            assert isinstance(uow, PgUnitOfWork)
            uow._restart(RetryableError("40001", "serialization failure"))  # what a 40001/40P01 statement triggers

    with pytest.raises(BackendConflictError, match="ticket_by"):
        unit()
    assert not backend.is_processed("box/imap/9"), "nothing of the refused unit may be committed"
    assert backend.get_ticket("RACE0001") is not None


def _audit(action: str, ticket: str | None) -> AuditRecord:
    return AuditRecord(at=T0, action=action, message_id=None, provenance=None, ticket=ticket, reasons=())


def test_held_ledger_and_audit_rows_are_read_back_written_once_and_survive_a_replay(backend: PostgresBackend) -> None:
    first = ProcessedRecord("INBOX/imap/1", "created", T0, "H-1")
    second = ProcessedRecord("dup/<a@x>", "created", T0, "H-1")
    with backend.unit_of_work() as uow:
        uow.create_ticket(_ticket("H-1"))
        assert uow.processed_many([first.key, second.key]) == (None, None)
        uow.record_processed(first)
        uow.record_processed(second)
        uow.record_audit(_audit("created", "H-1"))
        assert uow.processed(first.key) == first  # the held row is sent before the ledger is read
        uow.record_processed(first)  # identical again: no-op, not a duplicate key at the commit
        with pytest.raises(TicketNumberTakenError):
            uow.create_ticket(_ticket("H-1"))  # a failed statement: the unit is replayed before going on
        uow.record_audit(_audit("ignored", None))
    assert backend.is_processed(first.key)
    assert backend.is_processed(second.key)
    assert [record.action for record in backend.audit_log()] == ["created", "ignored"]
