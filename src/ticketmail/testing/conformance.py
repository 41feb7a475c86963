"""The backend conformance suite: run it against your backend to know it keeps ticketmail's promises.

Usage (in your test suite; needs `pytest` and `hypothesis`)::

    from ticketmail.testing.conformance import BackendConformance

    class TestMyBackend(BackendConformance):
        def make_backend(self, directory):          # a fresh, empty store each call
            return MyBackend(dsn=..., schema=f"t_{directory.name}")

pytest collects every `test_*` method of `BackendConformance` for your subclass. They check the
contract written down in `ticketmail.backends.base`:

* a unit of work commits as a whole or not at all: an exception raised inside it, at *any* write, leaves
  no partial ticket, no ledger row, no audit row (`BackendConformance.test_failure_at_every_write()`);
* the ledger is idempotent for identical records and refuses conflicting ones;
* attachments are stored once per sha256 and read back intact;
* message ids are found inbound and outbound, with or without angle brackets;
* merges refuse cycles and missing targets; numbers are unique; datetimes come back as aware UTC;
* custom field values round-trip as the same JSON types (a number stays a number, a boolean a boolean, a
  choice `{"key", "label"}`, datetimes ISO 8601 text with offset), in order, through every reader.

`BackendConformance.test_state_machine()` then drives random sequences of units of work (new mails,
replies by message id and by number, outbound ids, redeliveries, merges, status changes, participants,
quarantine) against the backend under test *and* the reference model (`InMemoryBackend`), injecting
a failure at a random write of some units, and asserts after every step that both hold the same state and
that a failed unit changed nothing (the shape hypothesis's own database tests use).

Failures explain themselves: every check states the values it compared (pytest's assertion rewriting is
registered for these modules by ticketmail's pytest plugin and below), and the state machine names the first
part of the store (tickets, threads, ledger...) where the backend and the model differ. The stateful test
runs without a per-example deadline (`SLOW_BACKEND_SETTINGS`), so a backend over a network database is
never failed for being slow; override `BackendConformance.state_machine_settings` to change it.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import pathlib
from collections.abc import Iterator
from typing import ClassVar, cast

import attrs
import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

# Before the imports below: their asserts report the values compared under pytest, like a test module's.
pytest.register_assert_rewrite(
    "ticketmail.testing._conformance_support",
    "ticketmail.testing._conformance_records",
    "ticketmail.testing._conformance_machine",
)

from ticketmail.backends.base import (  # noqa: E402
    Backend,
    InvalidMergeError,
    LedgerConflictError,
    ProcessedRecord,
    QuarantineRecord,
    TicketNotFoundError,
    TicketNumberTakenError,
    UnitOfWork,
    follow_merges,
    processed_many,
)
from ticketmail.errors import BackendError  # noqa: E402
from ticketmail.testing._conformance_machine import (  # noqa: E402
    SLOW_BACKEND_SETTINGS,
    BackendStateMachine,
    scratch_directory,
    state_machine_for,
)
from ticketmail.testing._conformance_records import RecordChecks  # noqa: E402
from ticketmail.testing._conformance_support import (  # noqa: E402
    ALICE,
    BOB,
    PDF,
    PDF_AGAIN,
    PNG,
    PROV,
    T0,
    WRITE_METHODS,
    FaultInjectingUnit,
    InjectedFault,
    check_consistency,
    describe_difference,
    new_entry,
    new_ticket,
    open_message,
    snapshot,
)
from ticketmail.tokens import SigningKey, make_message_id  # noqa: E402

__all__ = [
    "SLOW_BACKEND_SETTINGS",
    "WRITE_METHODS",
    "BackendConformance",
    "BackendStateMachine",
    "FaultInjectingUnit",
    "InjectedFault",
    "check_consistency",
    "describe_difference",
    "scratch_directory",
    "snapshot",
    "state_machine_for",
]


class BackendConformance(RecordChecks):
    """Subclass this in a test module and implement `make_backend()`; pytest runs every check.

    Override `state_machine_settings` to change how hard the stateful test works. The default has no
    per-example deadline and does not fail on slow data generation: a backend over a network database
    (PostgreSQL, a SQLAlchemy engine) is slower per step than the 200 ms Hypothesis allows by default, and
    that is not a conformance failure.
    """

    state_machine_settings: ClassVar[settings | None] = None

    def make_backend(self, directory: pathlib.Path) -> Backend:
        """A new, empty backend whose files (if any) live in `directory`."""
        raise NotImplementedError("subclasses of BackendConformance implement make_backend(directory)")

    @pytest.fixture
    def backend(self, tmp_path: pathlib.Path) -> Iterator[Backend]:
        """A fresh backend for one test, closed afterwards."""
        store = self.make_backend(tmp_path)
        try:
            yield store
        finally:
            store.close()

    # -- units of work --

    def test_protocols(self, backend: Backend) -> None:
        """The backend and its units of work satisfy the runtime-checkable protocols."""
        assert isinstance(backend, Backend)
        with backend.unit_of_work() as uow:
            assert isinstance(uow, UnitOfWork)

    def test_create_and_read_back(self, backend: Backend) -> None:
        """A committed ticket reads back equal, inside and outside a unit of work."""
        with backend.unit_of_work() as uow:
            entry = open_message(uow, "AB12CD34", "<first@example.org>", "k1")
            inside = uow.ticket_by_number("AB12CD34")
            assert uow.number_exists("AB12CD34")
        ticket = backend.get_ticket("AB12CD34")
        assert ticket == inside
        assert ticket is not None
        assert ticket.status == "open"
        assert ticket.tags == ("billing",)
        assert ticket.custom_fields == (("order", "42"),)
        assert ticket.requester == ALICE
        assert ticket.entry_count == 1
        assert ticket.created == T0 and ticket.updated == T0
        assert [t.number for t in backend.list_tickets()] == ["AB12CD34"]
        (stored,) = backend.entries("AB12CD34")
        assert stored == entry
        assert stored.message_id == "first@example.org"
        assert stored.attachments == (PDF.sha256, PNG.sha256)
        assert [f.filename for f in stored.files] == ["report.pdf", "logo.png"]
        assert stored.files[1].disposition == "inline" and stored.files[1].content_id == "c1"
        assert backend.attachment(PNG.sha256) == PNG.data
        assert backend.attachment("0" * 64) is None
        assert backend.get_ticket("nope") is None
        assert list(backend.entries("nope")) == []

    def test_reads_see_own_writes(self, backend: Backend) -> None:
        """Inside a unit, lookups see the unit's earlier writes."""
        with backend.unit_of_work() as uow:
            assert uow.ticket_by_message_id("m@x") is None
            open_message(uow, "T1000", "m@x", "k")
            found = uow.ticket_by_message_id("<m@x>")
            assert found is not None and found.number == "T1000"
            assert uow.processed("k") is not None

    def test_exception_rolls_back_everything(self, backend: Backend) -> None:
        """A unit that raises leaves no ticket, entry, attachment, ledger, message id or audit row."""
        before = snapshot(backend, keys=["k1"], message_ids=["m1@x"])
        with pytest.raises(RuntimeError, match="boom"), backend.unit_of_work() as uow:
            open_message(uow, "T2000", "m1@x", "k1")
            uow.quarantine(QuarantineRecord(T0, b"raw", "c", "r", PROV))
            raise RuntimeError("boom")
        assert snapshot(backend, keys=["k1"], message_ids=["m1@x"]) == before
        assert backend.attachment(PDF.sha256) is None
        assert backend.get_ticket("T2000") is None

    def test_failure_at_every_write(self, backend: Backend) -> None:
        """Inject a failure before and after each write of a full message; each time nothing remains."""
        with backend.unit_of_work() as uow:
            open_message(uow, "BASE0001", "base@x", "base")
        keys, mids = ["base", "k1"], ["base@x", "m1@x", "out@x"]

        def message(uow: UnitOfWork) -> None:
            target = uow.ticket_by_message_id("base@x")
            assert target is not None
            uow.set_status(target.number, "closed", at=T0)
            uow.add_participant(target.number, BOB.email)
            uow.record_message_id(target.number, "out@x", "outbound")
            open_message(uow, "T3000", "m1@x", "k1", at=T0 + _dt.timedelta(minutes=1))
            uow.quarantine(QuarantineRecord(T0, b"raw", "c", "r", PROV))

        # Count the writes by running the message once and rolling it back.
        with pytest.raises(InjectedFault), backend.unit_of_work() as uow:
            counter = FaultInjectingUnit(uow)
            message(cast(UnitOfWork, counter))
            raise InjectedFault("count only")
        writes = counter.writes
        assert writes >= 8
        before = snapshot(backend, keys=keys, message_ids=mids)
        for fail_at, after in itertools.product(range(writes), (False, True)):
            with pytest.raises(InjectedFault), backend.unit_of_work() as uow:
                message(cast(UnitOfWork, FaultInjectingUnit(uow, fail_at, after=after)))
            assert snapshot(backend, keys=keys, message_ids=mids) == before, (fail_at, after)
        with backend.unit_of_work() as uow:
            message(uow)
        assert snapshot(backend, keys=keys, message_ids=mids) != before

    def test_backend_error_inside_unit_rolls_back(self, backend: Backend) -> None:
        """A ticketmail error raised by the backend itself also rolls back the unit's earlier writes."""
        with pytest.raises(TicketNotFoundError), backend.unit_of_work() as uow:
            open_message(uow, "T4000", "m4@x", "k4")
            uow.append_entry("missing", new_entry("other@x"))
        assert backend.get_ticket("T4000") is None
        with backend.unit_of_work() as uow:
            assert uow.processed("k4") is None

    def test_unit_is_unusable_after_exit(self, backend: Backend) -> None:
        """Using a unit of work after its block ended is an error, not a silent write."""
        with backend.unit_of_work() as uow:
            pass
        with pytest.raises(BackendError):
            uow.create_ticket(new_ticket("LATE0001"))
        assert backend.get_ticket("LATE0001") is None

    # -- ledger --

    def test_ledger_is_idempotent(self, backend: Backend) -> None:
        """The same ledger record twice is fine; another effect for the same key is refused."""
        record = ProcessedRecord("imap/support/7:42", "ignored", T0, None, None, "m@x")
        with backend.unit_of_work() as uow:
            uow.record_processed(record)
            uow.record_processed(record)
        with backend.unit_of_work() as uow:
            assert uow.processed(record.key) == record
            uow.record_processed(record)
        with pytest.raises(LedgerConflictError), backend.unit_of_work() as uow:
            uow.record_processed(attrs.evolve(record, action="created"))
        with backend.unit_of_work() as uow:
            assert uow.processed(record.key) == record
            assert uow.processed("other") is None

    def test_processed_many_agrees_with_processed(self, backend: Backend) -> None:
        """`processed_many()` answers every key in order, as `processed()` would, found or not."""
        one = ProcessedRecord("imap/support/1", "created", T0, "AB12CD34", None, "a@x")
        two = ProcessedRecord("dup/a@x", "created", T0, "AB12CD34", None, "a@x")
        with backend.unit_of_work() as uow:
            uow.record_processed(one)
            uow.record_processed(two)
        keys = ("missing", two.key, one.key, "missing", one.key)
        with backend.unit_of_work() as uow:
            answers = processed_many(uow, keys)
            singles = tuple(uow.processed(key) for key in keys)
            assert answers == singles == (None, two, one, None, one), f"for keys {keys}: {answers} vs {singles}"
            assert processed_many(uow, ()) == ()
            fresh = ProcessedRecord("missing", "ignored", T0)
            uow.record_processed(fresh)  # a key found absent may be recorded in the same unit
            assert processed_many(uow, ("missing",)) == (fresh,)

    # -- numbers --

    def test_ticket_numbers_are_unique(self, backend: Backend) -> None:
        """Creating a ticket with a taken number fails (and rolls back)."""
        with backend.unit_of_work() as uow:
            uow.create_ticket(new_ticket("DUP00001"))
        with pytest.raises(TicketNumberTakenError), backend.unit_of_work() as uow:
            uow.create_ticket(new_ticket("DUP00001", requester=BOB))
        ticket = backend.get_ticket("DUP00001")
        assert ticket is not None and ticket.requester == ALICE
        assert len(backend.list_tickets()) == 1

    # -- message ids --

    def test_message_ids_inbound_and_outbound(self, backend: Backend) -> None:
        """Inbound ids (from entries) and outbound ids (signed tokens) both find their ticket."""
        key = SigningKey("k1", b"s" * 32)
        with backend.unit_of_work() as uow:
            entry = open_message(uow, "MID00001", "<in@example.org>", "k")
            out = make_message_id("MID00001", entry.id, keys=[key], domain="desk.example.org")
            uow.record_message_id("MID00001", out, "outbound")
            uow.create_ticket(new_ticket("MID00002"))
            uow.record_message_id("MID00002", "in@example.org", "inbound")  # known id: first owner keeps it
        with backend.unit_of_work() as uow:
            for mid in ("in@example.org", "<in@example.org>", " <in@example.org> ", out, out.strip("<>")):
                found = uow.ticket_by_message_id(mid)
                assert found is not None and found.number == "MID00001", mid
            assert uow.ticket_by_message_id("IN@example.org") is None  # the left part is case sensitive
            assert uow.ticket_by_message_id("unknown@x") is None
            with pytest.raises(TicketNotFoundError):
                uow.record_message_id("missing", "x@y", "outbound")

    # -- attachments --

    def test_attachments_stored_once(self, backend: Backend) -> None:
        """The same bytes under two names are one stored attachment with two references."""
        with backend.unit_of_work() as uow:
            uow.create_ticket(new_ticket("ATT00001"))
            first = uow.append_entry("ATT00001", new_entry("a1@x", attachments=(PDF,)))
            second = uow.append_entry("ATT00001", new_entry("a2@x", attachments=(PDF_AGAIN, PDF)))
        assert first.attachments == (PDF.sha256,)
        assert second.attachments == (PDF.sha256, PDF.sha256)
        assert [f.filename for f in second.files] == ["scan.pdf", "report.pdf"]
        assert backend.attachment(PDF.sha256) == PDF.data
        assert list(backend.entries("ATT00001")) == [first, second]

    # -- status and merges --

    def test_status_and_merge_rules(self, backend: Backend) -> None:
        """Close/reopen/merge work; impossible merges are refused and roll back."""
        later = T0 + _dt.timedelta(hours=1)
        with backend.unit_of_work() as uow:
            for number in ("M1", "M2", "M3"):
                uow.create_ticket(new_ticket(f"MRG0000{number}"))
            uow.set_status("MRG0000M1", "closed", at=later)
            uow.set_status("MRG0000M2", "merged", merged_into="MRG0000M3")
        one = backend.get_ticket("MRG0000M1")
        assert one is not None and one.status == "closed" and one.updated == later
        for bad in (
            {"status": "merged", "merged_into": "MRG0000M1", "number": "MRG0000M1"},  # itself
            {"status": "merged", "merged_into": "missing", "number": "MRG0000M1"},
            {"status": "merged", "merged_into": "MRG0000M2", "number": "MRG0000M3"},  # cycle via M2 -> M3
            {"status": "merged", "merged_into": None, "number": "MRG0000M1"},
            {"status": "open", "merged_into": "MRG0000M3", "number": "MRG0000M1"},
        ):
            with pytest.raises(InvalidMergeError), backend.unit_of_work() as uow:
                uow.add_participant("MRG0000M1", "x@example.org")
                uow.set_status(bad["number"], bad["status"], merged_into=bad["merged_into"])  # type: ignore[arg-type]
        one = backend.get_ticket("MRG0000M1")
        assert one is not None and one.participants == ()
        with backend.unit_of_work() as uow:
            two = uow.ticket_by_number("MRG0000M2")
            assert two is not None and two.merged_into == "MRG0000M3"
            assert follow_merges(uow, two).number == "MRG0000M3"
            uow.set_status("MRG0000M2", "open")
        two = backend.get_ticket("MRG0000M2")
        assert two is not None and two.status == "open" and two.merged_into is None

    def test_long_merge_chains(self, backend: Backend) -> None:
        """Chains longer than 64 links are followed to the survivor; a cycle at their far end is refused."""
        numbers = [f"LNG{index:05d}" for index in range(101)]
        with backend.unit_of_work() as uow:
            for number in numbers:
                uow.create_ticket(new_ticket(number))
            for index in (*range(50, 100), *range(49, -1, -1)):  # grown from the middle, both ways
                uow.set_status(numbers[index], "merged", merged_into=numbers[index + 1])
        with backend.unit_of_work() as uow:
            first = uow.ticket_by_number(numbers[0])
            assert first is not None
            assert follow_merges(uow, first).number == numbers[-1]
        with pytest.raises(InvalidMergeError), backend.unit_of_work() as uow:
            uow.set_status(numbers[-1], "merged", merged_into=numbers[0])
        last = backend.get_ticket(numbers[-1])
        assert last is not None
        assert last.status == "open"

    def test_participants_are_case_insensitive(self, backend: Backend) -> None:
        """Adding an address twice (in any case) keeps one, in first-seen spelling and order."""
        with backend.unit_of_work() as uow:
            uow.create_ticket(new_ticket("PRT00001"))
            for email in ("Bob@example.net", "carol@example.org", "bob@EXAMPLE.net"):
                uow.add_participant("PRT00001", email)
        ticket = backend.get_ticket("PRT00001")
        assert ticket is not None and ticket.participants == ("Bob@example.net", "carol@example.org")

    def test_count_tickets_by_requester(self, backend: Backend) -> None:
        """Rate-limit counting is case-insensitive and honours `since` (inclusive)."""
        with backend.unit_of_work() as uow:
            for i in range(4):
                uow.create_ticket(new_ticket(f"CNT0000{i}", at=T0 + _dt.timedelta(minutes=i)))
            uow.create_ticket(new_ticket("CNT00009", requester=BOB))
            assert uow.count_tickets_by_requester("ALICE@example.org", T0) == 4
            assert uow.count_tickets_by_requester("alice@example.org", T0 + _dt.timedelta(minutes=2)) == 2
            plus_one = _dt.timezone(_dt.timedelta(hours=1))
            assert (
                uow.count_tickets_by_requester(
                    "alice@example.org", (T0 + _dt.timedelta(minutes=3)).astimezone(plus_one)
                )
                == 1
            )
            assert uow.count_tickets_by_requester("nobody@example.org", T0) == 0

    # -- the stateful test --

    def test_state_machine(self, tmp_path: pathlib.Path) -> None:
        """Random sequences of units of work agree with the in-memory reference model."""
        counter = itertools.count()

        def factory() -> Backend:
            directory = tmp_path / f"sm{next(counter)}"
            directory.mkdir()
            return self.make_backend(directory)

        machine = state_machine_for(factory)
        run_state_machine_as_test(machine, settings=self.state_machine_settings or SLOW_BACKEND_SETTINGS)
