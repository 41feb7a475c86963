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
"""

from __future__ import annotations

import datetime as _dt
import itertools
import pathlib
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, cast

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ticketmail.backends.base import (
    AuditRecord,
    Backend,
    Entry,
    InvalidMergeError,
    LedgerConflictError,
    NewEntry,
    NewTicket,
    ProcessedRecord,
    QuarantineAdmin,
    QuarantineRecord,
    TicketNotFoundError,
    TicketNumberTakenError,
    UnitOfWork,
    follow_merges,
)
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.errors import BackendError, TicketmailError
from ticketmail.model import Address, Attachment, Choice, Phone, Provenance
from ticketmail.tokens import SigningKey, make_message_id

__all__ = [
    "WRITE_METHODS",
    "BackendConformance",
    "BackendStateMachine",
    "FaultInjectingUnit",
    "InjectedFault",
    "snapshot",
    "state_machine_for",
]

T0 = _dt.datetime(2026, 3, 1, 9, 0, tzinfo=_dt.timezone.utc)

WRITE_METHODS = frozenset(
    {
        "record_processed",
        "create_ticket",
        "append_entry",
        "set_status",
        "add_participant",
        "record_message_id",
        "record_audit",
        "quarantine",
    }
)
"""The unit-of-work methods that change the store (where failures are injected)."""


class InjectedFault(Exception):
    """Raised by `FaultInjectingUnit` at the chosen write; the unit must then roll back."""


class FaultInjectingUnit:
    """Wraps a unit of work and raises `InjectedFault` at write number `fail_at` (0-based).

    With `after` the write is performed first and the fault raised afterwards, so the backend has
    really changed something that must be rolled back.
    """

    def __init__(self, inner: UnitOfWork, fail_at: int | None = None, *, after: bool = True) -> None:
        self._inner = inner
        self._fail_at = fail_at
        self._after = after
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name not in WRITE_METHODS:
            return target

        def write(*args: Any, **kwargs: Any) -> Any:
            index = self.writes
            self.writes += 1
            if index == self._fail_at and not self._after:
                raise InjectedFault(f"injected before write #{index} ({name})")
            result = target(*args, **kwargs)
            if index == self._fail_at and self._after:
                raise InjectedFault(f"injected after write #{index} ({name})")
            return result

        return write


def _quiet_entry(entry: Entry, positions: dict[int, tuple[str, int]]) -> tuple[object, ...]:
    return (
        positions[entry.id],
        entry.kind,
        entry.author,
        entry.body,
        entry.created,
        entry.html,
        entry.message_id,
        entry.attachments,
        entry.files,
    )


def snapshot(backend: Backend, *, keys: Iterable[str] = (), message_ids: Iterable[str] = ()) -> dict[str, object]:
    """Everything observable through the protocol, with backend-assigned ids replaced by positions.

    `keys` and `message_ids` name the ledger keys and message ids to look up (the protocol has no
    listing for them). Two backends that did the same things have equal snapshots.
    """
    tickets = list(backend.list_tickets())
    positions: dict[int, tuple[str, int]] = {}
    threads: dict[str, list[Entry]] = {}
    for ticket in tickets:
        thread = list(backend.entries(ticket.number))
        threads[ticket.number] = thread
        for index, entry in enumerate(thread):
            positions[entry.id] = (ticket.number, index)
    digests = sorted({d for thread in threads.values() for e in thread for d in e.attachments})

    def pos(entry_id: int | None) -> object:
        return None if entry_id is None else positions.get(entry_id, ("?", entry_id))

    with backend.unit_of_work() as uow:
        ledger = {}
        for key in keys:
            record = uow.processed(key)
            ledger[key] = None if record is None else (attrs.evolve(record, entry_id=None), pos(record.entry_id))
        owners = {}
        for mid in message_ids:
            owner = uow.ticket_by_message_id(mid)
            owners[mid] = None if owner is None else owner.number
    return {
        "tickets": tickets,
        "threads": {n: [_quiet_entry(e, positions) for e in t] for n, t in threads.items()},
        "attachments": {d: backend.attachment(d) for d in digests},
        "audit": [(attrs.evolve(r, entry_id=None, id=None), pos(r.entry_id)) for r in backend.audit_log()],
        "quarantine": [attrs.evolve(q, id=None) for q in backend.quarantined()],
        "ledger": ledger,
        "message_ids": owners,
    }


def _check_consistency(backend: Backend) -> None:
    """Invariants that hold for any single backend, whatever it did."""
    for ticket in backend.list_tickets():
        thread = backend.entries(ticket.number)
        assert ticket.entry_count == len(thread), ticket
        assert ticket.updated >= ticket.created, ticket
        assert ticket.created.utcoffset() == _dt.timedelta(0), ticket
        for entry in thread:
            assert entry.ticket == ticket.number
            assert ticket.updated >= entry.created, (ticket, entry)
            for ref in entry.files:
                data = backend.attachment(ref.sha256)
                assert data is not None and len(data) == ref.size, ref
        assert (ticket.status == "merged") == (ticket.merged_into is not None), ticket


# --- the plain tests ------------------------------------------------------------------------------------------

ALICE = Address("alice@example.org", "Alice")
BOB = Address("bob@example.net", "Bob")
PDF = Attachment("report.pdf", "application/pdf", b"%PDF-1.4 not really a pdf")
PDF_AGAIN = Attachment("scan.pdf", "application/pdf", b"%PDF-1.4 not really a pdf")
PNG = Attachment(
    "logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), disposition="inline", content_id="c1"
)
PROV = Provenance("support", "imap", "7:42")


def _typed(value: object) -> object:
    """`value` with every scalar paired with its exact type, so `1 == 1.0 == True` cannot hide a change."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return (type(value) is tuple, [_typed(item) for item in value])
    return (type(value).__name__, value)


