"""The XML payload contract (POST /api/tickets.xml), including the defusedxml rules."""

from __future__ import annotations

import base64
import json

import pytest

from ticketmail.errors import (
    ForbiddenXMLError,
    InvalidEmailError,
    InvalidValueError,
    MalformedXMLError,
    MissingFieldError,
    NestingTooDeepError,
    TypeMismatchError,
    UnsupportedFieldError,
)
from ticketmail.model import Address, MessageBody, Phone
from ticketmail.parsing import Limits, parse_json, parse_xml

HEAD = b"<name>A</name><email>a@example.com</email><subject>S</subject>"


def ticket(inner: bytes, attrs: bytes = b"") -> bytes:
    return b"<ticket" + attrs + b">" + inner + b"</ticket>"


def test_osticket_documented_example(osticket_xml: bytes, gif_bytes: bytes) -> None:
    request = parse_xml(osticket_xml)
    assert request.email == Address("api@osticket.com", "Angry User")
    assert request.subject == "Testing API"
    assert request.phone == Phone("318-555-8634", "123")
    assert request.message == MessageBody("Message content here", "text/plain")
    assert request.ip == "123.211.233.122"
    assert (request.alert, request.autorespond, request.source) == (True, True, "API")
    text, image = request.attachments
    assert (text.filename, text.content_type) == ("file.txt", "text/plain")
    assert text.data == b"File content is here and is automatically trimmed"
    assert (image.filename, image.content_type, image.data) == ("image.gif", "image/gif", gif_bytes)


def test_simple_values_as_root_attributes() -> None:
    body = (
        b'<ticket name="A" email="a@example.com" subject="S" alert="false" priority="2"><message>m</message></ticket>'
    )
    request = parse_xml(body)
    assert (request.name, request.subject, request.alert, request.priority) == ("A", "S", False, 2)


def test_html_message_with_cdata() -> None:
    request = parse_xml(ticket(HEAD + b'<message type="text/html"><![CDATA[<p>Hi & "bye"</p>]]></message>'))
    assert request.message == MessageBody('<p>Hi &amp; "bye"</p>', "text/html")  # sanitized, re-serialized


def test_base64_message_with_charset() -> None:
    encoded = base64.b64encode("Grüße".encode("iso-8859-1"))
    body = ticket(HEAD + b'<message encoding="base64" charset="iso-8859-1">' + encoded + b"</message>")
    assert parse_xml(body).message.text == "Grüße"


def test_message_charset_encoding_attribute_is_accepted() -> None:
    # osTicket treats message@encoding as a charset; the XML layer already decoded the text.
    assert parse_xml(ticket(HEAD + b'<message encoding="utf-8">hi</message>')).message.text == "hi"
    with pytest.raises(InvalidValueError) as info:
        parse_xml(ticket(HEAD + b'<message encoding="rot13x">hi</message>'))
    assert info.value.field == "message.encoding"


@pytest.mark.parametrize(
    ("encoding", "text"),
    [("windows-1252", "Renée €"), ("iso-8859-1", "Renée"), ("iso-8859-15", "Renée €"), ("koi8-r", "Привет")],
)
def test_declared_encoding_is_honoured(encoding: str, text: str) -> None:
    xml = f'<?xml version="1.0" encoding="{encoding}"?><ticket><name>{text}</name><email>a@example.com</email>'
    xml += "<subject>S</subject><message>m</message></ticket>"
    assert parse_xml(xml.encode(encoding)).name == text


def test_utf16_with_bom() -> None:
    xml = '<?xml version="1.0" encoding="UTF-16"?>' + ticket(HEAD).decode()[:-9] + "<message>Grüße</message></ticket>"
    assert parse_xml(xml.encode("utf-16")).message.text == "Grüße"


