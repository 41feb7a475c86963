"""The conformance suite's stateful test: random units of work against a backend and the reference model."""

from __future__ import annotations

import datetime as _dt
import itertools
import pathlib
import tempfile
from collections.abc import Callable
from typing import ClassVar, cast

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ticketmail.backends.base import (
    AuditRecord,
    Backend,
    NewEntry,
    NewTicket,
    ProcessedRecord,
    QuarantineRecord,
    UnitOfWork,
    follow_merges,
)
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.errors import TicketmailError
from ticketmail.model import Address, Attachment, Provenance
from ticketmail.testing._conformance_support import (
    ALICE,
    BOB,
    PDF,
    PDF_AGAIN,
    PNG,
    T0,
    FaultInjectingUnit,
    InjectedFault,
    check_consistency,
    describe_difference,
    snapshot,
)
from ticketmail.tokens import SigningKey, make_message_id

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
        return _RUNNERS.get(op.kind, _run_missing)(uow, op, prov, trace)

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
        assert sut_result[:2] == model_result[:2], (
            f"the same unit of work ended differently: backend under test {sut_result[:2]!r},"
            f" reference model {model_result[:2]!r}; ops {ops!r}, fault at write {fail_at} (after: {after})"
        )
        if sut_result[0] == "committed":
            self.audits += sut_result[2]
            for op in ops:
                if op.kind == "new" and op.target not in self.numbers:
                    self.numbers.append(op.target)
            for entry in sut_result[1]:
                if isinstance(entry, tuple) and entry[0] == "created" and entry[1] not in self.numbers:
                    self.numbers.append(str(entry[1]))
        else:
            after_failure = self._snap(self.sut)
            assert after_failure == before, (
                f"a failed unit of work ({sut_result[0]}) left changes behind: "
                + describe_difference(after_failure, before)
            )

    def _snap(self, backend: Backend) -> dict[str, object]:
        return snapshot(backend, keys=self.keys, message_ids=self.mids)

    @invariant()
    def backends_agree(self) -> None:
        """The backend under test holds exactly what the reference model holds."""
        actual, expected = self._snap(self.sut), self._snap(self.model)
        assert actual == expected, describe_difference(actual, expected)

    @invariant()
    def backend_is_consistent(self) -> None:
        """Counts, times, attachments and merge links are coherent; the audit log is complete."""
        check_consistency(self.sut)
        audited = sum(1 for _ in self.sut.audit_log())
        assert audited == self.audits, f"{audited} audit records, but the committed units wrote {self.audits}"


# --- one function per kind of op (what the pipeline would do) ------------------------------------------------


def _run_new(uow: UnitOfWork, op: _Op, prov: Provenance, trace: list[object]) -> int:
    number = op.target
    if uow.number_exists(number):
        number = f"X{op.key.rsplit('/', 1)[1]}"
    uow.create_ticket(NewTicket(number, "Help", op.author, op.at, tags=("a", "b"), custom_fields=(("k", "v"),)))
    entry = uow.append_entry(
        number, NewEntry("message", op.author, "body", op.at, message_id=op.mid, attachments=op.attachments)
    )
    uow.record_processed(ProcessedRecord(op.key, "created", op.at, number, entry.id, op.mid))
    uow.record_audit(AuditRecord(op.at, "created", op.mid, prov, number, (("thread.new", "new", None),), entry.id))
    trace.append(("created", number))
    return 1


def _run_reply(uow: UnitOfWork, op: _Op, prov: Provenance, trace: list[object]) -> int:
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


def _run_outbound(uow: UnitOfWork, op: _Op, prov: Provenance, trace: list[object]) -> int:
    if uow.number_exists(op.target):
        uow.record_message_id(op.target, op.mid, "outbound")
    trace.append(("outbound", op.target))
    return 0


def _run_ticket_change(uow: UnitOfWork, op: _Op, prov: Provenance, trace: list[object]) -> int:
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


def _run_quarantine(uow: UnitOfWork, op: _Op, prov: Provenance, trace: list[object]) -> int:
    qid = uow.quarantine(
        QuarantineRecord(op.at, op.value.encode(), "malformed_email", "bad", Provenance("s", "imap", op.key))
    )
    trace.append(("quarantine", qid > 0))
    return 0


def _run_missing(uow: UnitOfWork, op: _Op, prov: Provenance, trace: list[object]) -> int:
    uow.append_entry(op.target, NewEntry("note", None, "x", op.at))  # raises TicketNotFoundError
    return 0


_RUNNERS: dict[str, Callable[[UnitOfWork, _Op, Provenance, list[object]], int]] = {
    "new": _run_new,
    "reply_mid": _run_reply,
    "reply_number": _run_reply,
    "outbound": _run_outbound,
    "merge": _run_ticket_change,
    "close": _run_ticket_change,
    "reopen": _run_ticket_change,
    "participant": _run_ticket_change,
    "quarantine": _run_quarantine,
}


def state_machine_for(factory: Callable[[], Backend]) -> type[BackendStateMachine]:
    """A `BackendStateMachine` subclass whose backend under test comes from `factory`.

    Run it with `run_state_machine_as_test(state_machine_for(f))` or expose `.TestCase` to pytest.
    """
    return type("BackendStateMachineFor", (BackendStateMachine,), {"factory": staticmethod(factory)})


def scratch_directory() -> pathlib.Path:
    """A new temporary directory (for factories used outside pytest's `tmp_path`)."""
    return pathlib.Path(tempfile.mkdtemp(prefix="ticketmail-conformance-"))