def _new_ticket(number: str, requester: Address = ALICE, at: _dt.datetime = T0, **kw: Any) -> NewTicket:
    return NewTicket(number=number, subject=f"Subject of {number}", requester=requester, created=at, **kw)


def _new_entry(mid: str | None, at: _dt.datetime = T0, **kw: Any) -> NewEntry:
    return NewEntry(
        kind=kw.pop("kind", "message"), author=kw.pop("author", ALICE), body="Hello", created=at, message_id=mid, **kw
    )


def _open_message(uow: UnitOfWork, number: str, mid: str, key: str, at: _dt.datetime = T0) -> Entry:
    """What the pipeline does for a new conversation: ticket, first entry, ledger row, audit row."""
    uow.create_ticket(_new_ticket(number, at=at, tags=("billing",), custom_fields=(("order", "42"),)))
    entry = uow.append_entry(number, _new_entry(mid, at, attachments=(PDF, PNG)))
    uow.record_processed(ProcessedRecord(key, "created", at, number, entry.id, mid))
    uow.record_audit(AuditRecord(at, "created", mid, PROV, number, (("thread.new", "new ticket", None),), entry.id))
    return entry


class BackendConformance:
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
            entry = _open_message(uow, "AB12CD34", "<first@example.org>", "k1")
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

    def test_custom_fields_round_trip_typed(self, backend: Backend) -> None:
        """Custom field values come back as the same JSON types, in order, from every reader."""
        given: list[tuple[str, object]] = [
            ("product", Choice("p2", "Scanner")),
            ("budget", 12.5),
            ("seats", 3),
            ("big", 2**53 + 1),
            ("urgent", True),
            ("paid", False),
            ("ordered", _dt.datetime(2026, 3, 1, 9, 30, tzinfo=_dt.timezone(_dt.timedelta(hours=2)))),
            ("naive", _dt.datetime(2026, 3, 1, 9, 30)),
            ("due", _dt.date(2026, 4, 1)),
            ("phone", Phone("3185558634", "123")),
            ("colours", (Choice("r", "Red"), Choice("g", "Grün"))),
            ("note", "12.5"),
            ("empty", ""),
            ("nothing", None),
            ("nested", {"a": [1, 2.0, "x", None, {"b": False}]}),
        ]
        expected: tuple[tuple[str, object], ...] = (
            ("product", {"key": "p2", "label": "Scanner"}),
            ("budget", 12.5),
            ("seats", 3),
            ("big", 2**53 + 1),
            ("urgent", True),
            ("paid", False),
            ("ordered", "2026-03-01T09:30:00+02:00"),
            ("naive", "2026-03-01T09:30:00+00:00"),
            ("due", "2026-04-01"),
            ("phone", "3185558634X123"),
            ("colours", [{"key": "r", "label": "Red"}, {"key": "g", "label": "Grün"}]),
            ("note", "12.5"),
            ("empty", ""),
            ("nothing", None),
            ("nested", {"a": [1, 2.0, "x", None, {"b": False}]}),
        )
        with backend.unit_of_work() as uow:
            created = uow.create_ticket(_new_ticket("TYPED001", custom_fields=tuple(given)))
            inside = uow.ticket_by_number("TYPED001")
        outside = backend.get_ticket("TYPED001")
        (listed,) = [t for t in backend.list_tickets() if t.number == "TYPED001"]
        for ticket in (created, inside, outside, listed):
            assert ticket is not None
            assert _typed(ticket.custom_fields) == _typed(expected)
        assert outside is not None and outside.custom("urgent") is True and outside.custom("missing", 7) == 7

    def test_custom_fields_refuse_unstorable_values(self, backend: Backend) -> None:
        """Values with no JSON form are refused before they reach the backend."""
        for bad in (float("nan"), float("inf"), b"bytes", {1: "x"}, object()):
            with pytest.raises(TicketmailError):
                _new_ticket("BAD00001", custom_fields=(("x", bad),))

    def test_reads_see_own_writes(self, backend: Backend) -> None:
        """Inside a unit, lookups see the unit's earlier writes."""
        with backend.unit_of_work() as uow:
            assert uow.ticket_by_message_id("m@x") is None
            _open_message(uow, "T1000", "m@x", "k")
            found = uow.ticket_by_message_id("<m@x>")
            assert found is not None and found.number == "T1000"
            assert uow.processed("k") is not None

    def test_exception_rolls_back_everything(self, backend: Backend) -> None:
        """A unit that raises leaves no ticket, entry, attachment, ledger, message id or audit row."""
        before = snapshot(backend, keys=["k1"], message_ids=["m1@x"])
        with pytest.raises(RuntimeError, match="boom"), backend.unit_of_work() as uow:
            _open_message(uow, "T2000", "m1@x", "k1")
            uow.quarantine(QuarantineRecord(T0, b"raw", "c", "r", PROV))
            raise RuntimeError("boom")
        assert snapshot(backend, keys=["k1"], message_ids=["m1@x"]) == before
        assert backend.attachment(PDF.sha256) is None
        assert backend.get_ticket("T2000") is None

    def test_failure_at_every_write(self, backend: Backend) -> None:
        """Inject a failure before and after each write of a full message; each time nothing remains."""
        with backend.unit_of_work() as uow:
            _open_message(uow, "BASE0001", "base@x", "base")
        keys, mids = ["base", "k1"], ["base@x", "m1@x", "out@x"]

        def message(uow: UnitOfWork) -> None:
            target = uow.ticket_by_message_id("base@x")
            assert target is not None
            uow.set_status(target.number, "closed", at=T0)
            uow.add_participant(target.number, BOB.email)
            uow.record_message_id(target.number, "out@x", "outbound")
            _open_message(uow, "T3000", "m1@x", "k1", at=T0 + _dt.timedelta(minutes=1))
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
            _open_message(uow, "T4000", "m4@x", "k4")
            uow.append_entry("missing", _new_entry("other@x"))
        assert backend.get_ticket("T4000") is None
        with backend.unit_of_work() as uow:
            assert uow.processed("k4") is None

    def test_unit_is_unusable_after_exit(self, backend: Backend) -> None:
        """Using a unit of work after its block ended is an error, not a silent write."""
        with backend.unit_of_work() as uow:
            pass
        with pytest.raises(BackendError):
            uow.create_ticket(_new_ticket("LATE0001"))
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

    # -- numbers --

    def test_ticket_numbers_are_unique(self, backend: Backend) -> None:
        """Creating a ticket with a taken number fails (and rolls back)."""
        with backend.unit_of_work() as uow:
            uow.create_ticket(_new_ticket("DUP00001"))
        with pytest.raises(TicketNumberTakenError), backend.unit_of_work() as uow:
            uow.create_ticket(_new_ticket("DUP00001", requester=BOB))
        ticket = backend.get_ticket("DUP00001")
        assert ticket is not None and ticket.requester == ALICE
        assert len(backend.list_tickets()) == 1

    # -- message ids --

    def test_message_ids_inbound_and_outbound(self, backend: Backend) -> None:
        """Inbound ids (from entries) and outbound ids (signed tokens) both find their ticket."""
        key = SigningKey("k1", b"s" * 32)
        with backend.unit_of_work() as uow:
            entry = _open_message(uow, "MID00001", "<in@example.org>", "k")
            out = make_message_id("MID00001", entry.id, keys=[key], domain="desk.example.org")
            uow.record_message_id("MID00001", out, "outbound")
            uow.create_ticket(_new_ticket("MID00002"))
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
            uow.create_ticket(_new_ticket("ATT00001"))
            first = uow.append_entry("ATT00001", _new_entry("a1@x", attachments=(PDF,)))
            second = uow.append_entry("ATT00001", _new_entry("a2@x", attachments=(PDF_AGAIN, PDF)))
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
                uow.create_ticket(_new_ticket(f"MRG0000{number}"))
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
                uow.create_ticket(_new_ticket(number))
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
            uow.create_ticket(_new_ticket("PRT00001"))
            for email in ("Bob@example.net", "carol@example.org", "bob@EXAMPLE.net"):
                uow.add_participant("PRT00001", email)
        ticket = backend.get_ticket("PRT00001")
        assert ticket is not None and ticket.participants == ("Bob@example.net", "carol@example.org")

    def test_count_tickets_by_requester(self, backend: Backend) -> None:
        """Rate-limit counting is case-insensitive and honours `since` (inclusive)."""
        with backend.unit_of_work() as uow:
            for i in range(4):
                uow.create_ticket(_new_ticket(f"CNT0000{i}", at=T0 + _dt.timedelta(minutes=i)))
            uow.create_ticket(_new_ticket("CNT00009", requester=BOB))
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

    def test_datetimes_come_back_in_utc(self, backend: Backend) -> None:
        """Aware datetimes in any zone come back equal and in UTC; naive ones are taken as UTC."""
        zone = _dt.timezone(_dt.timedelta(hours=-5))
        with backend.unit_of_work() as uow:
            uow.create_ticket(_new_ticket("UTC00001", at=T0.astimezone(zone)))
            uow.append_entry("UTC00001", _new_entry("u@x", T0.replace(tzinfo=None) + _dt.timedelta(seconds=1)))
        ticket = backend.get_ticket("UTC00001")
        assert ticket is not None and ticket.created == T0 and ticket.created.utcoffset() == _dt.timedelta(0)
        assert ticket.updated == T0 + _dt.timedelta(seconds=1)

    # -- audit and quarantine --

    def test_audit_log_in_order(self, backend: Backend) -> None:
        """Audit records come back complete and oldest first, each with an increasing `id`."""
        records = [
            AuditRecord(
                T0 + _dt.timedelta(seconds=i),
                "ignored",
                f"m{i}@x",
                PROV,
                None,
                (("r", "why", str(i)),),
                origin=f"IMAP support, UID {i}" if i % 2 else None,
                sender="alice@example.org" if i % 2 else None,
                subject=f"Printer \u00e9 {i}" if i % 2 else None,
                headers=(("From", "Alice <alice@example.org>"), ("X-Spam-Flag", "NO")) if i % 2 else (),
            )
            for i in range(5)
        ]
        for record in records:
            with backend.unit_of_work() as uow:
                uow.record_audit(record)
        stored = list(backend.audit_log())
        assert [attrs.evolve(r, id=None) for r in stored] == records
        ids = [r.id for r in stored]
        assert all(isinstance(i, int) for i in ids), ids
        assert ids == sorted(set(ids)), ids  # type: ignore[type-var]

    def test_remove_quarantined(self, backend: Backend) -> None:
        """A unit of work can take one message out of the quarantine; a rollback puts it back."""
        with backend.unit_of_work() as uow:
            if not isinstance(uow, QuarantineAdmin):
                pytest.skip("the backend's units of work do not implement the optional QuarantineAdmin")
            first = uow.quarantine(QuarantineRecord(T0, b"one", "malformed_email", "bad", PROV))
            second = uow.quarantine(QuarantineRecord(T0, b"two", "malformed_email", "bad", PROV))
        with pytest.raises(RuntimeError, match="undo"), backend.unit_of_work() as uow:
            assert isinstance(uow, QuarantineAdmin)
            removed = uow.remove_quarantined(first)
            assert removed is not None and removed.raw == b"one" and removed.id == first
            raise RuntimeError("undo")
        assert [q.id for q in backend.quarantined()] == [first, second]
        with backend.unit_of_work() as uow:
            assert isinstance(uow, QuarantineAdmin)
            assert uow.remove_quarantined(first) is not None
            assert uow.remove_quarantined(first) is None
            assert uow.remove_quarantined(10_000) is None
        assert [(q.id, q.raw) for q in backend.quarantined()] == [(second, b"two")]
        with backend.unit_of_work() as uow:  # the same bytes again start a new count
            uow.quarantine(QuarantineRecord(T0, b"one", "malformed_email", "bad", PROV))
        assert sorted(q.attempts for q in backend.quarantined()) == [1, 1]

    def test_quarantine_keeps_bytes_once_per_item(self, backend: Backend) -> None:
        """Quarantine keeps raw bytes; the same item again bumps `attempts` instead of a new row."""
        raw = b"From: x\r\n\r\n\xff\xfe broken"
        with backend.unit_of_work() as uow:
            first = uow.quarantine(QuarantineRecord(T0, raw, "malformed_email", "bad", PROV))
            again = uow.quarantine(QuarantineRecord(T0 + _dt.timedelta(minutes=5), raw, "backend_error", "db", PROV))
            other = uow.quarantine(QuarantineRecord(T0, raw + b"!", "malformed_email", "bad", PROV))
            loose = uow.quarantine(QuarantineRecord(T0, raw, "malformed_email", "bad", None))
        assert first == again
        assert len({first, other, loose}) == 3
        items = backend.quarantined()
        assert [q.id for q in items] == [first, other, loose]
        assert items[0].raw == raw and items[0].attempts == 2 and items[0].reason_code == "backend_error"
        assert items[0].at == T0 + _dt.timedelta(minutes=5) and items[0].provenance == PROV
        assert "bytes>" in repr(items[0]) and "broken" not in repr(items[0])

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