def test_unknown_declared_encoding() -> None:
    with pytest.raises(MalformedXMLError, match="unknown XML encoding"):
        parse_xml(b'<?xml version="1.0" encoding="x-nope"?><ticket/>')


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<ticket><name>&lol3;</name></ticket>"""
XXE = (
    b"""<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]><ticket><name>&x;</name></ticket>"""
)
EXTERNAL_DTD = b'<?xml version="1.0"?><!DOCTYPE ticket SYSTEM "http://example.invalid/t.dtd"><ticket/>'
PARAMETER_ENTITY = b'<!DOCTYPE t [<!ENTITY % p SYSTEM "http://example.invalid/p">%p;]><ticket/>'


@pytest.mark.parametrize("body", [BILLION_LAUGHS, XXE, EXTERNAL_DTD, PARAMETER_ENTITY, b"<!DOCTYPE ticket><ticket/>"])
def test_dtds_entities_and_external_references_are_forbidden(body: bytes) -> None:
    with pytest.raises(ForbiddenXMLError) as info:
        parse_xml(body)
    assert info.value.code == "forbidden_xml"
    assert info.value.status == 400


@pytest.mark.parametrize(
    "body",
    [b"", b"<ticket>", b"not xml", b"<ticket><name>&undefined;</name></ticket>", b"<a/><b/>", b"<ticket/>junk"],
)
def test_malformed_xml(body: bytes) -> None:
    with pytest.raises(MalformedXMLError):
        parse_xml(body)


def test_root_must_be_ticket() -> None:
    with pytest.raises(MalformedXMLError, match="<ticket>"):
        parse_xml(b"<request><name>A</name></request>")


def test_strictness_names_fields() -> None:
    cases = [
        (ticket(HEAD + b'<message foo="1">m</message>'), UnsupportedFieldError, "message.foo"),
        (ticket(HEAD + b"<message>m</message><colour>red</colour>"), UnsupportedFieldError, "colour"),
        (ticket(HEAD + b"<message><b>m</b></message>"), TypeMismatchError, "message"),
        (ticket(HEAD + b"<message>m</message>", b' subject="T"'), InvalidValueError, "subject"),
        (ticket(HEAD + b"<message>m</message><message>n</message>"), InvalidValueError, "message"),
        (ticket(HEAD + b"<message>m</message>text"), TypeMismatchError, "ticket"),
        (ticket(b"text" + HEAD + b"<message>m</message>"), TypeMismatchError, "ticket"),
        (ticket(HEAD + b'<message>m</message><phone x="1">5</phone>'), UnsupportedFieldError, "phone.x"),
        (ticket(HEAD + b"<message>m</message><attachments><img/></attachments>"), UnsupportedFieldError,
         "attachments[0]"),
        (ticket(HEAD + b"<message>m</message><attachments><file>x</file></attachments>"), MissingFieldError,
         "attachments[0].name"),
        (ticket(HEAD + b'<message>m</message><attachments><file name="a" mode="x">x</file></attachments>'),
         UnsupportedFieldError, "attachments[0].mode"),
        (ticket(HEAD + b"<message>m</message><email>b@example.com</email>"), InvalidValueError, "email"),
    ]  # fmt: skip
    for body, error, field in cases:
        with pytest.raises(error) as info:
            parse_xml(body)
        assert info.value.field == field, body


def test_unknown_elements_can_be_ignored() -> None:
    body = ticket(HEAD + b'<message>m</message><colour>red</colour><extra a="1"><b/>text</extra>')
    assert parse_xml(body, ignore_unknown_fields=True).custom_fields == {}
    with pytest.raises(UnsupportedFieldError) as info:
        parse_xml(body)
    assert info.value.field == "colour"


def test_depth_is_limited_while_parsing() -> None:
    deep = b"<ticket>" + b"<a>" * 50 + b"</a>" * 50 + b"</ticket>"
    with pytest.raises(NestingTooDeepError):
        parse_xml(deep)
    with pytest.raises(NestingTooDeepError):
        parse_xml(b"<ticket><a><b/></a></ticket>", limits=Limits(max_depth=2))


def test_element_count_is_limited() -> None:
    with pytest.raises(Exception) as info:
        parse_xml(b"<ticket>" + b"<a/>" * 100_000 + b"</ticket>")
    assert info.value.code == "payload_too_large"  # type: ignore[attr-defined]


def test_json_and_xml_share_validation() -> None:
    """The same bad value yields the same error code and field in both formats."""
    cases = {
        "ip": "1.2.3",
        "email": "nope",
        "priority": "high",
        "alert": "perhaps",
        "phone": "no digits",
        "notes": "a\x01b",
    }
    base = {"name": "A", "email": "a@example.com", "subject": "S", "message": "m"}
    for field, value in cases.items():
        data = {**base, field: value}
        inner = "".join(f"<{k}>{v}</{k}>" for k, v in data.items() if k != "notes")
        if field == "notes":
            inner += "<notes>a&#1;b</notes>"  # not well-formed in XML 1.0
        with pytest.raises(Exception) as from_json:
            parse_json(json.dumps(data).encode())
        with pytest.raises(Exception) as from_xml:
            parse_xml(f"<ticket>{inner}</ticket>".encode())
        if field == "notes":
            assert from_xml.value.code == "malformed_xml"  # type: ignore[attr-defined]
            continue
        assert (from_json.value.code, from_json.value.field) == (  # type: ignore[attr-defined]
            from_xml.value.code,  # type: ignore[attr-defined]
            from_xml.value.field,  # type: ignore[attr-defined]
        ), field


def test_invalid_email_in_xml() -> None:
    with pytest.raises(InvalidEmailError):
        parse_xml(ticket(b"<name>A</name><email>x</email><subject>S</subject><message>m</message>"))


def test_message_as_root_attribute_is_plain_text() -> None:
    body = b'<ticket name="A" email="a@example.com" subject="S" message="data:text/html,&lt;b&gt;x&lt;/b&gt;"/>'
    assert parse_xml(body).message == MessageBody("data:text/html,<b>x</b>", "text/plain")
