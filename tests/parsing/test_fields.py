"""Custom fields: form definitions and typed conversion (through parse_json, as users see them)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from ticketmail.errors import (
    ConfigError,
    InvalidValueError,
    MissingFieldError,
    TypeMismatchError,
    UnsupportedFieldError,
)
from ticketmail.model import Choice, Phone
from ticketmail.parsing import Form, FormField, parse_json, parse_xml
from ticketmail.parsing.fields import parse_iso8601, parse_phone, to_bool, to_id

FORM = Form.default().with_fields(
    FormField("when", "datetime"),
    FormField("day", "date"),
    FormField("product", "choice", choices={"p1": "Printer", "p2": "Scanner", "7": "Copier"}),
    FormField("tags", "choice", choices=[("a", "Urgent"), ("b", "Billing")], multiple=True),
    FormField("vip", "bool"),
    FormField("budget", "number"),
    FormField("code", "text", max_length=5),
    FormField("mobile", "phone"),
)


def custom(make_payload: Any, **fields: Any) -> dict[str, Any]:
    return dict(parse_json(make_payload(**fields), form=FORM).custom_fields)


def test_default_form_has_phone_and_notes(make_payload: Any) -> None:
    assert [f.name for f in Form.default().fields] == ["phone", "notes"]
    request = parse_json(make_payload(phone="3185558634X123", notes="line one\r\nline two  "))
    assert request.phone == Phone("3185558634", "123")
    assert request.custom_fields == {"notes": "line one\nline two"}


def test_phone_extension_forms(make_payload: Any) -> None:
    assert parse_json(make_payload(phone="318-555-8634 x 99")).phone == Phone("318-555-8634", "99")
    assert parse_json(make_payload(phone="3185558634", phone_ext="12")).phone == Phone("3185558634", "12")
    assert parse_json(make_payload(phone="3185558634X12", phone_ext="12")).phone == Phone("3185558634", "12")
    assert parse_json(make_payload(phone="+49 (30) 1234")).phone == Phone("+49 (30) 1234")
    with pytest.raises(InvalidValueError) as info:
        parse_json(make_payload(phone="3185558634X12", phone_ext="13"))
    assert info.value.field == "phone_ext"
    with pytest.raises(InvalidValueError):
        parse_json(make_payload(phone="call me"))
    with pytest.raises(InvalidValueError):
        parse_json(make_payload(phone="3185558634Xabc"))
    with pytest.raises(MissingFieldError):
        parse_json(make_payload(phone_ext="12"))


def test_phone_is_unsupported_without_a_phone_field(make_payload: Any) -> None:
    form = Form((FormField("notes", "memo"),))
    with pytest.raises(UnsupportedFieldError) as info:
        parse_json(make_payload(phone="123"), form=form)
    assert info.value.field == "phone"


def test_unknown_custom_field_is_unsupported_or_ignored(make_payload: Any) -> None:
    with pytest.raises(UnsupportedFieldError) as info:
        parse_json(make_payload(favourite_colour="blue"))
    assert info.value.field == "favourite_colour"
    assert info.value.code == "unsupported_field"
    request = parse_json(make_payload(favourite_colour="blue"), ignore_unknown_fields=True)
    assert "favourite_colour" not in request.custom_fields


def test_datetime_epoch_and_iso8601(make_payload: Any) -> None:
    utc = dt.timezone.utc
    assert custom(make_payload, when=1700000000)["when"] == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=utc)
    assert custom(make_payload, when="1700000000.5")["when"] == dt.datetime(2023, 11, 14, 22, 13, 20, 500000, utc)
    aware = custom(make_payload, when="2024-05-01T10:30:00+02:00")["when"]
    assert aware.utcoffset() == dt.timedelta(hours=2)
    assert custom(make_payload, when="2024-05-01T08:30Z")["when"] == dt.datetime(2024, 5, 1, 8, 30, tzinfo=utc)
    naive = custom(make_payload, when="2024-05-01 10:30:15.25")["when"]
    assert naive == dt.datetime(2024, 5, 1, 10, 30, 15, 250000)
    assert naive.tzinfo is None
    assert custom(make_payload, when="2024-05-01")["when"] == dt.datetime(2024, 5, 1)


def test_date_field(make_payload: Any) -> None:
    assert custom(make_payload, day="2024-02-29")["day"] == dt.date(2024, 2, 29)
    assert custom(make_payload, day=0)["day"] == dt.date(1970, 1, 1)
    assert custom(make_payload, day="2024-02-29T23:00:00-05:00")["day"] == dt.date(2024, 2, 29)
    for bad in ("2023-02-29", "yesterday", "2024-13-01", "2024-05-01T25:00"):
        with pytest.raises(InvalidValueError) as info:
            custom(make_payload, day=bad)
        assert info.value.field == "day"
    with pytest.raises(TypeMismatchError):
        custom(make_payload, day=True)
    with pytest.raises(InvalidValueError):
        custom(make_payload, day=1e300)


def test_choice_by_key_or_label(make_payload: Any) -> None:
    printer = Choice("p1", "Printer")
    assert custom(make_payload, product="p1")["product"] == printer
    assert custom(make_payload, product="Printer")["product"] == printer
    assert custom(make_payload, product="printer")["product"] == printer
    assert custom(make_payload, product=7)["product"] == Choice("7", "Copier")
    with pytest.raises(InvalidValueError) as info:
        custom(make_payload, product="Fax")
    assert info.value.field == "product"
    assert "p1" in info.value.message


def test_multiple_choice(make_payload: Any) -> None:
    assert custom(make_payload, tags=["a", "Billing", "a"])["tags"] == (Choice("a", "Urgent"), Choice("b", "Billing"))
    assert custom(make_payload, tags="b")["tags"] == (Choice("b", "Billing"),)
    with pytest.raises(InvalidValueError) as info:
        custom(make_payload, tags=["a", "zzz"])
    assert info.value.field == "tags[1]"
    with pytest.raises(TypeMismatchError):
        custom(make_payload, product=["p1"])
    with pytest.raises(InvalidValueError, match="at most 256"):
        custom(make_payload, tags=["a"] * 257)


def test_multiple_choice_in_xml_as_repeated_elements() -> None:
    body = (
        b"<ticket><name>A</name><email>a@example.com</email><subject>s</subject><message>m</message>"
        b"<tags>a</tags><tags>Billing</tags></ticket>"
    )
    assert parse_xml(body, form=FORM).custom_fields["tags"] == (Choice("a", "Urgent"), Choice("b", "Billing"))
    with pytest.raises(InvalidValueError, match="more than once"):
        parse_xml(body.replace(b"<tags>a</tags>", b"<product>p1</product><product>p2</product>"), form=FORM)


@pytest.mark.parametrize(
    ("raw", "expected"), [(True, True), (False, False), ("true", True), ("FALSE", False), ("1", True), ("0", False)]
)
def test_bool_field(make_payload: Any, raw: object, expected: bool) -> None:
    assert custom(make_payload, vip=raw)["vip"] is expected


@pytest.mark.parametrize("raw", ["yes", 2, 1.5, [True]])
def test_bool_field_rejects(make_payload: Any, raw: object) -> None:
    with pytest.raises(TypeMismatchError) as info:
        custom(make_payload, vip=raw)
    assert info.value.field == "vip"


def test_number_field(make_payload: Any) -> None:
    assert custom(make_payload, budget=12)["budget"] == 12
    assert custom(make_payload, budget="12")["budget"] == 12
    assert custom(make_payload, budget=" -3.25 ")["budget"] == -3.25
    assert custom(make_payload, budget=2.0)["budget"] == 2
    assert isinstance(custom(make_payload, budget=2.0)["budget"], int)
    for bad in ("12 apples", True, "1e99999"):
        with pytest.raises((TypeMismatchError, InvalidValueError)):
            custom(make_payload, budget=bad)


def test_text_field_rules(make_payload: Any) -> None:
    assert custom(make_payload, code="  ab ")["code"] == "ab"
    with pytest.raises(InvalidValueError, match="at most 5"):
        custom(make_payload, code="abcdef")
    with pytest.raises(InvalidValueError, match="single line"):
        custom(make_payload, code="a\nb")
    with pytest.raises(TypeMismatchError):
        custom(make_payload, code=5)
    with pytest.raises(InvalidValueError, match="U\\+0000"):
        custom(make_payload, code="a\x00")


def test_empty_custom_values_are_left_out(make_payload: Any) -> None:
    assert custom(make_payload, code="", tags=[], vip=None, notes="   ") == {}


def test_required_custom_field(make_payload: Any) -> None:
    form = Form((FormField("order", "text", required=True),))
    with pytest.raises(MissingFieldError) as info:
        parse_json(make_payload(), form=form)
    assert info.value.field == "order"
    assert parse_json(make_payload(order="42"), form=form).custom_fields == {"order": "42"}


def test_custom_phone_field(make_payload: Any) -> None:
    assert custom(make_payload, mobile="555 1234X9")["mobile"] == Phone("555 1234", "9")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Form((FormField("email", "text"),)),
        lambda: FormField("x", "colour"),  # type: ignore[arg-type]
        lambda: FormField("x", "choice"),
        lambda: FormField("x", "text", multiple=True),
        lambda: FormField("bad name!", "text"),
        lambda: Form((FormField("a"), FormField("a"))),
        lambda: Form((FormField("phone", "text"),)),
        lambda: FormField("x", "choice", choices=5),
        lambda: FormField("x", "choice", choices=[("a",)]),
    ],
)
def test_invalid_form_definitions(make: Any) -> None:
    with pytest.raises(ConfigError):
        make()


def test_form_from_mapping() -> None:
    form = Form.from_mapping(
        json.loads('{"fields": [{"name": "team", "type": "choice", "choices": {"1": "Ops"}, "required": true}]}')
    )
    assert form.get("team") == FormField("team", "choice", choices={"1": "Ops"}, required=True)
    with pytest.raises(ConfigError, match="unknown keys"):
        Form.from_mapping({"fields": [{"name": "x", "colour": "red"}]}, source="forms.toml")
    with pytest.raises(ConfigError, match=r"forms\.toml: fields\[0\]: .*needs choices"):
        Form.from_mapping({"fields": [{"name": "x", "type": "choice"}]}, source="forms.toml")


def test_small_converters() -> None:
    assert to_bool(1, field="f") is True
    assert to_id(" 7 ", field="f") == 7
    with pytest.raises(InvalidValueError):
        to_id(-1, field="f")
    with pytest.raises(TypeMismatchError):
        to_id("7.5", field="f")
    assert parse_phone("555x1", field="p") == Phone("555", "1")
    assert parse_iso8601("2024-01-02T03:04:05.123456789-0130", field="f") == dt.datetime(
        2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone(-dt.timedelta(hours=1, minutes=30))
    )