# --- the state machine -------------------------------------------------------------------------------------------

SLOW_BACKEND_SETTINGS = settings(
    stateful_step_count=12,
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
"""The stateful test's default settings: no deadline, so a backend over a network database is not failed
for being slow; a user's own Hypothesis profile still decides anything set there (derandomize, database)."""

REQUESTERS = (ALICE, BOB, Address("ALICE@example.org", None), Address("carol@example.com", "Carol"))
ATTACHMENTS = (PDF, PDF_AGAIN, PNG)
NUMBER_POOL = ("POOL0001", "POOL0002", "POOL0003")
TOKEN_KEYS = (SigningKey("sm", b"state-machine-secret-0123456789"),)


@attrs.frozen
class _Op:
    """One step of a unit of work, materialized with concrete values before it runs on either backend."""

    kind: str
    key: str = ""
    mid: str = ""
    target: str = ""
    other: str = ""
    author: Address = ALICE
    attachments: tuple[Attachment, ...] = ()
    at: _dt.datetime = T0
    value: str = ""


_op_kinds = st.sampled_from(
    [
        "new",
        "new",
        "reply_mid",
        "reply_number",
        "redeliver",
        "outbound",
        "merge",
        "close",
        "reopen",
        "participant",
        "quarantine",
        "reply_mid",
        "reply_number",
        "missing",
    ]
)


class BackendStateMachine(RuleBasedStateMachine):
    """Drives the backend under test and the reference model with identical units of work.

    Subclass via `state_machine_for()`, which sets `factory`.
    """

    factory: ClassVar[Callable[[], Backend]]

    def __init__(self) -> None:
        super().__init__()
        self.model: Backend = InMemoryBackend()
        self.sut: Backend = type(self).factory()
        self.keys: list[str] = []
        self.mids: list[str] = []
        self.numbers: list[str] = []
        self.counter = itertools.count(1)
        self.audits = 0

    def teardown(self) -> None:
        """Close both backends."""
        self.sut.close()
        self.model.close()

    # -- materializing ops --

    def _materialize(self, kind: str, picks: list[int], author: int, files: list[int], variant: int) -> _Op:
        n = next(self.counter)
        at = T0 + _dt.timedelta(seconds=n)

        def pick(pool: list[str], index: int, fallback: str) -> str:
            return pool[index % len(pool)] if pool else fallback

        atts = tuple(ATTACHMENTS[i] for i in files)
        who = REQUESTERS[author % len(REQUESTERS)]
        if kind == "new":
            number = NUMBER_POOL[variant % len(NUMBER_POOL)] if variant % 2 else f"SM{n:06d}"
            mid = f"<new{n}@example.org>" if variant % 3 else f"new{n}@example.org"
            return _Op(kind, key=f"imap/support/{n}", mid=mid, target=number, author=who, attachments=atts, at=at)
        if kind in ("reply_mid", "reply_number"):
            pool = self.mids if kind == "reply_mid" else self.numbers
            target = pick(pool, picks[0], "nothing@example.org")
            return _Op(
                kind,
                key=f"imap/support/{n}",
                mid=f"re{n}@example.org",
                target=target,
                author=who,
                attachments=atts,
                at=at,
            )
        if kind == "redeliver":
            return _Op(kind, key=pick(self.keys, picks[0], "never-seen"), at=at)
        if kind == "outbound":
            number = pick(self.numbers, picks[0], "NOPE0000")
            mid = make_message_id(number, n, keys=TOKEN_KEYS, domain="desk.example.org", nonce=f"n{n}")
            if variant % 4 == 3 and self.mids:  # an id another ticket may own already: the first owner keeps it
                mid = pick(self.mids, picks[1], mid)
            return _Op(kind, target=number, mid=mid, at=at)
        if kind in ("merge", "close", "reopen", "participant"):
            return _Op(
                kind,
                target=pick(self.numbers, picks[0], "NOPE0000"),
                other=pick(self.numbers, picks[1], "NOPE0000"),
                author=who,
                at=at,
            )
        if kind == "quarantine":
            raw = f"broken message {variant % 3}".encode()
            return _Op(kind, value=raw.decode(), key=f"q{variant % 2}", at=at)
        return _Op("missing", target="does-not-exist", at=at)

    # -- running ops --

    @staticmethod
    def _run(uow: UnitOfWork, op: _Op, trace: list[object]) -> int:
        """Apply one op like the pipeline would; return how many audit rows it wrote."""
        prov = Provenance("support", "imap", op.key or "-")
        if op.kind in ("new", "reply_mid", "reply_number", "redeliver"):
            previous = uow.processed(op.key)
            if previous is not None:
                uow.record_processed(previous)  # idempotent re-recording
                uow.record_audit(AuditRecord(op.at, "duplicate", previous.message_id, prov, previous.ticket, ()))
                trace.append(("duplicate", previous.ticket))
                return 1
            if op.kind == "redeliver":
                trace.append(("unknown", op.key))
                return 0
        if op.kind == "new":
            number = op.target
            if uow.number_exists(number):
                number = f"X{op.key.rsplit('/', 1)[1]}"
            uow.create_ticket(NewTicket(number, "Help", op.author, op.at, tags=("a", "b"), custom_fields=(("k", "v"),)))
            entry = uow.append_entry(
                number, NewEntry("message", op.author, "body", op.at, message_id=op.mid, attachments=op.attachments)
            )
            uow.record_processed(ProcessedRecord(op.key, "created", op.at, number, entry.id, op.mid))
            uow.record_audit(
                AuditRecord(op.at, "created", op.mid, prov, number, (("thread.new", "new", None),), entry.id)
            )
            trace.append(("created", number))
            return 1
        if op.kind in ("reply_mid", "reply_number"):
            found = uow.ticket_by_message_id(op.target) if op.kind == "reply_mid" else uow.ticket_by_number(op.target)
            if found is None:
                uow.record_processed(ProcessedRecord(op.key, "ignored", op.at, None, None, op.mid))
                uow.record_audit(AuditRecord(op.at, "ignored", op.mid, prov, None, (("thread.none", "no", None),)))
                trace.append(("ignored", op.target))
                return 1
            ticket = follow_merges(uow, found)
            if ticket.status == "closed":
                uow.set_status(ticket.number, "open", at=op.at)
            if op.author.email.casefold() != ticket.requester.email.casefold():
                uow.add_participant(ticket.number, op.author.email)
            entry = uow.append_entry(
                ticket.number, NewEntry("reply", op.author, "re", op.at, message_id=op.mid, attachments=op.attachments)
            )
            uow.record_processed(ProcessedRecord(op.key, "appended", op.at, ticket.number, entry.id, op.mid))
            uow.record_audit(AuditRecord(op.at, "appended", op.mid, prov, ticket.number, (), entry.id))
            trace.append(("appended", found.number, ticket.number))
            return 1
        if op.kind == "outbound":
            if uow.number_exists(op.target):
                uow.record_message_id(op.target, op.mid, "outbound")
            trace.append(("outbound", op.target))
            return 0
        if op.kind in ("merge", "close", "reopen", "participant"):
            subject_ticket = uow.ticket_by_number(op.target)
            other = uow.ticket_by_number(op.other)
            trace.append((op.kind, None if subject_ticket is None else subject_ticket.status))
            if subject_ticket is None or subject_ticket.status == "merged":
                return 0
            if op.kind == "merge" and other is not None and follow_merges(uow, other).number != subject_ticket.number:
                uow.set_status(subject_ticket.number, "merged", merged_into=other.number, at=op.at)
            elif op.kind in ("close", "reopen"):
                uow.set_status(subject_ticket.number, "closed" if op.kind == "close" else "open", at=op.at)
            elif op.kind == "participant":
                uow.add_participant(subject_ticket.number, op.author.email)
            return 0
        if op.kind == "quarantine":
            qid = uow.quarantine(
                QuarantineRecord(op.at, op.value.encode(), "malformed_email", "bad", Provenance("s", "imap", op.key))
            )
            trace.append(("quarantine", qid > 0))
            return 0
        uow.append_entry(op.target, NewEntry("note", None, "x", op.at))  # raises TicketNotFoundError
        return 0

    def _apply(
        self, backend: Backend, ops: list[_Op], fail_at: int | None, after: bool
    ) -> tuple[object, list[object], int]:
        trace: list[object] = []
        audits = 0
        try:
            with backend.unit_of_work() as uow:
                faulty = FaultInjectingUnit(uow, fail_at, after=after)
                for op in ops:
                    audits += self._run(cast(UnitOfWork, faulty), op, trace)
        except InjectedFault:
            return "injected", trace, 0
        except TicketmailError as exc:
            return exc.code, trace, 0
        return "committed", trace, audits

    @rule(
        steps=st.lists(
            st.tuples(
                _op_kinds,
                st.lists(st.integers(0, 50), min_size=2, max_size=2),
                st.integers(0, 3),
                st.lists(st.integers(0, 2), max_size=3),
                st.integers(0, 11),
            ),
            min_size=1,
            max_size=4,
        ),
        fail_at=st.none() | st.integers(0, 12),
        after=st.booleans(),
    )
    def unit_of_work(
        self, steps: list[tuple[str, list[int], int, list[int], int]], fail_at: int | None, after: bool
    ) -> None:
        """Run one unit of identical ops on both backends, maybe with an injected failure."""
        ops = [self._materialize(*step) for step in steps]
        for op in ops:
            if op.key and op.kind != "quarantine" and op.key not in self.keys:
                self.keys.append(op.key)
            if op.mid and op.mid not in self.mids:
                self.mids.append(op.mid)
        before = self._snap(self.sut)
        model_result = self._apply(self.model, ops, fail_at, after)
        sut_result = self._apply(self.sut, ops, fail_at, after)
        assert sut_result[:2] == model_result[:2], (sut_result, model_result)
        if sut_result[0] == "committed":
            self.audits += sut_result[2]
            for op in ops:
                if op.kind == "new" and op.target not in self.numbers:
                    self.numbers.append(op.target)
            for entry in sut_result[1]:
                if isinstance(entry, tuple) and entry[0] == "created" and entry[1] not in self.numbers:
                    self.numbers.append(str(entry[1]))
        else:
            assert self._snap(self.sut) == before, "a failed unit of work left changes behind"

    def _snap(self, backend: Backend) -> dict[str, object]:
        return snapshot(backend, keys=self.keys, message_ids=self.mids)

    @invariant()
    def backends_agree(self) -> None:
        """The backend under test holds exactly what the reference model holds."""
        assert self._snap(self.sut) == self._snap(self.model)

    @invariant()
    def backend_is_consistent(self) -> None:
        """Counts, times, attachments and merge links are coherent; the audit log is complete."""
        _check_consistency(self.sut)
        assert sum(1 for _ in self.sut.audit_log()) == self.audits


def state_machine_for(factory: Callable[[], Backend]) -> type[BackendStateMachine]:
    """A `BackendStateMachine` subclass whose backend under test comes from `factory`.

    Run it with `run_state_machine_as_test(state_machine_for(f))` or expose `.TestCase` to pytest.
    """
    return type("BackendStateMachineFor", (BackendStateMachine,), {"factory": staticmethod(factory)})


def scratch_directory() -> pathlib.Path:
    """A new temporary directory (for factories used outside pytest's `tmp_path`)."""
    return pathlib.Path(tempfile.mkdtemp(prefix="ticketmail-conformance-"))
