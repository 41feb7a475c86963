"""The pipeline end to end on the in-memory backend: outcomes, exactly-once, failures, hooks."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.errors import BackendError, ConfigError, TicketmailError
from ticketmail.hooks import HookEvent, Hooks
from ticketmail.model import Address, MailboxContext, MessageBody, Provenance, TicketRequest
from ticketmail.pipeline import Outcome, Pipeline, ledger_key
from ticketmail.rules import load_rules
from ticketmail.testing.pipeline_suite import StepClock as Clock
from ticketmail.testing.pipeline_suite import build_mail
from ticketmail.threading import ThreadingOptions, subject_tag

KEY = b"k" * 32


def mail(**kw: Any) -> bytes:
    kw.setdefault("body", "The printer prints blank pages.\n")
    return build_mail(**kw)


def prov(key: str, mailbox: str = "INBOX") -> Provenance:
    return Provenance(mailbox, "imap", key)


def make(backend: InMemoryBackend, clock: Clock, **kw: Any) -> Pipeline:
    return Pipeline(backend, clock=clock, **kw)


def audit_actions(backend: InMemoryBackend) -> list[str]:
    return [a.action for a in backend.audit_log()]


def test_new_mail_creates_ticket(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock)
    out = pipe.process_email(mail(attachment=("a.bin", b"\x00\x01")), provenance=prov("1:1"))
    assert out.action == "created"
    assert out.acknowledge
    assert out.alert
    assert out.autorespond
    assert out.message_id == "m1@example.org"
    ticket = memory.get_ticket(out.ticket)
    assert ticket is not None
    assert ticket.subject == "Printer broken"
    assert ticket.requester.email == "alice@example.org"
    assert ticket.status == "open"
    assert ticket.mailbox == "default"
    [entry] = memory.entries(out.ticket)
    assert entry.id == out.entry_id
    assert entry.kind == "message"
    assert "blank pages" in entry.body
    assert memory.attachment(entry.attachments[0]) == b"\x00\x01"
    assert audit_actions(memory) == ["created"]
    assert pipe.is_processed(prov("1:1"))
    assert not pipe.is_processed(prov("1:2"))


def test_redelivery_has_no_second_effect(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock)
    first = pipe.process_email(mail(), provenance=prov("1:1"))
    again = pipe.process_email(mail(), provenance=prov("1:1"))
    assert again.action == "duplicate"
    assert again.already_processed
    assert again.acknowledge
    assert (again.ticket, again.entry_id) == (first.ticket, first.entry_id)
    assert len(memory.list_tickets()) == 1
    assert audit_actions(memory) == ["created"]


def test_same_message_other_mailbox_is_duplicate(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock)
    first = pipe.process_email(mail(), provenance=prov("1:1"))
    copy = pipe.process_email(mail(), provenance=prov("7:9", mailbox="Archive"))
    assert copy.action == "duplicate"
    assert not copy.already_processed
    assert copy.ticket == first.ticket
    assert copy.reasons[0].code == "duplicate.key"
    # and that copy's own redelivery is recognised as such
    assert pipe.process_email(mail(), provenance=prov("7:9", mailbox="Archive")).already_processed
    assert audit_actions(memory) == ["created", "duplicate"]


def test_mailbox_duplicate_scope(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock, duplicate_scope="mailbox")
    a = pipe.process_email(mail(), provenance=prov("1:1"), context=MailboxContext("sales"))
    b = pipe.process_email(mail(), provenance=prov("1:1", "other"), context=MailboxContext("billing"))
    assert (a.action, b.action) == ("created", "created")
    with pytest.raises(ConfigError):
        Pipeline(memory, duplicate_scope="everywhere")  # type: ignore[arg-type]


def test_reply_by_references(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock)
    first = pipe.process_email(mail(), provenance=prov("1:1"))
    reply = mail(
        subject="Different subject entirely",
        message_id="m2@example.org",
        in_reply_to="<m1@example.org>",
        references="<m1@example.org>",
        body="Still broken.\n\nOn Monday Alice wrote:\n> The printer prints blank pages.\n",
    )
    out = pipe.process_email(reply, provenance=prov("1:2"))
    assert (out.action, out.ticket) == ("appended", first.ticket)
    assert "thread.references" in [r.code for r in out.reasons]
    entries = memory.entries(first.ticket)
    assert [e.kind for e in entries] == ["message", "reply"]
    # a reply to the reply threads too (its id was recorded)
    third = mail(message_id="m3@example.org", in_reply_to="<m2@example.org>")
    assert pipe.process_email(third, provenance=prov("1:3")).ticket == first.ticket


def test_reply_by_subject_tag_and_plus_address(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock)
    first = pipe.process_email(mail(), provenance=prov("1:1"))
    tagged = mail(subject=f"AW: {subject_tag(first.ticket)} Printer", message_id="m2@example.org")
    out = pipe.process_email(tagged, provenance=prov("1:2"))
    assert (out.action, out.ticket) == ("appended", first.ticket)
    plus = mail(subject="hello", message_id="m3@example.org", to=f"support+{first.ticket}@desk.example")
    out = pipe.process_email(plus, provenance=prov("1:3"))
    assert (out.action, out.ticket) == ("appended", first.ticket)
    assert "thread.plus_address" in [r.code for r in out.reasons]


def test_reply_by_signed_token(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock, token_keys=[KEY])
    first = pipe.process_email(mail(), provenance=prov("1:1"))
    mid = pipe.outbound_message_id(first.ticket, first.entry_id, domain="desk.example")
    reply = mail(subject="edited", message_id="m2@example.org", in_reply_to=mid)
    out = pipe.process_email(reply, provenance=prov("1:2"))
    assert (out.action, out.ticket) == ("appended", first.ticket)
    assert "thread.token" in [r.code for r in out.reasons]
    # without the keys, the outbound id still threads by References (it was recorded)
    other = make(memory, clock)
    reply2 = mail(subject="edited", message_id="m3@example.org", in_reply_to=mid)
    out2 = other.process_email(reply2, provenance=prov("1:3"))
    assert (out2.ticket, out2.reasons[-1].code) == (first.ticket, "thread.references")
    with pytest.raises(ConfigError):
        other.outbound_message_id(first.ticket, 1, domain="desk.example")


def test_own_message_coming_back_is_a_loop(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock, token_keys=[KEY])
    first = pipe.process_email(mail(), provenance=prov("1:1"))
    mid = pipe.outbound_message_id(first.ticket, first.entry_id, domain="desk.example")
    out = pipe.process_email(mail(message_id=mid.strip("<>")), provenance=prov("1:2"))
    assert out.action == "ignored"
    assert out.reasons[0].code == "loop.own_message_id"
    assert len(memory.entries(first.ticket)) == 1


AUTO = {"Auto-Submitted": "auto-replied"}


def test_auto_reply_appends_but_never_opens(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock)
    first = pipe.process_email(mail(), provenance=prov("1:1"))
    ooo = mail(subject="Out of office", message_id="ooo@x", in_reply_to="<m1@example.org>", headers=AUTO)
    out = pipe.process_email(ooo, provenance=prov("1:2"))
    assert (out.action, out.ticket) == ("appended", first.ticket)
    assert not out.alert
    assert not out.autorespond
    stray = mail(subject="Out of office", message_id="ooo2@x", headers=AUTO)
    out = pipe.process_email(stray, provenance=prov("1:3"))
    assert out.action == "ignored"
    assert out.acknowledge
    assert "thread.no_ticket" in [r.code for r in out.reasons]
    assert len(memory.list_tickets()) == 1


def test_auto_reply_never_reopens(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock)
    first = pipe.process_email(mail(), provenance=prov("1:1"))
    with memory.unit_of_work() as uow:
        uow.set_status(first.ticket, "closed")
    ooo = mail(subject="Auto", message_id="ooo@x", in_reply_to="<m1@example.org>", headers=AUTO)
    assert pipe.process_email(ooo, provenance=prov("1:2")).action == "ignored"
    assert memory.get_ticket(first.ticket).status == "closed"
    human = mail(subject="Re: x", message_id="m2@x", in_reply_to="<m1@example.org>")
    out = pipe.process_email(human, provenance=prov("1:3"))
    assert (out.action, out.ticket) == ("appended", first.ticket)
    assert memory.get_ticket(first.ticket).status == "open"


def test_closed_ticket_new_linked(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock, threading=ThreadingOptions(closed_ticket="new_linked"))
    first = pipe.process_email(mail(), provenance=prov("1:1"))
    with memory.unit_of_work() as uow:
        uow.set_status(first.ticket, "closed")
    out = pipe.process_email(mail(message_id="m2@x", in_reply_to="<m1@example.org>"), provenance=prov("1:2"))
    assert out.action == "created"
    assert out.ticket != first.ticket
    assert dict(memory.get_ticket(out.ticket).custom_fields)["linked_ticket"] == first.ticket


def test_unknown_sender_becomes_participant(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock)
    first = pipe.process_email(mail(), provenance=prov("1:1"))
    bob = mail(sender="bob@example.org", message_id="m2@x", in_reply_to="<m1@example.org>")
    out = pipe.process_email(bob, provenance=prov("1:2"))
    assert out.action == "appended"
    assert memory.get_ticket(first.ticket).participants == ("bob@example.org",)
    strict = make(memory, clock, threading=ThreadingOptions(unknown_sender="reject"))
    carol = mail(sender="carol@example.org", message_id="m3@x", in_reply_to="<m1@example.org>")
    out = strict.process_email(carol, provenance=prov("1:3"))
    assert out.action == "rejected"
    assert out.acknowledge
    assert out.error is not None
    assert out.error.code == "rejected"


def test_rules_ignore_and_reject(memory: InMemoryBackend, clock: Clock) -> None:
    rules = load_rules(
        {
            "filters": [{"name": "no-spam", "type": "ignore", "keywords": ["viagra"]}],
            "rules": [
                {
                    "name": "no-lawyers",
                    "conditions": [{"field": "from_domain", "op": "equals", "value": "law.example"}],
                    "actions": {"reject": True},
                }
            ],
        }
    )
    pipe = make(memory, clock, rules=rules)
    spam = pipe.process_email(mail(subject="cheap viagra", message_id="s@x"), provenance=prov("1:1"))
    assert spam.action == "ignored"
    lawyer = pipe.process_email(mail(sender="x@law.example", message_id="l@x"), provenance=prov("1:2"))
    assert lawyer.action == "rejected"
    assert memory.list_tickets() == []
    assert audit_actions(memory) == ["ignored", "rejected"]
    # both are committed: redelivery is recognised
    assert pipe.process_email(mail(subject="cheap viagra", message_id="s@x"), provenance=prov("1:1")).already_processed


def test_unparseable_mail_is_quarantined(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock)
    out = pipe.process_email(b"", provenance=prov("1:1"))
    assert out.action == "failed"
    assert not out.acknowledge
    assert out.error is not None
    assert out.error.code == "malformed_email"
    again = pipe.process_email(b"", provenance=prov("1:1"))
    assert again.action == "failed"
    [q] = memory.quarantined()
    assert q.raw == b""
    assert q.reason_code == "malformed_email"
    assert q.provenance == prov("1:1")
    assert q.attempts == 2
    assert not pipe.is_processed(prov("1:1"))


class Boom(RuntimeError):
    pass


class FailingBackend:
    """Wraps a backend; raises ``error`` from the named unit-of-work method."""

    def __init__(self, inner: InMemoryBackend, method: str, error: BaseException, times: int = 1) -> None:
        self.inner = inner
        self.method = method
        self.error = error
        self.times = times

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextmanager
    def unit_of_work(self):  # type: ignore[no-untyped-def]
        with self.inner.unit_of_work() as uow:
            yield _Proxy(uow, self)


class _Proxy:
    def __init__(self, uow: Any, owner: FailingBackend) -> None:
        self._uow = uow
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        if name == self._owner.method and self._owner.times > 0:
            self._owner.times -= 1

            def fail(*a: Any, **k: Any) -> Any:
                raise self._owner.error

            return fail
        return getattr(self._uow, name)


def test_unexpected_error_rolls_back_and_quarantines(
    memory: InMemoryBackend, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    pipe = make(FailingBackend(memory, "record_audit", Boom("secret detail")), clock)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        out = pipe.process_email(mail(), provenance=prov("1:1"))
    assert out.action == "failed"
    assert out.error is not None
    assert out.error.code == "processing_failed"
    assert "secret detail" not in out.error.message
    assert "Boom" in out.error.message
    # rolled back: no ticket, no ledger row; the raw bytes are quarantined
    assert memory.list_tickets() == []
    assert not Pipeline(memory).is_processed(prov("1:1"))
    assert [q.reason_code for q in memory.quarantined()] == ["processing_failed"]
    assert "failed unexpectedly" in caplog.text


def test_quarantine_failure_is_a_backend_error(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(FailingBackend(memory, "record_audit", Boom(), times=2), clock)  # type: ignore[arg-type]
    with pytest.raises(BackendError):
        pipe.process_email(mail(), provenance=prov("1:1"))
    assert memory.list_tickets() == []
    assert memory.quarantined() == []


def test_backend_error_propagates(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(FailingBackend(memory, "append_entry", BackendError("disk full")), clock)  # type: ignore[arg-type]
    with pytest.raises(BackendError):
        pipe.process_email(mail(), provenance=prov("1:1"))
    assert memory.list_tickets() == []
    assert memory.quarantined() == []


def test_parser_crash_is_contained(memory: InMemoryBackend, clock: Clock) -> None:
    def parser(raw: bytes) -> Any:
        raise Boom("x")

    out = make(memory, clock, parser=parser).process_email(b"whatever", provenance=prov("1:1"))
    assert out.action == "failed"
    assert len(memory.quarantined()) == 1


def test_hooks_fire_after_commit_and_failures_are_contained(
    memory: InMemoryBackend, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, str | None, int]] = []

    def record(event: HookEvent) -> None:
        # the commit is visible from inside the hook
        count = event.ticket.entry_count if event.ticket else 0
        seen.append((event.kind, event.outcome.action, count))

    def broken(event: HookEvent) -> None:
        raise Boom("hook failed")

    hooks = Hooks(
        ticket_created=[broken, record],
        entry_appended=record,
        message_ignored=record,
        message_rejected=record,
        message_failed=record,
    )
    pipe = make(memory, clock, hooks=hooks)
    with caplog.at_level(logging.ERROR):
        created = pipe.process_email(mail(), provenance=prov("1:1"))
    assert created.action == "created"
    assert memory.get_ticket(created.ticket) is not None
    pipe.process_email(mail(message_id="m2@x", in_reply_to="<m1@example.org>"), provenance=prov("1:2"))
    pipe.process_email(mail(message_id="m3@x", headers=AUTO), provenance=prov("1:3"))
    pipe.process_email(b"", provenance=prov("1:4"))
    pipe.process_email(mail(), provenance=prov("1:1"))  # redelivery: no hook
    assert seen == [
        ("ticket_created", "created", 1),
        ("entry_appended", "appended", 2),
        ("message_ignored", "ignored", 0),
        ("message_failed", "failed", 0),
    ]
    assert "hook" in caplog.text


def request(**kw: Any) -> TicketRequest:
    kw.setdefault("email", Address("judith@example.org", "Judith"))
    kw.setdefault("subject", "Badge")
    kw.setdefault("message", MessageBody("Please make a badge."))
    return TicketRequest(**kw)


def test_process_request(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock)
    out = pipe.process_request(request(autorespond=False, priority=2), idempotency_key="abc")
    assert out.action == "created"
    assert out.alert
    assert not out.autorespond
    ticket = memory.get_ticket(out.ticket)
    assert (ticket.source, ticket.priority, ticket.requester.email) == ("API", 2, "judith@example.org")
    again = pipe.process_request(request(), idempotency_key="abc")
    assert again.action == "duplicate"
    assert again.already_processed
    assert again.ticket == out.ticket
    # without a key every request is a new ticket (submitting a form twice can be deliberate)
    assert pipe.process_request(request()).ticket != pipe.process_request(request()).ticket
    assert len(memory.list_tickets()) == 3


def test_request_failure_is_contained(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(FailingBackend(memory, "create_ticket", Boom()), clock)  # type: ignore[arg-type]
    out = pipe.process_request(request(), idempotency_key="k")
    assert out.action == "failed"
    assert memory.list_tickets() == []
    assert audit_actions(memory) == ["failed"]


def test_naive_clock_is_refused(memory: InMemoryBackend) -> None:
    import datetime as dt

    with pytest.raises(ConfigError):
        Pipeline(memory, clock=lambda: dt.datetime(2026, 1, 1))


def test_ledger_key() -> None:
    assert ledger_key(Provenance("INBOX", "imap", "5:7")) == "INBOX/imap/5:7"


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.binary(max_size=600)
    | st.text(max_size=400).map(lambda t: ("Subject: x\n\n" + t).encode("utf-8", "surrogatepass"))
)
def test_any_bytes_give_an_outcome(raw: bytes) -> None:
    backend = InMemoryBackend()
    out = Pipeline(backend, clock=Clock()).process_email(raw, provenance=Provenance("m", "pipe", "k"))
    assert isinstance(out, Outcome)
    assert out.error is None or isinstance(out.error, TicketmailError)
    if out.action == "failed":
        assert backend.quarantined()[0].raw == raw


def test_ticket_number_collisions_are_redrawn(memory: InMemoryBackend, clock: Clock) -> None:
    numbers = iter(["AAAA1111", "AAAA1111", "AAAA1111", "BBBB2222"])
    pipe = make(memory, clock, number_generator=lambda: next(numbers))
    assert pipe.process_email(mail(), provenance=prov("1:1")).ticket == "AAAA1111"
    assert pipe.process_email(mail(message_id="m2@x"), provenance=prov("1:2")).ticket == "BBBB2222"
    stuck = make(memory, clock, number_generator=lambda: "AAAA1111")
    out = stuck.process_email(mail(message_id="m3@x"), provenance=prov("1:3"))
    assert out.action == "failed"
    assert out.error is not None
    assert out.error.code == "ticket_numbers_exhausted"
    assert len(memory.list_tickets()) == 2


def test_reply_to_identity_opens_ticket_for_reply_to(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock, threading=ThreadingOptions(requester="reply_to"))
    raw = mail(sender="noreply@forms.example", headers={"Reply-To": "Real Person <real@example.org>"})
    out = pipe.process_email(raw, provenance=prov("1:1"))
    assert memory.get_ticket(out.ticket).requester.email == "real@example.org"
    assert "identity.reply_to" in [r.code for r in out.reasons]


def test_merged_ticket_receives_replies_on_survivor(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock)
    a = pipe.process_email(mail(), provenance=prov("1:1"))
    b = pipe.process_email(mail(message_id="m2@x", subject="other"), provenance=prov("1:2"))
    with memory.unit_of_work() as uow:
        uow.set_status(a.ticket, "merged", merged_into=b.ticket)
    out = pipe.process_email(mail(message_id="m3@x", in_reply_to="<m1@example.org>"), provenance=prov("1:3"))
    assert (out.action, out.ticket) == ("appended", b.ticket)
    assert "thread.merged" in [r.code for r in out.reasons]


def test_programming_errors_are_type_mismatch(memory: InMemoryBackend, clock: Clock) -> None:
    from ticketmail.errors import TypeMismatchError

    pipe = make(memory, clock)
    with pytest.raises(TypeMismatchError):
        pipe.process_email("text, not bytes", provenance=prov("1:1"))  # type: ignore[arg-type]
    with pytest.raises(TypeMismatchError):
        pipe.process_email(b"x", provenance="INBOX/1")  # type: ignore[arg-type]
    assert pipe.process_email(bytearray(mail()), provenance=prov("1:1")).action == "created"  # type: ignore[arg-type]


def test_recipients_as_participants(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(
        memory,
        clock,
        threading=ThreadingOptions(recipients_as_participants=True, unknown_sender="reject"),
        context=MailboxContext("support", addresses=("support@desk.example",)),
    )
    raw = mail(
        to="Support <support@desk.example>, boss@example.org",
        headers={"Cc": "Dana <dana@example.org>, support+x1y2@desk.example, alice@example.org"},
    )
    out = pipe.process_email(raw, provenance=prov("1:1"))
    assert memory.get_ticket(out.ticket).participants == ("boss@example.org", "dana@example.org")
    # so Dana's reply is accepted even with the strict unknown-sender policy
    reply = mail(sender="dana@example.org", message_id="m2@x", in_reply_to="<m1@example.org>")
    assert pipe.process_email(reply, provenance=prov("1:2")).action == "appended"
    # off by default
    other = make(memory, clock)
    out = other.process_email(mail(message_id="m3@x", headers={"Cc": "eve@example.org"}), provenance=prov("1:3"))
    assert memory.get_ticket(out.ticket).participants == ()


def test_notification_headers_thread_replies(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(memory, clock, token_keys=[KEY])
    first = pipe.process_email(mail(), provenance=prov("1:1"))
    second = pipe.process_email(mail(message_id="m2@x", in_reply_to="<m1@example.org>"), provenance=prov("1:2"))
    headers = pipe.notification_headers(first.ticket, second.entry_id, domain="desk.example")
    assert headers["In-Reply-To"] == "<m2@x>"
    assert headers["References"] == "<m1@example.org> <m2@x>"
    assert headers["Auto-Submitted"] == "auto-generated"
    assert pipe.verify_token(headers["Message-ID"]) == first.ticket
    staff = pipe.notification_headers(first.ticket, second.entry_id, domain="desk.example", kind=None)
    assert "Auto-Submitted" not in staff
    assert staff["Message-ID"] != headers["Message-ID"]
    # a requester replying to the notification threads by the token, whatever the subject says
    reply = mail(subject="new subject", message_id="m3@x", in_reply_to=headers["Message-ID"])
    out = pipe.process_email(reply, provenance=prov("1:3"))
    assert (out.action, out.ticket) == ("appended", first.ticket)
    from ticketmail.errors import NotFoundError

    with pytest.raises(NotFoundError):
        pipe.notification_headers("NOPE1234", 1, domain="desk.example")


def test_process_batch(memory: InMemoryBackend, clock: Clock) -> None:
    seen: list[str] = []
    pipe = make(memory, clock, hooks=Hooks(ticket_created=lambda e: seen.append(e.outcome.ticket or "")))
    items = [
        (mail(), prov("1:1")),
        (mail(message_id="m2@x", in_reply_to="<m1@example.org>"), prov("1:2")),  # threads onto the first
        (b"", prov("1:3")),  # unparseable: quarantined on its own
        (mail(), prov("1:1")),  # the same item twice in one batch
        (mail(message_id="m4@x", subject="other"), prov("1:4")),
    ]
    outcomes = pipe.process_batch(items)
    assert [o.action for o in outcomes] == ["created", "appended", "failed", "duplicate", "created"]
    assert outcomes[1].ticket == outcomes[0].ticket
    assert outcomes[3].already_processed
    assert seen == [outcomes[0].ticket, outcomes[4].ticket]
    assert pipe.process_batch([]) == []


def test_failure_inside_a_batch_costs_only_that_message(memory: InMemoryBackend, clock: Clock) -> None:
    # the second append_entry fails twice: once inside the batch, once when retried on its own
    backend = FailingBackend(memory, "append_entry", Boom(), times=0)
    pipe = make(backend, clock)  # type: ignore[arg-type]
    calls = {"n": 0}
    original = _Proxy.__getattr__

    def flaky(self: _Proxy, name: str) -> Any:
        if name == "append_entry":
            calls["n"] += 1
            if calls["n"] in (2, 4):  # batch: 1st ok, 2nd fails; retry: 3rd ok (msg 1), 4th fails (msg 2)

                def fail(*a: Any, **k: Any) -> Any:
                    raise Boom()

                return fail
        return original(self, name)

    _Proxy.__getattr__ = flaky  # type: ignore[method-assign]
    try:
        outcomes = pipe.process_batch([(mail(message_id=f"b{i}@x"), prov(f"2:{i}")) for i in range(3)])
    finally:
        _Proxy.__getattr__ = original  # type: ignore[method-assign]
    assert [o.action for o in outcomes] == ["created", "failed", "created"]
    assert len(memory.list_tickets()) == 2
    assert [q.provenance for q in memory.quarantined()] == [prov("2:1")]


def test_backend_error_in_a_batch_commits_nothing(memory: InMemoryBackend, clock: Clock) -> None:
    pipe = make(FailingBackend(memory, "record_audit", BackendError("down"), times=1), clock)  # type: ignore[arg-type]
    with pytest.raises(BackendError):
        pipe.process_batch([(mail(message_id=f"b{i}@x"), prov(f"2:{i}")) for i in range(3)])
    assert memory.list_tickets() == []


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raws=st.lists(st.binary(max_size=300) | st.sampled_from([mail(), mail(message_id="z@x")]), max_size=6))
def test_any_batch_gives_one_outcome_each(raws: list[bytes]) -> None:
    backend = InMemoryBackend()
    pipe = Pipeline(backend, clock=Clock())
    items = [(raw, Provenance("m", "pipe", str(i))) for i, raw in enumerate(raws)]
    outcomes = pipe.process_batch(items)
    assert len(outcomes) == len(raws)
    # the same as one by one, on a fresh backend
    single = Pipeline(InMemoryBackend(), clock=Clock())
    assert [o.action for o in outcomes] == [single.process_email(r, provenance=p).action for r, p in items]


def test_is_processed_reads_sqlite_ledger_without_the_write_lock(tmp_path: Any, clock: Clock) -> None:
    """A poller's skip check must answer while another process holds the write lock (no BEGIN IMMEDIATE)."""
    import sqlite3

    from ticketmail.backends.sqlite import SQLiteBackend

    path = tmp_path / "t.sqlite3"
    with SQLiteBackend(path, timeout=0.2) as backend:
        pipe = Pipeline(backend, clock=clock)
        assert pipe.process_email(mail(), provenance=prov("1:1")).action == "created"
        writer = sqlite3.connect(path, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # another ingester mid-transaction
            assert pipe.is_processed(prov("1:1"))
            assert not pipe.is_processed(prov("1:2"))
        finally:
            writer.execute("ROLLBACK")
            writer.close()
