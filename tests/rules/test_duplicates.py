"""Duplicate keys and the content fingerprint."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.errors import InvalidValueError
from ticketmail.model import Address, Attachment, InboundEmail, MailboxContext, MessageBody, TicketRequest
from ticketmail.rules import duplicate_keys, fingerprint

CTX = MailboxContext(name="support", addresses=("support@desk.example", "billing@desk.example"))


def mail(**kw: object) -> InboundEmail:
    kw.setdefault("message_id", "abc@mail.example")
    kw.setdefault("from_", Address("Alice@Example.COM"))
    kw.setdefault("subject", "Printer")
    kw.setdefault("text", "It is broken.")
    return InboundEmail(**kw)  # type: ignore[arg-type]


def test_global_key_is_message_id_and_sender() -> None:
    assert duplicate_keys(mail(), scope="global", context=CTX) == ("g|mid:abc@mail.example:alice@example.com",)


def test_same_message_id_from_another_sender_is_not_the_same_key() -> None:
    a = duplicate_keys(mail(), scope="global", context=CTX)
    b = duplicate_keys(mail(from_=Address("mallory@evil.example")), scope="global", context=CTX)
    assert set(a).isdisjoint(b)


def test_scopes() -> None:
    m = mail(delivered_to=("billing@desk.example",))
    assert duplicate_keys(m, scope="mailbox", context=CTX)[0].startswith("mb:support|")
    assert duplicate_keys(m, scope="destination", context=CTX)[0].startswith("to:billing@desk.example|")
    other = MailboxContext(name="sales")
    assert duplicate_keys(m, scope="global", context=CTX) == duplicate_keys(m, scope="global", context=other)
    assert duplicate_keys(m, scope="mailbox", context=CTX) != duplicate_keys(m, scope="mailbox", context=other)


def test_destination_falls_back_to_own_address_in_to_then_mailbox() -> None:
    m = mail(to=(Address("someone@else.example"), Address("Billing@desk.example")))
    assert duplicate_keys(m, scope="destination", context=CTX)[0].startswith("to:billing@desk.example|")
    assert duplicate_keys(mail(), scope="destination", context=CTX)[0].startswith("to:support|")


def test_one_mail_to_two_departments() -> None:
    a = mail(delivered_to=("sales@desk.example",))
    b = mail(delivered_to=("billing@desk.example",))
    assert set(duplicate_keys(a, scope="destination", context=CTX)).isdisjoint(
        duplicate_keys(b, scope="destination", context=CTX)
    )
    assert duplicate_keys(a, scope="global", context=CTX) == duplicate_keys(b, scope="global", context=CTX)


def test_microsoft_original_id_and_loop_token() -> None:
    m = mail(
        headers=(("X-Microsoft-Original-Message-ID", "<orig@outlook.example>"), ("X-Ticketmail-Loop", "tm-77")),
    )
    keys = duplicate_keys(m, scope="global", context=CTX)
    assert keys[1] == "g|omid:orig@outlook.example:alice@example.com"
    assert keys[2] == "g|loop:tm-77"
    rewritten = mail(message_id="rewritten@exchange.example", headers=m.headers)
    assert set(keys) & set(duplicate_keys(rewritten, scope="global", context=CTX))


def test_generated_message_id_uses_fingerprint() -> None:
    m = mail(message_id="generated-1@ticketmail", message_id_generated=True)
    keys = duplicate_keys(m, scope="global", context=CTX)
    assert keys == (f"g|fp:{fingerprint(m)}",)
    # Refetched: the parser generates another id (hash of other raw bytes), the fingerprint is the same.
    again = mail(message_id="generated-2@ticketmail", message_id_generated=True, to=(Address("x@y.example"),))
    assert duplicate_keys(again, scope="global", context=CTX) == keys


def test_fingerprint_definition() -> None:
    import hashlib

    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    att = Attachment(filename="a.txt", content_type="text/plain", data=b"hello")
    m = mail(date=when, subject="  Printer\tBROKEN ", text="Line one\n\n line  two", attachments=(att,))
    canonical = "\n".join(
        ["v1", "alice@example.com", "2024-05-01T10:00:00+00:00", "printer broken", "line one line two", att.sha256]
    )
    assert fingerprint(m) == hashlib.sha256(canonical.encode()).hexdigest()


def test_fingerprint_changes_with_content() -> None:
    assert fingerprint(mail(text="a")) != fingerprint(mail(text="b"))
    assert fingerprint(mail(subject="a")) != fingerprint(mail(subject="b"))
    assert fingerprint(mail(from_=Address("a@x.example"))) != fingerprint(mail(from_=Address("b@x.example")))


def test_requests_have_no_keys() -> None:
    req = TicketRequest(email=Address("a@b.example"), subject="s", message=MessageBody("m"))
    assert duplicate_keys(req, scope="global", context=CTX) == ()


def test_bad_scope() -> None:
    with pytest.raises(InvalidValueError):
        duplicate_keys(mail(), scope="planet", context=CTX)


@given(st.text(max_size=50), st.text(max_size=200))
def test_fingerprint_ignores_whitespace_and_case(subject: str, text: str) -> None:
    a = mail(subject=subject, text=text, message_id_generated=True)
    b = mail(subject=f" {subject.upper()} ", text=text.replace(" ", "  "), message_id_generated=True)
    if subject.upper().casefold() == subject.casefold():
        assert fingerprint(a) == fingerprint(b)
