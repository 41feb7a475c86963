"""A stateful conformance machine for the whole pipeline on any backend, shipped for backend authors.

Why a state machine: exactly-once is a property of *sequences* (a redelivery after a crash, a reply to a
message whose ticket was rolled back, a retry after a failed write), which example tests cannot cover.
Hypothesis drives random sequences of

* new conversations (each must open exactly one ticket),
* replies by every threading route (`In-Reply-To`, `References`, subject tag, plus address, signed
  token of a notification we "sent"),
* auto-replies (appended to an open ticket, never reopening a closed one), closing and merging tickets
  (replies to a merged ticket must land on the survivor),
* duplicates (the same message through another mailbox) and redeliveries (the same mailbox item again),
* batches of new conversations and replies in one unit of work (`Pipeline.process_batch()`),
* failures injected at every backend write: a wrapper backend raises at the Nth write of the next message,
  either a `BackendError` (the pipeline must propagate it and leave no trace) or
  an unexpected exception (the pipeline must roll back, quarantine and report `failed`). Failed messages
  are retried later and must then have their normal effect;

and checks after every step that the backend agrees with a simple model: one ticket per conversation,
every committed message on its conversation's ticket in order, nothing from rolled-back messages, ticket
status as expected, and one audit record per committed effect.

Use it from a test module of your backend::

    from ticketmail.testing.pipeline_suite import pipeline_machine

    TestMyBackendPipeline = pipeline_machine(lambda: MyBackend(...)).TestCase

The factory is called once per generated sequence; the machine closes the backend at the end.
"""

from __future__ import annotations

import datetime as _dt
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Literal, TypeVar

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ticketmail.backends.base import Backend, UnitOfWork
from ticketmail.errors import BackendError
from ticketmail.model import Provenance
from ticketmail.pipeline import Outcome, Pipeline
from ticketmail.threading import subject_tag

__all__ = ["FaultyBackend", "InjectedFault", "StepClock", "build_mail", "pipeline_machine"]

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
"""The unit-of-work methods that write; `FaultyBackend` counts calls to these."""

_KEY = b"pipeline-suite-signing-key-0001!"
_DOMAIN = "desk.example"
_START = _dt.datetime(2026, 3, 2, 9, 0, tzinfo=_dt.timezone.utc)
_REQUESTERS = ("alice@example.org", "bob@example.net", "chen@example.com")


_T = TypeVar("_T")


def _present(value: _T | None, what: str) -> _T:
    if value is None:
        raise AssertionError(f"{what} is missing")
    return value


def _expect(condition: object, message: str) -> None:
    """Like `assert`, but not stripped by `python -O` (this suite must never pass silently)."""
    if not condition:
        raise AssertionError(message)


class InjectedFault(RuntimeError):
    """The unexpected exception `FaultyBackend` raises (not a ticketmail error on purpose)."""


class _FaultyUnit:
    def __init__(self, inner: UnitOfWork, owner: FaultyBackend) -> None:
        self._inner = inner
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name not in WRITE_METHODS:
            return target
        owner = self._owner

        def write(*args: Any, **kwargs: Any) -> Any:
            owner.before_write(name)
            return target(*args, **kwargs)

        return write


class FaultyBackend:
    """Wraps a backend; when armed, the Nth write (counted across units of work) raises.

    `arm(n, error)` makes the `n`-th write from now raise `error`, once. `writes` counts every write
    seen. Everything else is delegated to the wrapped backend.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.writes = 0
        self._countdown: int | None = None
        self._error: BaseException | None = None
        self.fired: str | None = None

    def arm(self, n: int, error: BaseException) -> None:
        """Raise `error` at the `n`-th write from now (1 = the next write)."""
        self._countdown = n
        self._error = error
        self.fired = None

    def disarm(self) -> None:
        """Cancel a pending fault."""
        self._countdown = None
        self._error = None

    def before_write(self, name: str) -> None:
        """Count a write and raise when the armed fault is due."""
        self.writes += 1
        if self._countdown is None:
            return
        self._countdown -= 1
        if self._countdown == 0:
            error = self._error
            self.disarm()
            self.fired = name
            if error is not None:
                raise error

    @contextmanager
    def _unit(self) -> Iterator[UnitOfWork]:
        with self.inner.unit_of_work() as uow:
            yield _FaultyUnit(uow, self)

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        """The wrapped backend's unit of work, with writes counted."""
        return self._unit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@attrs.define
