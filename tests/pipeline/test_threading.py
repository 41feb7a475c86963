"""Threading: every route, merge redirects, identity and the unknown-sender / closed-ticket policies."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.backends.base import NewEntry, NewTicket
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.errors import ConfigError
from ticketmail.model import Address, InboundEmail
from ticketmail.threading import (
    ThreadingOptions,
    find_subject_tags,
    load_threading,
    resolve_thread,
    subject_tag,
)

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
ALICE = Address("alice@example.org", "Alice")


@pytest.fixture
def backend() -> InMemoryBackend:
    b = InMemoryBackend()
    with b.unit_of_work() as uow:
        for number, requester, _status in (
            ("ABC123", ALICE, "open"),
            ("CLOSED1", ALICE, "closed"),
            ("OLD999", ALICE, "open"),
        ):
            uow.create_ticket(NewTicket(number, f"subject {number}", requester, NOW))
            uow.append_entry(
                number, NewEntry("message", requester, "hi", NOW, message_id=f"first-{number}@example.org")
            )
        uow.set_status("CLOSED1", "closed")
        uow.set_status("OLD999", "merged", merged_into="ABC123")
        uow.record_message_id("ABC123", "out-1@desk.example", "outbound")
    return b


def mail(**kw: object) -> InboundEmail:
    kw.setdefault("message_id", "new@example.org")
    kw.setdefault("from_", ALICE)
    return InboundEmail(**kw)  # type: ignore[arg-type]


def resolve(backend: InMemoryBackend, message: InboundEmail, **kw: object):  # type: ignore[no-untyped-def]
    with backend.unit_of_work() as uow:
        return resolve_thread(message, uow, **kw)  # type: ignore[arg-type]


def test_no_match_opens_a_new_ticket(backend: InMemoryBackend) -> None:
    decision = resolve(backend, mail(subject="Printer broken"))
    assert decision.action == "new"
    assert decision.ticket is None
    assert decision.requester == ALICE
    assert [r.code for r in decision.reasons] == ["identity.from", "thread.new"]


def test_token_route_comes_first(backend: InMemoryBackend) -> None:
    # the references name CLOSED1's first message, but the signed token names ABC123
    message = mail(in_reply_to=("tok-ABC123@desk.example",), references=("first-CLOSED1@example.org",))
    decision = resolve(backend, message, verify_token=lambda mid: "ABC123" if mid.startswith("tok-") else None)
    assert (decision.action, decision.route, decision.ticket.number) == ("append", "token", "ABC123")


def test_invalid_token_falls_through_to_references(backend: InMemoryBackend) -> None:
    message = mail(in_reply_to=("out-1@desk.example",))
    decision = resolve(backend, message, verify_token=lambda mid: None)
    assert (decision.route, decision.ticket.number) == ("references", "ABC123")


def test_references_newest_first_and_capped(backend: InMemoryBackend) -> None:
    refs = ("first-ABC123@example.org", *(f"unknown{i}@x" for i in range(40)))
    # newest-first scan stops after 32 ids, before reaching the oldest (the only known one)
    assert resolve(backend, mail(references=refs)).action == "new"
    opts = ThreadingOptions(max_references=64)
    assert resolve(backend, mail(references=refs), options=opts).ticket.number == "ABC123"


def test_reference_with_angle_brackets(backend: InMemoryBackend) -> None:
    decision = resolve(backend, mail(references=("<first-ABC123@example.org>",)))
    assert decision.ticket.number == "ABC123"


@pytest.mark.parametrize(
    "subject",
    [
        "[#ABC123] printer",
        "Re: [#ABC123] printer",
        "AW: Re: Fwd: [#ABC123] printer",
        "SV:RE[2]: [ # ABC123 ] printer",
        "RE: printer [#abc123]",
        "Fwd:[#ABC123]",
    ],
)
def test_subject_tag_route(backend: InMemoryBackend, subject: str) -> None:
    decision = resolve(backend, mail(subject=subject))
    assert (decision.action, decision.route, decision.ticket.number) == ("append", "subject", "ABC123")


def test_subject_tag_of_unknown_ticket_is_no_match(backend: InMemoryBackend) -> None:
    assert resolve(backend, mail(subject="Re: [#NOPE42] x")).action == "new"


def test_custom_tag_format(backend: InMemoryBackend) -> None:
    opts = ThreadingOptions(subject_tag="Ticket {number}:")
    assert subject_tag("ABC123", opts) == "Ticket ABC123:"
    decision = resolve(backend, mail(subject="Re: Ticket ABC123: help"), options=opts)
    assert decision.route == "subject"


def test_plus_address_route(backend: InMemoryBackend) -> None:
    message = mail(to=(Address("support+ABC123@desk.example"),))
    decision = resolve(backend, message)
    assert (decision.route, decision.ticket.number) == ("plus_address", "ABC123")
    # restricted to the desk's addresses when they are known
    assert resolve(backend, message, own_addresses=("help@desk.example",)).action == "new"
    assert resolve(backend, message, own_addresses=("Support@desk.example",)).route == "plus_address"
    # envelope recipients count too; the route can be switched off
    envelope = mail(delivered_to=("support+ABC123@desk.example",))
    assert resolve(backend, envelope).route == "plus_address"
    assert resolve(backend, envelope, options=ThreadingOptions(plus_addressing=False)).action == "new"


def test_merged_ticket_redirects_to_survivor(backend: InMemoryBackend) -> None:
    decision = resolve(backend, mail(subject="Re: [#OLD999]"))
    assert decision.ticket.number == "ABC123"
    assert "thread.merged" in [r.code for r in decision.reasons]


def test_reply_to_identity_option(backend: InMemoryBackend) -> None:
    bob = Address("bob@example.org")
    message = mail(reply_to=(bob,))
    assert resolve(backend, message).requester == ALICE
    decision = resolve(backend, message, options=ThreadingOptions(requester="reply_to"))
    assert decision.requester == bob
    assert decision.reasons[0].code == "identity.reply_to"
    # without Reply-To, From is used even with the option
    assert resolve(backend, mail(), options=ThreadingOptions(requester="reply_to")).requester == ALICE


@pytest.mark.parametrize(
    ("policy", "action", "participant", "code"),
    [
        ("participant", "append", True, "thread.participant_added"),
        ("new_ticket", "new", False, "thread.unknown_sender_new"),
        ("reject", "reject", False, "thread.unknown_sender_reject"),
    ],
)
def test_unknown_sender_policy(
    backend: InMemoryBackend, policy: str, action: str, participant: bool, code: str
) -> None:
    message = mail(subject="Re: [#ABC123]", from_=Address("mallory@example.net"))
    opts = ThreadingOptions(unknown_sender=policy, untrusted_match="append")  # type: ignore[arg-type]
    decision = resolve(backend, message, options=opts)
    assert decision.action == action
    assert decision.add_participant is participant
    assert code in [r.code for r in decision.reasons]


def test_known_sender_is_case_insensitive(backend: InMemoryBackend) -> None:
    message = mail(subject="Re: [#ABC123]", from_=Address("ALICE@example.org"))
    decision = resolve(backend, message, options=ThreadingOptions(unknown_sender="reject"))
    assert decision.action == "append"
    assert not decision.add_participant


@pytest.mark.parametrize(("policy", "action"), [("reopen", "reopen"), ("new_linked", "new_linked")])
def test_closed_ticket_policy(backend: InMemoryBackend, policy: str, action: str) -> None:
    decision = resolve(backend, mail(subject="Re: [#CLOSED1]"), options=ThreadingOptions(closed_ticket=policy))  # type: ignore[arg-type]
    assert decision.action == action
    assert decision.ticket.number == "CLOSED1"


def test_automatic_mail_never_changes_closed_or_opens(backend: InMemoryBackend) -> None:
    closed = resolve(backend, mail(subject="Re: [#CLOSED1]"), automatic=True, may_open_ticket=False)
    assert closed.action == "ignore"
    assert "thread.closed_automatic" in [r.code for r in closed.reasons]
    unthreaded = resolve(backend, mail(subject="Out of office"), automatic=True, may_open_ticket=False)
    assert unthreaded.action == "ignore"
    stranger = mail(subject="Re: [#ABC123]", from_=Address("mailer-daemon@example.net"))
    appended = resolve(
        backend, stranger, automatic=True, may_open_ticket=False, options=ThreadingOptions(unknown_sender="reject")
    )
    assert appended.action == "append"
    assert not appended.add_participant


def test_no_sender_still_threads(backend: InMemoryBackend) -> None:
    decision = resolve(backend, InboundEmail(message_id="x@y", subject="Re: [#ABC123]"))
    assert decision.action == "append"
    assert decision.requester is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subject_tag": "no placeholder"},
        {"subject_tag": " {number} "},
        {"plus_separator": ""},
        {"plus_separator": "@"},
        {"unknown_sender": "maybe"},
        {"closed_ticket": "ignore"},
        {"requester": "sender"},
        {"number_pattern": "("},
        {"max_references": -1},
    ],
)
def test_bad_options_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        ThreadingOptions(**kwargs)  # type: ignore[arg-type]
    assert info.value.field is not None
    assert info.value.field.startswith("threading.")


@given(
    number=st.from_regex(r"[A-Z0-9]{4,12}", fullmatch=True),
    prefix=st.sampled_from(["", "Re: ", "AW: Fwd: ", "RE[3]:"]),
    text=st.text(max_size=30),
)
def test_tag_round_trip(number: str, prefix: str, text: str) -> None:
    subject = f"{prefix}{subject_tag(number)} {text}"
    assert find_subject_tags(subject)[0] == number


def test_policies_that_need_a_new_ticket_respect_may_open_ticket(backend: InMemoryBackend) -> None:
    stranger = mail(subject="Re: [#ABC123]", from_=Address("mallory@example.net"))
    opts = ThreadingOptions(unknown_sender="new_ticket", untrusted_match="append")
    assert resolve(backend, stranger, options=opts, may_open_ticket=False).action == "ignore"
    closed = mail(subject="Re: [#CLOSED1]")
    opts = ThreadingOptions(closed_ticket="new_linked")
    decision = resolve(backend, closed, options=opts, may_open_ticket=False)
    assert decision.action == "ignore"
    assert decision.reasons[-1].code == "thread.no_ticket"


class _Lookups:
    def ticket_by_number(self, number: str) -> None:
        return None

    def ticket_by_message_id(self, message_id: str) -> None:
        return None


@given(
    subject=st.text(max_size=80),
    refs=st.lists(st.text(max_size=40), max_size=50),
    to=st.lists(st.emails().map(Address), max_size=3),
)
def test_threading_never_raises(subject: str, refs: list[str], to: list[Address]) -> None:
    message = InboundEmail(message_id="x@y", subject=subject, references=tuple(refs), to=tuple(to))
    decision = resolve_thread(message, _Lookups(), verify_token=lambda mid: None)
    assert decision.action == "new"


def test_load_threading() -> None:
    opts = load_threading({"requester": "reply_to", "max_references": 8}, source="app.toml")
    assert (opts.requester, opts.max_references) == ("reply_to", 8)
    assert load_threading({}) == ThreadingOptions()
    for data, field in (
        ({"colour": "blue"}, "threading.colour"),
        ({"max_references": "8"}, "threading.max_references"),
        ({"plus_addressing": 1}, "threading.plus_addressing"),
        ({"max_references": True}, "threading.max_references"),
        ({"closed_ticket": "ignore"}, "threading.closed_ticket"),
    ):
        with pytest.raises(ConfigError) as info:
            load_threading(data, source="app.toml")
        assert info.value.field == field
        assert "app.toml" in info.value.message
