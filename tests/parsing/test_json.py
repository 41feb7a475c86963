"""The JSON payload contract (POST /api/tickets.json)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from ticketmail.errors import (
    InputError,
    InvalidBase64Error,
    InvalidEmailError,
    InvalidValueError,
    MalformedJSONError,
    MissingFieldError,
    TypeMismatchError,
    UnsupportedFieldError,
)
from ticketmail.model import Address, MessageBody, Phone
from ticketmail.parsing import parse_json


def test_osticket_documented_example(osticket_json: bytes, gif_bytes: bytes) -> None:
    request = parse_json(osticket_json)
    assert request.email == Address("api@osticket.com", "Angry User")
    assert request.name == "Angry User"
    assert request.subject == "Testing API"
    assert request.message == MessageBody("MESSAGE <b>HERE</b>", "text/html")
    assert request.phone == Phone("3185558634", "123")
    assert request.ip == "123.211.233.122"
    assert (request.alert, request.autorespond, request.source) == (True, True, "API")
    text, image = request.attachments
    assert (text.filename, text.content_type, text.charset, text.data) == (
        "file.txt",
        "text/plain",
        "utf-8",
        b"content",
    )
    assert (image.filename, image.content_type, image.data) == ("image.png", "image/png", gif_bytes)
    assert image.size == len(gif_bytes)
    assert image.sniffed_type == "image/gif"  # declared image/png: the bytes say otherwise
    assert text.sniffed_type is None
    assert image.sha256 == hashlib.sha256(gif_bytes).hexdigest()


def test_osticket_verbatim_example_fails_clearly(osticket_json_verbatim: bytes) -> None:
    # The documented example has a trailing comma (which the same page says JSON forbids) ... CPython 3.13
    # names the comma's own line (13) and says "trailing comma"; older versions name the next token's (14).
    with pytest.raises(MalformedJSONError, match=r"line 1[34]"):
        parse_json(osticket_json_verbatim)
    # ... and an elided base64 string ("R0lGODdhMAA...").
    fixed = osticket_json_verbatim.replace(b"},\n    ]", b"}\n    ]")
    with pytest.raises(InvalidBase64Error) as info:
        parse_json(fixed)
    assert info.value.field == "attachments[1].data"


def test_defaults(make_payload: Any) -> None:
    request = parse_json(make_payload())
    assert request.message == MessageBody("MESSAGE HERE", "text/plain")
    assert (request.alert, request.autorespond, request.source) == (True, True, "API")
    assert (request.phone, request.ip, request.priority, request.topic_id) == (None, None, None, None)
    assert request.attachments == ()
    assert request.custom_fields == {}


@pytest.mark.parametrize("field", ["email", "name", "subject", "message"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_required_fields(make_payload: Any, field: str, value: object) -> None:
    body = make_payload(**{field: value}) if value is not None else make_payload(**{field: None})
    with pytest.raises(MissingFieldError) as info:
        parse_json(body)
    assert info.value.field == field
    assert info.value.code == "missing_field"
    assert info.value.status == 400


@pytest.mark.parametrize("field", ["email", "name", "subject", "message", "ip", "source"])
def test_wrong_types_name_the_field(make_payload: Any, field: str) -> None:
    with pytest.raises(TypeMismatchError) as info:
        parse_json(make_payload(**{field: ["x"]}))
    assert info.value.field == field


def test_email_validation_and_normalization(make_payload: Any) -> None:
    assert parse_json(make_payload(email="Foo.Bar@EXAMPLE.COM")).email.email == "Foo.Bar@example.com"
    assert parse_json(make_payload(email="a@xn--bcher-kva.example")).email.email == "a@bücher.example"
    assert parse_json(make_payload(email=" a@b.com ")).email.email == "a@b.com"
    for bad in ("not an address", "a@", "Angry User <api@osticket.com>", "a@b..com"):
        with pytest.raises(InvalidEmailError) as info:
            parse_json(make_payload(email=bad))
        assert info.value.field == "email"
        assert info.value.code == "invalid_email"


def test_subject_and_name_are_one_line(make_payload: Any) -> None:
    assert parse_json(make_payload(subject="  Printer  ")).subject == "Printer"
    with pytest.raises(InvalidValueError) as info:
        parse_json(make_payload(subject="a\r\nBcc: x@y.z"))
    assert info.value.field == "subject"


def test_booleans(make_payload: Any) -> None:
    assert parse_json(make_payload(alert=False, autorespond="false")).autorespond is False
    assert parse_json(make_payload(alert="0")).alert is False
    assert parse_json(make_payload(alert="1")).alert is True
    assert parse_json(make_payload(alert="true")).alert is True
    with pytest.raises(TypeMismatchError) as info:
        parse_json(make_payload(autorespond="maybe"))
    assert info.value.field == "autorespond"


def test_ids(make_payload: Any) -> None:
    request = parse_json(make_payload(priority="2", topicId=5))
    assert (request.priority, request.topic_id) == (2, 5)
    assert parse_json(make_payload(priorityId=3)).priority == 3
    with pytest.raises(InvalidValueError):
        parse_json(make_payload(priority=1, priorityId=2))
    for bad in ("high", 1.5, True, "1e3"):
        with pytest.raises(TypeMismatchError) as info:
            parse_json(make_payload(topicId=bad))
        assert info.value.field == "topicId"


def test_ip(make_payload: Any) -> None:
    assert parse_json(make_payload(ip="2001:DB8:0:0::1")).ip == "2001:db8::1"
    with pytest.raises(InvalidValueError) as info:
        parse_json(make_payload(ip="999.1.1.1"))
    assert info.value.field == "ip"


def test_message_data_urls(make_payload: Any) -> None:
    latin = base64.b64encode("Grüße".encode("iso-8859-1")).decode()
    message = parse_json(make_payload(message=f"data:text/plain;charset=iso-8859-1;base64,{latin}")).message
    assert message == MessageBody("Grüße", "text/plain")
    assert parse_json(make_payload(message="data:,plain%0D%0Atext")).message.text == "plain\ntext"
    with pytest.raises(InvalidValueError) as info:
        parse_json(make_payload(message="data:image/png;base64,AAAA"))
    assert info.value.field == "message"


def test_message_line_endings_normalized(make_payload: Any) -> None:
    assert parse_json(make_payload(message="one\r\ntwo\rthree\n")).message.text == "one\ntwo\nthree"


def test_attachment_forms(make_payload: Any) -> None:
    attachments = [
        {"a.txt": "data:,one"},
        {"a.txt": "data:text/plain;charset=utf-8,two"},
        {"name": "b.bin", "data": base64.b64encode(b"\x00\x01").decode(), "type": "application/octet-stream",
         "encoding": "base64"},
        {"name": "c.txt", "data": "Grüße", "type": "text/plain; charset=iso-8859-1"},
        {"name": "d.txt", "data": "plain", "size": 5},
        {"name": "C:\\Users\\me\\e.txt", "data": "x"},
    ]  # fmt: skip
    request = parse_json(make_payload(attachments=attachments))
    names = [a.filename for a in request.attachments]
    assert names == ["a.txt", "a.txt", "b.bin", "c.txt", "d.txt", "e.txt"]
    a1, a2, b, c, d, _e = request.attachments
    assert (a1.content_type, a1.charset, a1.data) == ("text/plain", "us-ascii", b"one")
    assert a2.charset == "utf-8"
    assert (b.content_type, b.data) == ("application/octet-stream", b"\x00\x01")
    assert (c.charset, c.data) == ("iso-8859-1", "Grüße".encode("iso-8859-1"))
    assert (d.content_type, d.data) == ("text/plain", b"plain")


@pytest.mark.parametrize(
    ("item", "error", "field"),
    [
        ("data:,x", TypeMismatchError, "attachments[1]"),
        ({}, MissingFieldError, "attachments[1]"),
        ({"x.txt": 5}, TypeMismatchError, "attachments[1].data"),
        ({"x.txt": "not a data url"}, InputError, "attachments[1].data"),
        ({"x.png": "data:image/png;base64,!!!"}, InvalidBase64Error, "attachments[1].data"),
        ({"name": "x", "type": "text/plain"}, MissingFieldError, "attachments[1].data"),
        ({"data": "x", "type": "text/plain"}, MissingFieldError, "attachments[1].name"),
        ({"name": "x", "data": "x", "colour": "red"}, UnsupportedFieldError, "attachments[1].colour"),
        ({"name": "x", "data": "x", "encoding": "uuencode"}, InvalidValueError, "attachments[1].encoding"),
        ({"name": "x", "data": "x", "type": "nonsense"}, InvalidValueError, "attachments[1].type"),
        ({"name": "x", "data": "x", "size": 2}, InvalidValueError, "attachments[1].size"),
        ({"name": "..", "data": "x"}, InvalidValueError, "attachments[1].name"),
        ({"name": "x", "data": "€", "type": "text/plain;charset=ascii"}, InvalidValueError, "attachments[1].data"),
    ],
)
def test_attachment_errors_name_the_field(make_payload: Any, item: object, error: type, field: str) -> None:
    with pytest.raises(error) as info:
        parse_json(make_payload(attachments=[{"ok.txt": "data:,ok"}, item]))
    assert info.value.field == field


def test_attachments_must_be_a_list(make_payload: Any) -> None:
    with pytest.raises(TypeMismatchError) as info:
        parse_json(make_payload(attachments={"a.txt": "data:,x"}))
    assert info.value.field == "attachments"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"[]",
        b'"text"',
        b"{",
        b'{"name": "a",}',
        b"\xff\xfe{}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"{'name': 'single quotes'}",
    ],
)
def test_malformed_json(body: bytes) -> None:
    with pytest.raises(MalformedJSONError) as info:
        parse_json(body)
    assert info.value.code == "malformed_json"


def test_duplicate_members_are_refused() -> None:
    with pytest.raises(InvalidValueError) as info:
        parse_json(b'{"name": "a", "name": "b"}')
    assert info.value.field == "name"


def test_utf8_bom_and_str_input(make_payload: Any) -> None:
    assert parse_json(b"\xef\xbb\xbf" + make_payload()).subject == "Testing API"
    assert parse_json(make_payload().decode()).subject == "Testing API"  # type: ignore[arg-type]


def test_huge_integer_is_malformed_not_a_crash(make_payload: Any) -> None:
    body = make_payload()[:-1] + b', "topicId": ' + b"9" * 5000 + b"}"
    with pytest.raises(InputError):
        parse_json(body)


def test_unicode_and_lone_surrogates(make_payload: Any) -> None:
    assert parse_json(make_payload(subject="Ärger 🙂")).subject == "Ärger 🙂"
    body = make_payload(subject="X").replace(b'"X"', b'"\\ud800"')
    with pytest.raises(InvalidValueError) as info:
        parse_json(body)
    assert info.value.field == "subject"


def test_deliverability_is_opt_in(make_payload: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import email_validator

    calls: list[bool] = []
    real = email_validator.validate_email

    def spy(address: str, **kwargs: Any) -> Any:
        calls.append(kwargs["check_deliverability"])
        if kwargs["check_deliverability"]:
            raise email_validator.EmailUndeliverableError("The domain name example.invalid does not exist.")
        return real(address, **kwargs)

    monkeypatch.setattr(email_validator, "validate_email", spy)
    assert parse_json(make_payload()).email.email == "api@osticket.com"
    with pytest.raises(InvalidEmailError, match="does not exist") as info:
        parse_json(make_payload(), check_deliverability=True)
    assert info.value.field == "email"
    assert calls == [False, True]


def test_bytes_like_bodies(make_payload: Any) -> None:
    body = make_payload()
    assert parse_json(bytearray(body)) == parse_json(memoryview(body)) == parse_json(body)  # type: ignore[arg-type]


def test_file_names_are_made_safe_like_email_attachment_names(make_payload: Any) -> None:
    names = ["invoice\u202egpj.exe", "a:b*?.txt", "CON.txt", "  many   spaces .txt", "../../etc/passwd", ".bashrc"]
    attachments = [{name: "data:,x"} for name in names]
    request = parse_json(make_payload(attachments=attachments))
    assert [a.filename for a in request.attachments] == [
        "invoicegpj.exe",
        "a_b__.txt",
        "_CON.txt",
        "many spaces .txt",
        "passwd",
        "bashrc",
    ]


def test_html_messages_are_sanitized(make_payload: Any) -> None:
    html = (
        "data:text/html,<p onclick=%22steal()%22>Hi</p><script>alert(1)</script><img src=%22http://t.example/x.gif%22>"
    )
    message = parse_json(make_payload(message=html)).message
    assert message.content_type == "text/html"
    assert message.text.startswith("<p>Hi</p>")
    for gone in ("onclick", "script", "alert", "t.example"):
        assert gone not in message.text
    with pytest.raises(MissingFieldError) as info:
        parse_json(make_payload(message="data:text/html,<script>alert(1)</script>"))
    assert info.value.field == "message"
    # Plain text is never touched.
    assert parse_json(make_payload(message="<script>x</script>")).message.text == "<script>x</script>"