class _Conversation:
    index: int
    requester: str
    subject: str
    ticket: str | None = None
    message_ids: list[str] = attrs.field(factory=list)  # committed, in order
    entries: list[int] = attrs.field(factory=list)
    closed: bool = False
    merged_into: _Conversation | None = None

    def survivor(self) -> _Conversation:
        """The conversation whose ticket receives this one's replies (itself unless merged)."""
        current = self
        while current.merged_into is not None:
            current = current.merged_into
        return current


@attrs.define
class _Sent:
    """A message the model knows was committed, for duplicates and redeliveries."""

    raw: bytes
    provenance: Provenance
    outcome: Outcome


@attrs.define
class _Pending:
    """A message that failed (injected fault) and must be retried."""

    raw: bytes
    provenance: Provenance
    conversation: _Conversation
    kind: Literal["new", "reply", "auto"]
    message_id: str


def build_mail(
    *,
    subject: str = "Printer broken",
    sender: str = "Alice <alice@example.org>",
    to: str = f"support@{_DOMAIN}",
    message_id: str | None = "m1@example.org",
    in_reply_to: str | None = None,
    references: str | Sequence[str] | None = None,
    body: str | None = None,
    headers: Mapping[str, str] | None = None,
    attachment: tuple[str, bytes] | None = None,
    date: _dt.datetime = _START,
) -> bytes:
    """The raw bytes of a simple test message (stdlib `email`, CRLF-free, UTF-8).

    `message_id` is given without angle brackets (`None`: no Message-ID header). `references` is a
    header value or a sequence of ids (written oldest first, in brackets). `headers` are added as given
    (`{"Auto-Submitted": "auto-replied"}`); `attachment` is `(filename, bytes)`.
    """
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    if message_id:
        msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references if isinstance(references, str) else " ".join(f"<{r}>" for r in references)
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body if body is not None else f"Body of {message_id}\n")
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="octet-stream", filename=attachment[0])
    return bytes(msg)


class StepClock:
    """A deterministic clock for tests: `start`, then `step` later at every call."""

    def __init__(self, start: _dt.datetime = _START, step: _dt.timedelta = _dt.timedelta(seconds=1)) -> None:
        self._next = start
        self._step = step

    def __call__(self) -> _dt.datetime:
        """The current (fake) time; advances by one step."""
        now = self._next
        self._next = now + self._step
        return now


def _mail(
    *,
    sender: str,
    subject: str,
    message_id: str,
    to: str = f"support@{_DOMAIN}",
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    auto: bool = False,
) -> bytes:
    return build_mail(
        sender=sender,
        subject=subject,
        message_id=message_id,
        to=to,
        in_reply_to=in_reply_to,
        references=references or None,
        headers={"Auto-Submitted": "auto-replied"} if auto else None,
    )


Route = Literal["in_reply_to", "references", "subject", "plus_address", "token"]
ROUTES: tuple[Route, ...] = ("in_reply_to", "references", "subject", "plus_address", "token")


