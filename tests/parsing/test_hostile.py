"""Hostile input: every input ends in a result or a ticketmail error, and the caps degrade, never fail."""

from __future__ import annotations

import base64
import encodings.aliases
import html
import html.entities as html_entities
import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ticketmail.errors import TicketmailError
from ticketmail.model import InboundEmail, TicketRequest
from ticketmail.parsing import parse_json, parse_xml
from ticketmail.parsing._entities import unescape
from ticketmail.parsing.charsets import decode_text, text_codec
from ticketmail.parsing.html import (
    MAX_FLATTENED,
    MAX_TAG_DEPTH,
    MAX_TAGS,
    html_to_text,
    limit_html_depth,
    render_html,
    sanitize_html,
)
from ticketmail.parsing.mailheaders import parse_params
from ticketmail.parsing.mime import parse_email

LABELS = sorted(set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values()))
HOSTILE_LABELS = [*LABELS, "rot13", "rot_13", "zlib_codec", "zlib", "bz2_codec", "quopri", "base64", "hex",
                  "uu", "unicode_escape", "idna", "punycode", "x" * 41, "utf-8" + " " * 50, "mbcs", "oem"]  # fmt: skip
labels = st.sampled_from(HOSTILE_LABELS) | st.text(max_size=60)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(call: object, *args: object) -> object:
    try:
        return call(*args)  # type: ignore[operator]
    except TicketmailError as exc:
        return exc


@SETTINGS
@given(labels, st.binary(max_size=200))
def test_xml_declared_encoding(label: str, payload: bytes) -> None:
    body = (
        b'<?xml version="1.0" encoding="' + label.encode("utf-8", "replace") + b'"?>'
        b"<ticket><email>a@example.com</email><name>A</name><subject>s</subject><message>" + payload
        + b"</message></ticket>"
    )  # fmt: skip
    result = _outcome(parse_xml, body)
    assert isinstance(result, (TicketRequest, TicketmailError))


@SETTINGS
@given(labels, st.binary(max_size=200))
def test_json_data_url_charsets(label: str, payload: bytes) -> None:
    url = f"data:text/plain;charset={label};base64,{base64.b64encode(payload).decode()}"
    body = json.dumps(
        {
            "email": "a@example.com", "name": "A", "subject": "s", "message": url,
            "attachments": [{"name": "a.txt", "type": f"text/plain; charset={label}", "data": "x"}],
        }
    ).encode()  # fmt: skip
    result = _outcome(parse_json, body)
    assert isinstance(result, (TicketRequest, TicketmailError))


@SETTINGS
@given(labels, st.binary(max_size=300))
def test_email_charsets(label: str, payload: bytes) -> None:
    word = base64.b64encode(payload[:40]).decode()
    raw = (
        (
            f"From: =?{label}?B?{word}?= <a@example.com>\r\nSubject: =?{label}?Q?=E4=F6?=\r\n"
            f'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
            f'Content-Type: text/plain; charset="{label}"\r\n\r\n'
        ).encode("utf-8", "replace")
        + payload
        + (f"\r\n--b\r\nContent-Type: text/html; charset={label}\r\n\r\n<p>").encode("utf-8", "replace")
        + payload
        + b"</p>\r\n--b--\r\n"
    )
    result = _outcome(parse_email, raw)
    assert isinstance(result, (InboundEmail, TicketmailError))
    assert isinstance(decode_text(payload, label)[0], str)


def test_text_codec_allow_list() -> None:
    for label in ("rot13", "zlib_codec", "bz2_codec", "quopri", "base64", "hex", "unicode_escape", "x" * 41):
        assert text_codec(label) is None, label
    for label in ("utf-8", "ISO-8859-15", "windows-1252", "koi8-r", "shift_jis", "gb18030"):
        assert text_codec(label) is not None, label


TAGS = ["div", "p", "ul", "ol", "li", "b", "i", "a", "table", "tr", "td", "blockquote", "pre", "span", "font",
        "script", "style", "title", "textarea", "br", "img", "svg", "math", "select", "option", "head"]  # fmt: skip
SOUP = ['<a href="x', "<!--", "-->", "<!", "<?", "</", "<", ">", '"', "'", "=", "&amp;", "&#x110000;", "<img alt='",
        "<div/>", "\x00", "\r"]  # fmt: skip
tag_soup = st.lists(
    st.one_of(
        st.sampled_from(TAGS).map(lambda t: f"<{t}>"),
        st.sampled_from(TAGS).map(lambda t: f"</{t}>"),
        st.sampled_from(SOUP),
        st.text(max_size=8),
    ),
    max_size=80,
).map("".join)


