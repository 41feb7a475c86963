"""Properties: stdlib-built messages round-trip; any bytes give an InboundEmail or a TicketmailError."""

from __future__ import annotations

import attrs
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ticketmail.errors import TicketmailError
from ticketmail.model import InboundEmail
from ticketmail.parsing.mime import EmailOptions, parse_email
from ticketmail.testing.emails import GeneratedEmail, generated_emails, mutated_emails

FAST = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def parse_or_error(raw: bytes, options: EmailOptions | None = None) -> InboundEmail | TicketmailError:
    try:
        return parse_email(raw, options=options)
    except TicketmailError as exc:
        error = exc
    assert error.code in ("malformed_email", "payload_too_large")
    return error


@FAST
@given(generated_emails())
def test_generated_messages_round_trip(sample: GeneratedEmail) -> None:
    parsed = parse_email(sample.raw)
    assert parsed.from_ is not None
    assert parsed.from_.email == sample.sender_email.replace("xn--bcher-kva", "bücher")  # IDNA decoded
    assert parsed.from_.name == sample.sender_name
    assert parsed.subject == sample.subject
    assert parsed.text == sample.text
    assert [a.data for a in parsed.attachments] == [a.data for a in sample.attachments]
    assert [a.filename for a in parsed.attachments] == [a.filename for a in sample.attachments]
    assert [a.content_type for a in parsed.attachments] == [a.content_type for a in sample.attachments]
    assert (parsed.html is not None) == (sample.html is not None)
    assert not parsed.message_id_generated
    assert parsed.size == len(sample.raw)
    # Deterministic and eager.
    assert parse_email(sample.raw) == parsed
    attrs.asdict(parsed)


@FAST
@given(st.binary(max_size=4000))
@example(b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n--a\r\n--a--")
@example(b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n")
@example(b"Subject: =?utf-8?B?====?= =?x?Q?=ZZ?=\r\n\r\n")
@example(b"\x1b$B\x1b$B\r\n\r\n")
def test_arbitrary_bytes_never_raise_anything_else(raw: bytes) -> None:
    result = parse_or_error(raw)
    if isinstance(result, InboundEmail):
        for text in (result.text, result.subject, result.new_text, result.html or ""):
            text.encode("utf-8")  # always valid str
        attrs.asdict(result)


@FAST
@given(mutated_emails())
def test_mutated_messages_never_raise_anything_else(raw: bytes) -> None:
    result = parse_or_error(raw, EmailOptions(max_depth=5, max_parts=50, max_headers=50))
    if isinstance(result, InboundEmail):
        assert result.size == len(raw)
        for attachment in result.attachments:
            assert "/" not in attachment.filename
            assert "\\" not in attachment.filename


@FAST
@given(
    st.lists(
        st.sampled_from(
            [
                b"--b\r\n",
                b"Content-Type: multipart/mixed; boundary=b\r\n",
                b"\r\n",
                b"x\r\n",
                b"Content-Type: message/rfc822\r\n",
                b"Content-Transfer-Encoding: base64\r\n",
                b"=?utf-8?b?",
                b"\x00",
                b"\r",
                b"--b--\r\n",
            ]
        ),
        max_size=200,
    ).map(b"".join)
)
def test_structural_soup(raw: bytes) -> None:
    parse_or_error(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + raw)


HEADER_TOKENS = [
    b"From: a@b\r\n",
    b"\r",
    b"\n",
    b"\r\n",
    b" x\r\n",
    b"From x\r\n",
    b"\x00",
    b":\r\n",
    b"Subject:",
    b"=?utf-8?q?=C3?=",
    b"Content-Type: text/plain; charset=iso-2022-jp\r\n",
    b"\x1b$B",
    b"\xff",
    b" x\x00",
]


@FAST
@given(st.lists(st.sampled_from(HEADER_TOKENS), max_size=80).map(b"".join))
def test_header_soup(raw: bytes) -> None:
    result = parse_or_error(raw)
    if isinstance(result, InboundEmail):
        assert all("\x00" not in value for _, value in result.headers)
