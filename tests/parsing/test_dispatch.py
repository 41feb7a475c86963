"""The dispatcher: parse(body, content_type=..., format=...)."""

from __future__ import annotations

import pytest

from ticketmail.errors import MalformedJSONError, UnsupportedContentTypeError
from ticketmail.model import InboundEmail, TicketRequest
from ticketmail.parsing import format_for_content_type, parse, sniff_format

EMAIL = b"From: Bob <bob@example.com>\r\nTo: help@example.com\r\nSubject: Printer\r\n\r\nIt is on fire.\r\n"


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", "json"),
        ("Application/JSON; charset=utf-8", "json"),
        ("application/vnd.osticket+json", "json"),
        ("application/xml", "xml"),
        ("text/xml; charset=iso-8859-1", "xml"),
        ("application/atom+xml", "xml"),
        ("message/rfc822", "email"),
    ],
)
def test_content_types(content_type: str, expected: str) -> None:
    assert format_for_content_type(content_type) == expected


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x", "", "application/pdf"])
def test_unsupported_content_types(content_type: str) -> None:
    with pytest.raises(UnsupportedContentTypeError) as info:
        format_for_content_type(content_type)
    assert (info.value.code, info.value.status) == ("unsupported_content_type", 415)


def test_dispatch_by_content_type(osticket_json: bytes, osticket_xml: bytes) -> None:
    assert isinstance(parse(osticket_json, content_type="application/json"), TicketRequest)
    assert isinstance(parse(osticket_xml, content_type="text/xml"), TicketRequest)
    with pytest.raises(MalformedJSONError):
        parse(osticket_xml, content_type="application/json")
    with pytest.raises(UnsupportedContentTypeError):
        parse(osticket_json, content_type="text/plain")


def test_explicit_format_wins(osticket_json: bytes) -> None:
    with pytest.raises(MalformedJSONError):
        parse(b"<ticket/>", format="json", content_type="application/xml")
    with pytest.raises(UnsupportedContentTypeError, match="unknown format"):
        parse(osticket_json, format="yaml")


def test_sniffing(osticket_json: bytes, osticket_xml: bytes) -> None:
    assert sniff_format(osticket_json) == "json"
    assert sniff_format(b"\xef\xbb\xbf  \n[1]") == "json"
    assert sniff_format(osticket_xml) == "xml"
    assert sniff_format("<ticket/>".encode("utf-16")) == "xml"
    assert sniff_format(EMAIL) == "email"
    assert sniff_format(b"From bob@example.com Sat Jan  3 01:05:34 1996\nSubject: x\n\nbody") == "email"
    assert sniff_format(b"Received: from x by y; Sat, 1 Jan 2000 00:00:00 +0000\n") == "email"
    assert sniff_format(b"hello world") is None
    assert sniff_format(b"") is None
    with pytest.raises(UnsupportedContentTypeError, match="cannot tell"):
        parse(b"hello world")


def test_email_is_dispatched_to_the_mime_parser() -> None:
    result = parse(EMAIL)
    assert isinstance(result, InboundEmail)
    assert result.subject == "Printer"
    assert isinstance(parse(EMAIL, content_type="message/rfc822"), InboundEmail)


def test_body_types(osticket_json: bytes) -> None:
    from ticketmail.errors import TypeMismatchError

    assert isinstance(parse(osticket_json.decode()), TicketRequest)  # type: ignore[arg-type]
    assert isinstance(parse(bytearray(osticket_json)), TicketRequest)  # type: ignore[arg-type]
    with pytest.raises(TypeMismatchError) as info:
        parse(None)  # type: ignore[arg-type]
    assert info.value.field == "body"


def test_email_size_limit_only_when_limits_are_given() -> None:
    from ticketmail.errors import PayloadTooLargeError
    from ticketmail.parsing import Limits

    with pytest.raises(PayloadTooLargeError):
        parse(EMAIL, limits=Limits(max_payload_bytes=10))
    big = EMAIL + b"x" * (26 * 1024 * 1024)  # above the payload default, below the email parser's own limit
    assert isinstance(parse(big, format="email"), InboundEmail)
