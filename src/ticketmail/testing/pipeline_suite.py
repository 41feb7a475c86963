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

Use it from a test module of your backend:

```python
from ticketmail.testing.pipeline_suite import pipeline_machine

TestMyBackendPipeline = pipeline_machine(lambda: MyBackend(...)).TestCase
```

The factory is called once per generated sequence; the machine closes the backend at the end. Every failed
check raises `AssertionError` with the values involved (the outcome, the tickets, the counts), so a failure in
your project reads as clearly as in ours, with or without pytest's assertion rewriting.

Settings for slow backends: no per-example deadline (a backend over a network database is never failed for being
slow, and Hypothesis' 200 ms default would trip on one), the `too_slow` health check off, `stateful_step_count`
from `steps`; `max_examples`, `derandomize` and the example database come from your active Hypothesis profile.
Pass `settings=` to choose them yourself (fewer examples for a remote database, say).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Literal

from hypothesis import HealthCheck
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ticketmail.backends.base import Backend
from ticketmail.errors import BackendError
from ticketmail.model import Provenance
from ticketmail.pipeline import Outcome, Pipeline
from ticketmail.testing._pipeline_model import Conversation, Pending, Sent, expect, mail, present, same
from ticketmail.testing._pipeline_support import (
    DOMAIN,
    WRITE_METHODS,
    FaultyBackend,
    InjectedFault,
    StepClock,
    build_mail,
)
from ticketmail.threading import subject_tag

__all__ = [
    "WRITE_METHODS",
    "FaultyBackend",
    "InjectedFault",
    "PipelineMachine",
    "StepClock",
    "build_mail",
    "pipeline_machine",
]

_KEY = b"pipeline-suite-signing-key-0001!"
_REQUESTERS = ("alice@example.org", "bob@example.net", "chen@example.com")

Fault = tuple[int, bool] | None
"""`None`, or `(n, unexpected)`: the `n`-th write raises (an `InjectedFault` if `unexpected`, else a
`BackendError`)."""

_FAULTS = st.none() | st.tuples(st.integers(min_value=1, max_value=8), st.booleans())


Route = Literal["in_reply_to", "references", "subject", "plus_address", "token"]
ROUTES: tuple[Route, ...] = ("in_reply_to", "references", "subject", "plus_address", "token")

Snapshot = tuple[int, tuple[tuple[str, int], ...], int]
"""How many tickets, each ticket's number and entry count, how many audit records."""


class PipelineMachine(RuleBasedStateMachine):
    """The pipeline's state machine over the backends `make_backend()` returns (see the module docstring).

    `pipeline_machine()` builds a concrete machine from a factory; or subclass this and override
    `make_backend()`, then set `TestCase.settings` yourself.
    """

    def make_backend(self) -> Backend:
        """A fresh backend for one generated sequence (closed by `teardown()`)."""
        raise NotImplementedError("override make_backend(), or build the machine with pipeline_machine()")

    def __init__(self) -> None:
        super().__init__()
        self.inner = self.make_backend()
        self.backend = FaultyBackend(self.inner)
        self.pipeline = Pipeline(self.backend, clock=StepClock(), token_keys=[_KEY])
        self.ids = itertools.count(1)
        self.model: list[Conversation] = []
        self.sent: list[Sent] = []
        self.pending: list[Pending] = []
        self.audit_expected = 0

    def teardown(self) -> None:
        """Close the backend of this sequence."""
        self.inner.close()

    # -- delivering messages -------------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        tickets = self.inner.list_tickets()
        audit = sum(1 for _ in self.inner.audit_log())
        return len(tickets), tuple((t.number, t.entry_count) for t in tickets), audit

    def _arm(self, fault: Fault) -> None:
        if fault is not None:
            n, unexpected = fault
            self.backend.arm(n, InjectedFault("injected") if unexpected else BackendError("injected"))

    def _provenance(self, mailbox: str = "INBOX") -> Provenance:
        return Provenance(mailbox, "imap", f"1:{next(self.ids)}")

    def _check_rolled_back(self, before: Snapshot, what: str) -> None:
        """A `BackendError` escaped: it must be the injected one, and nothing of the unit may remain."""
        expect(self.backend.fired is not None, f"a BackendError escaped from {what} without an injected fault")
        same(self._snapshot(), before, f"(tickets, entries, audit records) after a rolled-back {what}")

    def _check_failed(self, pending: Pending, outcome: Outcome, before: Snapshot) -> None:
        """A `failed` outcome: only after an injected fault; quarantined, audited once, nothing else."""
        expect(self.backend.fired is not None, f"failed without an injected fault: {outcome!r}")
        error = present(outcome.error, f"the error of the failed outcome {outcome!r}")
        same(error.code, "processing_failed", "the code of an injected failure")
        expect(not outcome.acknowledge, f"a failed outcome may be acknowledged: {outcome!r}")
        tickets, entries, audit = self._snapshot()
        same((tickets, entries), before[:2], "(tickets, entries) after a failed message")
        same(audit, before[2] + 1, "audit records after a failed message (one more)")
        expect(
            not self.pipeline.is_processed(pending.provenance), f"failed message {pending.provenance} is in the ledger"
        )
        kept = [(q.provenance, len(q.raw)) for q in self.inner.quarantined()]
        expect(
            any(q.provenance == pending.provenance and q.raw == pending.raw for q in self.inner.quarantined()),
            f"failed message {pending.provenance} is not quarantined with its raw bytes; quarantine: {kept}",
        )

    def _deliver(self, pending: Pending, fault: Fault) -> Outcome | None:
        """Process one message, maybe with a fault armed; return the outcome when it committed."""
        before = self._snapshot()
        self._arm(fault)
        try:
            outcome = self.pipeline.process_email(pending.raw, provenance=pending.provenance)
        except BackendError:
            self.backend.disarm()
            self._check_rolled_back(before, f"message {pending.message_id}")
            expect(
                not self.pipeline.is_processed(pending.provenance),
                f"rolled-back message {pending.provenance} is in the ledger",
            )
            self.pending.append(pending)
            return None
        self.backend.disarm()
        if outcome.action == "failed":
            self._check_failed(pending, outcome, before)
            self.audit_expected += 1
            self.pending.append(pending)
            return None
        expect(outcome.acknowledge, f"a committed outcome may not be acknowledged: {outcome!r}")
        return outcome

    def _commit(self, pending: Pending, outcome: Outcome) -> None:
        """Update the model for a committed message, checking its outcome."""
        conv = pending.conversation
        if pending.kind == "new":
            same(outcome.action, "created", f"the action of new conversation {pending.message_id} ({outcome!r})")
            ticket = present(outcome.ticket, f"the ticket of {outcome!r}")
            taken = [c.ticket for c in self.model]
            expect(ticket not in taken, f"ticket number {ticket} reused; taken: {taken}")
            conv.ticket = ticket
            self.model.append(conv)
        else:
            conv = conv.survivor()  # replies to a merged ticket go to the one it was merged into
            if pending.kind == "auto" and conv.closed:
                same((outcome.action, outcome.ticket), ("ignored", conv.ticket), "an auto-reply to a closed ticket")
                self._sent(pending, outcome)
                return
            what = f"{pending.kind} {pending.message_id} ({outcome!r})"
            same((outcome.action, outcome.ticket), ("appended", conv.ticket), f"(action, ticket) of {what}")
            if pending.kind == "reply":
                conv.closed = False
        conv.message_ids.append(pending.message_id)
        conv.entries.append(present(outcome.entry_id, f"the entry id of {outcome!r}"))
        self._sent(pending, outcome)

    def _sent(self, pending: Pending, outcome: Outcome) -> None:
        self.audit_expected += 1
        self.sent.append(Sent(pending.raw, pending.provenance, outcome))

    def _run(self, pending: Pending, fault: Fault) -> None:
        outcome = self._deliver(pending, fault)
        if outcome is not None:
            self._commit(pending, outcome)

    def _new(self, requester: str) -> Pending:
        n = next(self.ids)
        conv = Conversation(index=n, requester=requester, subject=f"Conversation {n}")
        mid = f"new-{n}@client.example"
        return Pending(
            mail(sender=requester, subject=conv.subject, message_id=mid), self._provenance(), conv, "new", mid
        )

    def _reply(self, conv: Conversation, route: Route) -> Pending:
        ticket = present(conv.ticket, f"the ticket of conversation {conv.index}")
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
            kwargs["to"] = f"support+{ticket}@{DOMAIN}"
        else:
            kwargs["in_reply_to"] = self.pipeline.outbound_message_id(ticket, conv.entries[-1], domain=DOMAIN)
        return Pending(mail(**kwargs), self._provenance(), conv, "reply", mid)

    # -- rules ------------------------------------------------------------------------------------------------

    @rule(requester=st.sampled_from(_REQUESTERS), fault=_FAULTS)
    def new_conversation(self, requester: str, fault: Fault) -> None:
        """A new conversation must open exactly one ticket."""
        self._run(self._new(requester), fault)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), route=st.sampled_from(ROUTES), fault=_FAULTS)
    def reply(self, data: st.DataObject, route: Route, fault: Fault) -> None:
        """A reply by `route` lands on its conversation's ticket (the survivor of a merge)."""
        conv: Conversation = data.draw(st.sampled_from(self.model), label="conversation")
        self._run(self._reply(conv, route), fault)

    @rule(data=st.data(), size=st.integers(min_value=2, max_value=5), fault=_FAULTS)
    def batch(self, data: st.DataObject, size: int, fault: Fault) -> None:
        """New conversations and replies in one `process_batch` (one unit of work)."""
        items: list[Pending] = []
        for _ in range(size):
            reply: bool = bool(self.model) and data.draw(st.booleans(), label="reply")
            if reply:
                conv = data.draw(st.sampled_from(self.model), label="conversation")
                items.append(self._reply(conv, "in_reply_to"))
            else:
                items.append(self._new(_REQUESTERS[len(items) % 3]))
        before = self._snapshot()
        self._arm(fault)
        try:
            outcomes = self.pipeline.process_batch([(p.raw, p.provenance) for p in items])
        except BackendError:
            self._check_rolled_back(before, f"batch of {len(items)}")
            self.pending.extend(items)
            return
        finally:
            self.backend.disarm()
        same(len(outcomes), len(items), "outcomes of the batch")
        for pending, outcome in zip(items, outcomes, strict=True):
            # an unexpected failure inside the batch is retried message by message, where the
            # (one-shot) fault no longer fires: every message must then have its normal effect
            expect(outcome.action != "failed", f"message {pending.message_id} of the batch failed: {outcome!r}")
            self._commit(pending, outcome)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), fault=_FAULTS)
    def auto_reply(self, data: st.DataObject, fault: Fault) -> None:
        """An auto-reply is appended to an open ticket and never reopens a closed one."""
        conv: Conversation = data.draw(st.sampled_from(self.model), label="conversation")
        n = next(self.ids)
        mid = f"auto-{n}@client.example"
        raw = mail(
            sender=conv.requester,
            subject=f"Automatic reply: {conv.subject}",
            message_id=mid,
            in_reply_to=f"<{conv.message_ids[-1]}>",
            auto=True,
        )
        self._run(Pending(raw, self._provenance(), conv, "auto", mid), fault)

    @precondition(lambda self: sum(1 for c in self.model if c.merged_into is None) >= 2)
    @rule(data=st.data())
    def merge_tickets(self, data: st.DataObject) -> None:
        """Merge one ticket into another; later replies to the first must land on the survivor."""
        live = [c for c in self.model if c.merged_into is None]
        source: Conversation = data.draw(st.sampled_from(live), label="merged")
        target: Conversation = data.draw(st.sampled_from([c for c in live if c is not source]), label="into")
        with self.inner.unit_of_work() as uow:
            uow.set_status(
                present(source.ticket, "the merged ticket"),
                "merged",
                merged_into=present(target.ticket, "the surviving ticket"),
            )
        source.merged_into = target

    @precondition(lambda self: any(not c.closed and c.merged_into is None for c in self.model))
    @rule(data=st.data())
    def close_ticket(self, data: st.DataObject) -> None:
        """Close an open ticket (a reply reopens it, an auto-reply does not)."""
        conv: Conversation = data.draw(
            st.sampled_from([c for c in self.model if not c.closed and c.merged_into is None])
        )
        ticket = present(conv.ticket, f"the ticket of conversation {conv.index}")
        with self.inner.unit_of_work() as uow:
            uow.set_status(ticket, "closed")
        conv.closed = True

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """The same mailbox item again: a `duplicate` with the first outcome's ticket and entry, no effect."""
        sent: Sent = data.draw(st.sampled_from(self.sent), label="sent")
        before = self._snapshot()
        outcome = self.pipeline.process_email(sent.raw, provenance=sent.provenance)
        same((outcome.action, outcome.already_processed), ("duplicate", True), f"a redelivery ({outcome!r})")
        same(
            (outcome.ticket, outcome.entry_id),
            (sent.outcome.ticket, sent.outcome.entry_id),
            "(ticket, entry) of a redelivery",
        )
        same(self._snapshot(), before, "(tickets, entries, audit records) after a redelivery")
        expect(self.pipeline.is_processed(sent.provenance), f"redelivered {sent.provenance} is not in the ledger")

    @precondition(lambda self: any(s.outcome.action in ("created", "appended") for s in self.sent))
    @rule(data=st.data(), fault=_FAULTS)
    def duplicate_elsewhere(self, data: st.DataObject, fault: Fault) -> None:
        """The same message through another mailbox: a `duplicate` of the first, no ticket changes."""
        sent: Sent = data.draw(st.sampled_from([s for s in self.sent if s.outcome.action != "ignored"]))
        before = self._snapshot()
        self._arm(fault)
        try:
            outcome = self.pipeline.process_email(sent.raw, provenance=self._provenance("Archive"))
        except BackendError:
            self._check_rolled_back(before, "duplicate")
            return
        finally:
            self.backend.disarm()
        if outcome.action == "failed":
            expect(self.backend.fired is not None, f"failed without an injected fault: {outcome!r}")
        else:
            what = f"a duplicate from another mailbox ({outcome!r})"
            same((outcome.action, outcome.already_processed), ("duplicate", False), what)
            same(outcome.ticket, sent.outcome.ticket, "the ticket of a duplicate")
            same(self._snapshot()[:2], before[:2], "(tickets, entries) after a duplicate")
        self.audit_expected += 1

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def retry_failed(self, data: st.DataObject) -> None:
        """A message that failed is delivered again and must now have its normal effect."""
        pending: Pending = data.draw(st.sampled_from(self.pending), label="pending")
        self.pending.remove(pending)
        if pending.kind != "new" and pending.conversation.ticket is None:
            return  # its conversation never got a ticket
        self._run(pending, None)

    # -- invariants -------------------------------------------------------------------------------------------

    @invariant()
    def one_ticket_per_conversation(self) -> None:
        """One ticket per conversation, with the status, merge target and requester the model expects."""
        tickets = {t.number: t for t in self.inner.list_tickets()}
        same(sorted(tickets), sorted(c.ticket for c in self.model if c.ticket), "ticket numbers")
        for conv in self.model:
            ticket = tickets[present(conv.ticket, f"the ticket of conversation {conv.index}")]
            expected = "merged" if conv.merged_into else "closed" if conv.closed else "open"
            same(ticket.status, expected, f"the status of ticket {ticket.number}")
            if conv.merged_into is not None:
                same(ticket.merged_into, conv.merged_into.ticket, f"the merge target of ticket {ticket.number}")
            same(ticket.requester.email, conv.requester, f"the requester of ticket {ticket.number}")

    @invariant()
    def every_message_on_its_ticket(self) -> None:
        """Every committed message on its conversation's ticket, in order, and nothing else."""
        for conv in self.model:
            number = present(conv.ticket, f"the ticket of conversation {conv.index}")
            entries = self.inner.entries(number)
            same([e.message_id for e in entries], conv.message_ids, f"the message ids on ticket {number}")
            same([e.id for e in entries], conv.entries, f"the entry ids on ticket {number}")

    @invariant()
    def audit_log_complete(self) -> None:
        """One audit record per committed effect and failure; every committed message audited."""
        records = list(self.inner.audit_log())
        same(len(records), self.audit_expected, "audit records")
        committed = {(s.provenance, s.outcome.ticket) for s in self.sent}
        audited = {(r.provenance, r.ticket) for r in records if r.action != "failed"}
        expect(
            committed <= audited, f"committed messages without an audit record: {sorted(map(str, committed - audited))}"
        )


def _suite_settings(steps: int = 40) -> Settings:
    """The machine's default settings: no deadline, `too_slow` off, `steps` steps; the rest from the profile."""
    return Settings(stateful_step_count=steps, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pipeline_machine(
    backend_factory: Callable[[], Backend], *, steps: int = 40, settings: Settings | None = None
) -> type[PipelineMachine]:
    """A `PipelineMachine` class that checks the pipeline on backends from `backend_factory`.

    Run it with `TestX = pipeline_machine(factory).TestCase` in a pytest module. `steps` bounds the length
    of each generated sequence; `settings` replaces the defaults (see the module
    docstring).
    """

    class Machine(PipelineMachine):
        def make_backend(self) -> Backend:
            return backend_factory()

    Machine.__name__ = Machine.__qualname__ = "PipelineMachine"
    Machine.TestCase.settings = settings if settings is not None else _suite_settings(steps)
    return Machine