@SETTINGS
@given(tag_soup)
def test_tag_soup(html: str) -> None:
    rendered = render_html(html)
    assert isinstance(rendered.text, str)
    assert len(rendered.text) <= 2 * len(html) + 4096
    assert html_to_text(html) == rendered.text
    assert "<script" not in (rendered.html or "")
    raw = ("From: a@example.com\r\nContent-Type: text/html\r\n\r\n" + html).encode("utf-8", "surrogatepass")
    assert isinstance(_outcome(parse_email, raw), (InboundEmail, TicketmailError))


def test_deep_html_is_flattened_with_a_defect() -> None:
    html = "<ul><li>an item text " * 20_000 + "x"  # more text than markup: not read as a dense document
    limited, dropped = limit_html_depth(html)
    assert dropped > MAX_FLATTENED
    assert limited.count("<ul>") <= MAX_TAG_DEPTH
    assert limited.count("<li>") <= MAX_TAG_DEPTH + MAX_FLATTENED
    assert "x" in sanitize_html(html)
    message = parse_email(("From: a@example.com\r\nContent-Type: text/html\r\n\r\n" + html).encode())
    assert "html_too_deep" in {d.code for d in message.defects}
    assert len(message.text) <= 2 * len(html) + 4096
    assert message.text.startswith("-")
    assert message.text.rstrip().endswith("x")


def test_markup_dense_html_is_flattened_to_escaped_paragraphs() -> None:
    unit = "<p>hello &amp; <b>w</b><i>x</i></p><div><a href='&#104;&#104;'>l</a></div><script>alert(1)</script>"
    html = unit * 1_000
    rendered = render_html(html)
    assert rendered.flattened == html.count("<")
    assert rendered.text.split("\n")[:2] == ["hello & w x", "l"]
    assert "alert" not in rendered.text
    assert rendered.html is not None
    assert rendered.html.startswith("<p>hello &amp; w x</p>\n<p>l</p>")
    assert set(re.findall(r"</?\w+", rendered.html)) == {"<p", "</p"}
    assert sanitize_html(html) == rendered.html
    assert html_to_text("<b>x</b><i>y</i> " * 5_000).startswith("x y x y")
    message = parse_email(("From: a@example.com\r\nContent-Type: text/html\r\n\r\n" + html).encode())
    assert "html_too_deep" in {d.code for d in message.defects}
    assert message.text.startswith("hello & w x")


def test_flattened_rest_keeps_text_and_drops_scripts() -> None:
    html = "<div>" * 400 + "<p>hello &amp; bye</p><script>alert(1)</script><b>bold</b>"
    rendered = render_html(html)
    assert rendered.flattened > MAX_FLATTENED
    assert "hello & bye" in rendered.text
    assert "bold" in rendered.text
    assert "alert" not in rendered.text
    assert "alert" not in (rendered.html or "")
    assert (rendered.html or "").endswith("hello &amp; bye   bold ")  # the flattened rest, escaped


def test_quote_and_list_prefixes_are_capped() -> None:
    text = html_to_text("<blockquote>" * 50 + "deep" + "</blockquote>" * 50)
    assert "> " * 10 + "deep" in text.splitlines()
    assert max(map(len, text.splitlines())) <= 24
    text = html_to_text("<ul><li>" * 30 + "item")
    assert max(len(line) - len(line.lstrip()) for line in text.splitlines()) <= 20


def test_shallow_html_is_untouched() -> None:
    html = "<div>" * 50 + "x" + "</div>" * 50 + "<ul>" + "<li>a" * 500 + "</ul>"
    assert limit_html_depth(html) == (html, 0)


def test_parameter_parser() -> None:
    assert parse_params("content-type", "text/plain; name*0*=utf-8''%E2%82%AC; name*1=.txt; charset=\"utf\\-8\"") == (
        "text/plain",
        {"name": "€.txt", "charset": "utf-8"},
    )
    assert parse_params("content-disposition", 'attachment; filename*=iso-8859-1\'en\'%E4rger.txt; x="a;b\\"c"')[1] == {
        "filename": "ärger.txt",
        "x": 'a;b"c',
    }
    value = "a\\*(" * 50_000
    main, params = parse_params("content-type", f'text/plain; name="{value}"')
    assert main == "text/plain"
    assert len(params["name"]) <= 16 * 1024
    many = "".join(f"; filename*{i}*=%41" for i in range(5000))
    assert parse_params("content-disposition", "attachment" + many)[1]["filename"] == "A" * 1000