def pipeline_machine(backend_factory: Callable[[], Backend], *, steps: int = 40) -> type[RuleBasedStateMachine]:
    """A `RuleBasedStateMachine` class that checks the pipeline on backends from `backend_factory`.

    Run it with `TestX = pipeline_machine(factory).TestCase` in a pytest module. `steps` bounds the
    length of each generated sequence.
    """

    class PipelineMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.inner = backend_factory()
            self.backend = FaultyBackend(self.inner)
            self.pipeline = Pipeline(
                self.backend,
                clock=StepClock(),
                token_keys=[_KEY],
            )
            self.ids = itertools.count(1)
            self.model: list[_Conversation] = []
            self.sent: list[_Sent] = []
            self.pending: list[_Pending] = []
            self.audit_expected = 0
            self.quarantine_attempts = 0

        def teardown(self) -> None:
            self.inner.close()

        # -- delivering one message -------------------------------------------------------------

        def _snapshot(self) -> tuple[int, tuple[tuple[str, int], ...], int]:
            tickets = self.inner.list_tickets()
            return (
                len(tickets),
                tuple((t.number, t.entry_count) for t in tickets),
                sum(1 for _ in self.inner.audit_log()),
            )

        def _deliver(self, pending: _Pending, fault: tuple[int, bool] | None) -> Outcome | None:
            """Process one message, maybe with a fault armed; return the outcome when it committed."""
            before = self._snapshot()
            if fault is not None:
                n, unexpected = fault
                self.backend.arm(n, InjectedFault("injected") if unexpected else BackendError("injected"))
            try:
                outcome = self.pipeline.process_email(pending.raw, provenance=pending.provenance)
            except BackendError:
                self.backend.disarm()
                _expect(self.backend.fired is not None, "a BackendError escaped without an injected fault")
                _expect(self._snapshot() == before, "a rolled-back message left an effect")
                _expect(not self.pipeline.is_processed(pending.provenance), "a rolled-back message is in the ledger")
                self.pending.append(pending)
                return None
            self.backend.disarm()
            if outcome.action == "failed":
                _expect(self.backend.fired is not None, f"failed without an injected fault: {outcome.reasons}")
                error = _present(outcome.error, "the error of a failed outcome")
                _expect(error.code == "processing_failed", f"failed with {error.code}, expected processing_failed")
                _expect(not outcome.acknowledge, "not outcome.acknowledge")
                tickets, entries, audit = self._snapshot()
                _expect((tickets, entries) == before[:2], "a failed message changed tickets")
                _expect(audit == before[2] + 1, "a failed message must leave exactly one audit record")
                _expect(not self.pipeline.is_processed(pending.provenance), "a failed message is in the ledger")
                _expect(
                    any(q.provenance == pending.provenance and q.raw == pending.raw for q in self.inner.quarantined()),
                    "a failed message was not quarantined with its raw bytes",
                )
                self.audit_expected += 1
                self.pending.append(pending)
                return None
            _expect(outcome.acknowledge, "outcome.acknowledge")
            return outcome

        def _commit(self, pending: _Pending, outcome: Outcome) -> None:
            conv = pending.conversation
            if pending.kind == "new":
                _expect(outcome.action == "created", f"unexpected outcome {outcome!r}")
                _expect(outcome.ticket is not None, "outcome.ticket is not None")
                _expect(all(outcome.ticket != c.ticket for c in self.model), "ticket number reused")
                conv.ticket = outcome.ticket
                self.model.append(conv)
            else:
                conv = conv.survivor()  # replies to a merged ticket go to the one it was merged into
                if pending.kind == "auto" and conv.closed:
                    _expect(outcome.action == "ignored", f"unexpected outcome {outcome!r}")
                    _expect(outcome.ticket == conv.ticket, f"ignored on {outcome.ticket}, expected {conv.ticket}")
                    self.audit_expected += 1
                    self.sent.append(_Sent(pending.raw, pending.provenance, outcome))
                    return
                _expect(outcome.action == "appended", f"unexpected outcome {outcome!r}")
                _expect(outcome.ticket == conv.ticket, f"reply went to {outcome.ticket}, expected {conv.ticket}")
                if pending.kind == "reply":
                    conv.closed = False
            conv.message_ids.append(pending.message_id)
            conv.entries.append(_present(outcome.entry_id, "the entry id of a new entry"))
            self.audit_expected += 1
            self.sent.append(_Sent(pending.raw, pending.provenance, outcome))

        def _run(self, pending: _Pending, fault: tuple[int, bool] | None) -> None:
            outcome = self._deliver(pending, fault)
            if outcome is not None:
                self._commit(pending, outcome)

        def _provenance(self, mailbox: str = "INBOX") -> Provenance:
            return Provenance(mailbox, "imap", f"1:{next(self.ids)}")

        # -- rules --------------------------------------------------------------------------------

        faults = st.none() | st.tuples(st.integers(min_value=1, max_value=8), st.booleans())

        @rule(requester=st.sampled_from(_REQUESTERS), fault=faults)
        def new_conversation(self, requester: str, fault: tuple[int, bool] | None) -> None:
            n = next(self.ids)
            conv = _Conversation(index=n, requester=requester, subject=f"Conversation {n}")
            mid = f"new-{n}@client.example"
            raw = _mail(sender=requester, subject=conv.subject, message_id=mid)
            self._run(_Pending(raw, self._provenance(), conv, "new", mid), fault)

        @precondition(lambda self: bool(self.model))
        @rule(data=st.data(), route=st.sampled_from(ROUTES), fault=faults)
        def reply(self, data: st.DataObject, route: Route, fault: tuple[int, bool] | None) -> None:
            conv: _Conversation = data.draw(st.sampled_from(self.model), label="conversation")
            ticket = _present(conv.ticket, "the conversation's ticket")
            n = next(self.ids)
            mid = f"reply-{n}@client.example"
            kwargs: dict[str, Any] = {"sender": conv.requester, "subject": f"Unrelated {n}", "message_id": mid}
            if route == "in_reply_to":
                kwargs["in_reply_to"] = f"<{conv.message_ids[-1]}>"
            elif route == "references":
                kwargs["references"] = (f"unknown-{n}@elsewhere.example", *conv.message_ids)
            elif route == "subject":
                kwargs["subject"] = f"Re: {subject_tag(ticket)} {conv.subject}"
            elif route == "plus_address":
                kwargs["to"] = f"support+{ticket}@{_DOMAIN}"
            else:
                token = self.pipeline.outbound_message_id(ticket, conv.entries[-1], domain=_DOMAIN)
                kwargs["in_reply_to"] = token
            self._run(_Pending(_mail(**kwargs), self._provenance(), conv, "reply", mid), fault)

        @rule(data=st.data(), size=st.integers(min_value=2, max_value=5), fault=faults)
        def batch(self, data: st.DataObject, size: int, fault: tuple[int, bool] | None) -> None:
            """New conversations and replies in one `process_batch` (one unit of work)."""
            items: list[_Pending] = []
            for _ in range(size):
                n = next(self.ids)
                reply: bool = bool(self.model) and data.draw(st.booleans(), label="reply")
                if reply:
                    conv = data.draw(st.sampled_from(self.model), label="conversation")
                    mid = f"reply-{n}@client.example"
                    raw = _mail(
                        sender=conv.requester,
                        subject=f"Batch reply {n}",
                        message_id=mid,
                        in_reply_to=f"<{conv.message_ids[-1]}>",
                    )
                    items.append(_Pending(raw, self._provenance(), conv, "reply", mid))
                else:
                    conv = _Conversation(index=n, requester=_REQUESTERS[n % 3], subject=f"Conversation {n}")
                    mid = f"new-{n}@client.example"
                    raw = _mail(sender=conv.requester, subject=conv.subject, message_id=mid)
                    items.append(_Pending(raw, self._provenance(), conv, "new", mid))
            before = self._snapshot()
            if fault is not None:
                self.backend.arm(fault[0], InjectedFault("injected") if fault[1] else BackendError("injected"))
            try:
                outcomes = self.pipeline.process_batch([(p.raw, p.provenance) for p in items])
            except BackendError:
                _expect(self.backend.fired is not None, "a BackendError escaped without an injected fault")
                _expect(self._snapshot() == before, "a rolled-back batch left an effect")
                self.pending.extend(items)
                return
            finally:
                self.backend.disarm()
            _expect(len(outcomes) == len(items), "one outcome per message of the batch")
            for pending, outcome in zip(items, outcomes, strict=True):
                # an unexpected failure inside the batch is retried message by message, where the
                # (one-shot) fault no longer fires: every message must then have its normal effect
                _expect(outcome.action != "failed", f"a message of the batch failed: {outcome!r}")
                self._commit(pending, outcome)

        @precondition(lambda self: bool(self.model))
        @rule(data=st.data(), fault=faults)
        def auto_reply(self, data: st.DataObject, fault: tuple[int, bool] | None) -> None:
            conv: _Conversation = data.draw(st.sampled_from(self.model), label="conversation")
            n = next(self.ids)
            mid = f"auto-{n}@client.example"
            raw = _mail(
                sender=conv.requester,
                subject=f"Automatic reply: {conv.subject}",
                message_id=mid,
                in_reply_to=f"<{conv.message_ids[-1]}>",
                auto=True,
            )
            self._run(_Pending(raw, self._provenance(), conv, "auto", mid), fault)

        @precondition(lambda self: sum(1 for c in self.model if c.merged_into is None) >= 2)
        @rule(data=st.data())
        def merge_tickets(self, data: st.DataObject) -> None:
            """Merge one ticket into another; later replies to the first must land on the survivor."""
            live = [c for c in self.model if c.merged_into is None]
            source: _Conversation = data.draw(st.sampled_from(live), label="merged")
            target: _Conversation = data.draw(st.sampled_from([c for c in live if c is not source]), label="into")
            with self.inner.unit_of_work() as uow:
                uow.set_status(
                    _present(source.ticket, "the merged ticket"),
                    "merged",
                    merged_into=_present(target.ticket, "the surviving ticket"),
                )
            source.merged_into = target

        @precondition(lambda self: any(not c.closed and c.merged_into is None for c in self.model))
        @rule(data=st.data())
        def close_ticket(self, data: st.DataObject) -> None:
            conv: _Conversation = data.draw(
                st.sampled_from([c for c in self.model if not c.closed and c.merged_into is None])
            )
            ticket = _present(conv.ticket, "the conversation's ticket")
            with self.inner.unit_of_work() as uow:
                uow.set_status(ticket, "closed")
            conv.closed = True

        @precondition(lambda self: bool(self.sent))
        @rule(data=st.data())
        def redeliver(self, data: st.DataObject) -> None:
            sent: _Sent = data.draw(st.sampled_from(self.sent), label="sent")
            before = self._snapshot()
            outcome = self.pipeline.process_email(sent.raw, provenance=sent.provenance)
            _expect(outcome.action == "duplicate", f"unexpected outcome {outcome!r}")
            _expect(outcome.already_processed, "outcome.already_processed")
            _expect(
                (outcome.ticket, outcome.entry_id) == (sent.outcome.ticket, sent.outcome.entry_id),
                "(outcome.ticket, outcome.entry_id) == (sent.outcome.ticket, sent.outcome.entry_id)",
            )
            _expect(self._snapshot() == before, "a redelivery had an effect")
            _expect(self.pipeline.is_processed(sent.provenance), "self.pipeline.is_processed(sent.provenance)")

        @precondition(lambda self: any(s.outcome.action in ("created", "appended") for s in self.sent))
        @rule(data=st.data(), fault=faults)
        def duplicate_elsewhere(self, data: st.DataObject, fault: tuple[int, bool] | None) -> None:
            sent: _Sent = data.draw(st.sampled_from([s for s in self.sent if s.outcome.action != "ignored"]))
            provenance = self._provenance("Archive")
            before = self._snapshot()
            if fault is not None:
                self.backend.arm(fault[0], InjectedFault("injected") if fault[1] else BackendError("injected"))
            try:
                outcome = self.pipeline.process_email(sent.raw, provenance=provenance)
            except BackendError:
                _expect(self._snapshot() == before, "self._snapshot() == before")
                return
            finally:
                self.backend.disarm()
            if outcome.action == "failed":
                _expect(self.backend.fired is not None, f"failed without an injected fault: {outcome.reasons}")
                self.audit_expected += 1
                return
            _expect(outcome.action == "duplicate", f"unexpected outcome {outcome!r}")
            _expect(not outcome.already_processed, "not outcome.already_processed")
            _expect(outcome.ticket == sent.outcome.ticket, "outcome.ticket == sent.outcome.ticket")
            tickets, entries, _ = self._snapshot()
            _expect((tickets, entries) == before[:2], "(tickets, entries) == before[:2]")
            self.audit_expected += 1

        @precondition(lambda self: bool(self.pending))
        @rule(data=st.data())
        def retry_failed(self, data: st.DataObject) -> None:
            pending: _Pending = data.draw(st.sampled_from(self.pending), label="pending")
            self.pending.remove(pending)
            if pending.kind != "new" and pending.conversation.ticket is None:
                return  # its conversation never got a ticket
            self._run(pending, None)

        # -- invariants -----------------------------------------------------------------------------

        @invariant()
        def one_ticket_per_conversation(self) -> None:
            tickets = {t.number: t for t in self.inner.list_tickets()}
            _expect(sorted(tickets) == sorted(c.ticket for c in self.model if c.ticket), "tickets != conversations")
            for conv in self.model:
                ticket = tickets[_present(conv.ticket, "the conversation's ticket")]
                expected = "merged" if conv.merged_into else "closed" if conv.closed else "open"
                _expect(ticket.status == expected, f"ticket {ticket.number} is {ticket.status}, expected {expected}")
                if conv.merged_into is not None:
                    _expect(ticket.merged_into == conv.merged_into.ticket, "merged into the wrong ticket")
                _expect(ticket.requester.email == conv.requester, "ticket.requester.email == conv.requester")

        @invariant()
        def every_message_on_its_ticket(self) -> None:
            for conv in self.model:
                entries = self.inner.entries(_present(conv.ticket, "the conversation's ticket"))
                _expect(
                    [e.message_id for e in entries] == conv.message_ids,
                    "[e.message_id for e in entries] == conv.message_ids",
                )
                _expect([e.id for e in entries] == conv.entries, "[e.id for e in entries] == conv.entries")

        @invariant()
        def audit_log_complete(self) -> None:
            records = list(self.inner.audit_log())
            _expect(
                len(records) == self.audit_expected, f"{len(records)} audit records, expected {self.audit_expected}"
            )
            committed = {(s.provenance, s.outcome.ticket) for s in self.sent}
            audited = {(r.provenance, r.ticket) for r in records if r.action != "failed"}
            _expect(committed <= audited, "a committed message has no audit record")

    PipelineMachine.TestCase.settings = _settings(steps)
    return PipelineMachine


def _settings(steps: int) -> Any:
    from hypothesis import HealthCheck, settings

    return settings(stateful_step_count=steps, deadline=None, suppress_health_check=[HealthCheck.too_slow])
