"""RFC 2397 data URLs."""

from __future__ import annotations

import base64

import pytest

from ticketmail.errors import InvalidBase64Error, InvalidDataURLError, InvalidValueError
from ticketmail.parsing import parse_data_url
from ticketmail.parsing.dataurl import decode_base64, decode_text, format_data_url


def test_rfc2397_default_media_type_is_text_plain_us_ascii() -> None:
    url = parse_data_url("data:,A%20brief%20note")
    assert url.media_type == "text/plain"
    assert url.charset == "us-ascii"
    assert url.type_omitted
    assert url.data == b"A brief note"
    assert url.text() == "A brief note"


def test_charset_without_type_keeps_default_type() -> None:
    url = parse_data_url("data:;charset=utf-8,caf%C3%A9")
    assert url.media_type == "text/plain"
    assert url.charset == "utf-8"
    assert url.text() == "café"


def test_explicit_type_has_no_implied_charset() -> None:
    url = parse_data_url("data:text/html,MESSAGE <b>HERE</b>")
    assert url.media_type == "text/html"
    assert url.charset is None
    assert url.text() == "MESSAGE <b>HERE</b>"


def test_base64_flag_and_parameters() -> None:
    encoded = base64.b64encode("héllo wörld".encode("iso-8859-1")).decode()
    url = parse_data_url(f"data:Text/Plain;Charset=ISO-8859-1;base64,{encoded}")
    assert url.base64
    assert url.media_type == "text/plain"
    assert url.params == (("charset", "iso-8859-1"),)
    assert url.text() == "héllo wörld"


def test_rfc2397_example_with_quoted_and_encoded_parameter() -> None:
    url = parse_data_url('data:text/plain;charset="iso-8859-7",%be%fg%be'.replace("%fg", "%fe"))
    assert url.charset == "iso-8859-7"
    assert url.text() == "ΎώΎ"


def test_media_type_parameters_are_kept_in_order() -> None:
    url = parse_data_url("data:image/png;name=a%20b.png;x=1;base64,iVBORw0KGgo=")
    assert url.params == (("name", "a b.png"), ("x", "1"))
    assert url.data == b"\x89PNG\r\n\x1a\n"


def test_scheme_is_case_insensitive_and_base64_whitespace_and_padding_are_forgiven() -> None:
    assert parse_data_url("DATA:;base64,aGVs bG8\n").data == b"hello"
    assert parse_data_url("data:;base64,aGVsbG8=").data == b"hello"


def test_percent_encoded_base64_is_decoded_first() -> None:
    assert parse_data_url("data:;base64,%2B%2F8%3D").data == base64.b64decode("+/8=")


def test_non_ascii_characters_are_utf8_octets() -> None:
    assert parse_data_url("data:text/plain;charset=utf-8,héllo").text() == "héllo"


def test_unlabeled_utf8_is_decoded_as_utf8() -> None:
    # US-ASCII is the RFC default; UTF-8 is its superset and what clients actually send.
    assert parse_data_url("data:,%C3%A9").text() == "é"


@pytest.mark.parametrize(
    "text",
    [
        "text/plain,hello",
        "data:text/plain",
        "data:text,hi",
        "data:te xt/plain,hi",
        "data:text/plain;charset,hi",
        "data:,bad %zz escape",
        "data:,trailing %4",
        "data:text/plain;a=%ff,hi",
    ],
)
def test_invalid_data_urls(text: str) -> None:
    with pytest.raises(InvalidDataURLError) as info:
        parse_data_url(text, field="attachments[0].data")
    assert info.value.field == "attachments[0].data"
    assert info.value.code in ("invalid_data_url", "invalid_base64")


@pytest.mark.parametrize("data", ["R0lGODdhMAA...", "aGVsbG8===", "a", "aGVs=bG8", "héllo"])
def test_invalid_base64(data: str) -> None:
    with pytest.raises(InvalidBase64Error) as info:
        parse_data_url(f"data:image/png;base64,{data}", field="x")
    assert info.value.code == "invalid_base64"
    assert info.value.field == "x"


def test_unknown_charset_and_undecodable_text() -> None:
    with pytest.raises(InvalidValueError, match="unknown charset"):
        parse_data_url("data:text/plain;charset=no-such-charset,hi").text()
    with pytest.raises(InvalidValueError, match="not valid"):
        decode_text(b"\xff\xfe\xfd", "utf-8", field="message")


def test_size_is_checked_before_decoding() -> None:
    seen: list[int] = []

    def check(size: int) -> None:
        seen.append(size)
        if size > 10:
            raise InvalidValueError("too big", field="x")

    huge = "A" * 4_000_000
    with pytest.raises(InvalidValueError):
        decode_base64(huge, field="x", check_size=check)
    assert seen == [3_000_000]  # the exact size, before decoding
    seen.clear()
    with pytest.raises(InvalidValueError):
        decode_base64(huge + "\n", field="x", check_size=check)
    assert seen == [2_999_998]  # a lower bound, before the text is copied to drop the whitespace
    with pytest.raises(InvalidValueError):
        parse_data_url("data:," + "a" * 100, check_size=check)


def test_format_data_url_round_trip() -> None:
    data = bytes(range(256))
    url = parse_data_url(format_data_url(data, "application/octet-stream"))
    assert url.data == data
    assert url.media_type == "application/octet-stream"
    assert parse_data_url(format_data_url(b"x", "text/plain", charset="utf-8")).charset == "utf-8"