def test_header_caps() -> None:
    folded = b"From: a@example.com\r\nSubject: x" + b"\r\n a" * 300_000 + b"\r\n\r\nbody\r\n"
    message = parse_email(folded)
    assert message.text == "body"
    assert "header_too_long" in {d.code for d in message.defects}
    many = b"From: a@example.com\r\n" + b"X-H: v\r\n" * 5000 + b"\r\nbody\r\n"
    message = parse_email(many)
    assert message.text == "body"
    assert len(message.headers) == 1000
    refs = " ".join(f"<{i}@x.example>" for i in range(100_000)).encode()
    message = parse_email(b"From: a@example.com\r\nReferences: " + refs + b"\r\n\r\nbody\r\n")
    assert message.references[-1] == "99999@x.example"
    assert message.text == "body"


def test_flowed_is_linear_and_unchanged() -> None:
    line = "word " * 10
    body = ("\r\n".join([line] * 20_000) + "\r\nend\r\n").encode()
    raw = b"From: a@example.com\r\nContent-Type: text/plain; format=flowed\r\n\r\n" + body
    message = parse_email(raw)
    assert message.text == (line * 20_000 + "end").strip()


def test_nested_messages() -> None:
    data = b"From: in@example.com\r\nSubject: inner\r\n\r\npayload\r\n"
    for level in range(30):
        data = f"From: l{level}@example.com\r\nContent-Type: message/rfc822\r\n\r\n".encode() + data
    message = parse_email(data)
    assert message.from_ is not None
    assert "nesting_too_deep" in {d.code for d in message.defects} or message.attached_messages


ENTITY_PIECES = ["&", "&#", "&#x", ";", "<", ">", " ", "\n", "a", "1", "é", "\u00a0", "=", "&amp", "&lt",
                 "&#0;", "&#1;", "&#x7f;", "&#x81;", "&#128;", "&#13;", "&#xD800;", "&#x110000;", "&#xFFFE;",
                 "&#x10FFFF;", "&#1234567890123;", "\x01", "\x81", "\r", "\x00"]  # fmt: skip
entity_text = st.lists(
    st.one_of(
        st.sampled_from(sorted(html_entities.html5)).map(lambda name: "&" + name),
        st.integers(0, 0x11FFFF).map(lambda n: f"&#{n};"),
        st.integers(0, 0x11FFFF).map(lambda n: f"&#x{n:x}"),
        st.sampled_from(ENTITY_PIECES),
    ),
    min_size=10,
    max_size=120,
).map("".join)


@SETTINGS
@given(entity_text)
def test_native_entity_decoding_gives_what_html_unescape_gives(text: str) -> None:
    assert unescape(text) == html.unescape(text)


def test_tag_count_cap_flattens_the_rest() -> None:
    html_body = "<p>" + "<b>x</b> " * (MAX_TAGS // 2 + 10) + "<script>alert(1)</script>tail</p>"
    rendered = render_html(html_body)
    assert rendered.flattened
    assert "alert" not in rendered.text
    assert rendered.text.rstrip().endswith("tail")
    message = parse_email(("From: a@example.com\r\nContent-Type: text/html\r\n\r\n" + html_body).encode())
    assert "html_too_deep" in {d.code for d in message.defects}


def test_near_miss_boundary_lines_are_body_text() -> None:
    noise = "--bX\r\n" * 200  # past the near-miss count at which the delimiter search becomes a regex
    raw = (
        'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\npreamble\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n" + noise + "--b  \r\n"
        "Content-Type: text/plain\r\n\r\nsecond\r\nx--b\r\n--b--\r\nepilogue"
    ).encode()
    message = parse_email(raw)
    assert message.text.startswith("first\n--bX")
    assert message.text.rstrip().endswith("second\nx--b")
    assert "missing_close_boundary" not in {d.code for d in message.defects}


def test_nested_messages_share_one_copy_per_embedded_body() -> None:
    inner = b"From: x@example.com\r\nSubject: inner\r\n\r\n" + b"payload line\r\n" * 1000
    data = inner
    for level in range(6):
        data = (f"From: l{level}@example.com\r\nSubject: layer {level}\r\n"
                "Content-Type: message/rfc822\r\n\r\n").encode() + data  # fmt: skip
    message = parse_email(data)
    seen: dict[bytes, int] = {}

    def walk(mail: InboundEmail) -> None:
        for attachment in mail.attachments:
            seen.setdefault(attachment.data, id(attachment.data))
            assert id(attachment.data) == seen[attachment.data]  # equal bodies are one object
        for attached in mail.attached_messages:
            walk(attached)

    walk(message)
    assert seen
