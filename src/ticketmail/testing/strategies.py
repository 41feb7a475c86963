"""Hypothesis strategies for ticketmail values, shipped for applications and the other parts' tests.

Every generated `TicketRequest` is *normalized*: it is exactly what the parsers
produce, so `parse_json(to_json(r)) == r` and `parse_xml(to_xml(r)) == r` hold for it. Custom fields are
generated for `EXAMPLE_FORM` (one field of every type) unless another form is given.

Also here: `byte_mutations()` and `json_mutations()` turn valid payloads into nearly-valid ones,
to check that parsers answer arbitrary input with a result or a `TicketmailError` and nothing else.

Requires hypothesis (a test dependency, not a runtime one).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from typing import Any
from xml.etree import ElementTree

from hypothesis import strategies as st

from ticketmail.model import Address, Attachment, CustomValue, MessageBody, Phone, TicketRequest
from ticketmail.parsing.fields import Form, FormField
from ticketmail.parsing.filenames import safe_filename, sniff_type
from ticketmail.parsing.html import sanitize_html

__all__ = [
    "EXAMPLE_FORM",
    "addresses",
    "attachments",
    "byte_mutations",
    "custom_values",
    "email_addresses",
    "html_text",
    "json_mutations",
    "json_values",
    "xml_mutations",
    "message_bodies",
    "multi_line_text",
    "one_line_text",
    "phones",
    "ticket_requests",
]

EXAMPLE_FORM = Form(
    (
        FormField("phone", "phone"),
        FormField("notes", "memo"),
        FormField("department_code", "text"),
        FormField("mobile", "phone"),
        FormField("birthday", "date"),
        FormField("callback_at", "datetime"),
        FormField("product", "choice", choices={"p1": "Printer", "p2": "Scanner", "3": "Copier"}),
        FormField("tags", "choice", choices={"a": "Urgent", "b": "Billing", "c": "Hardware"}, multiple=True),
        FormField("vip", "bool"),
        FormField("budget", "number"),
    )
)
"""A form with one field of every type (plus the default `phone` and `notes`)."""

# Printable characters only: no controls (Cc), surrogates (Cs), line/paragraph separators, U+FFFE/U+FFFF.
_CHARS = st.characters(
    exclude_categories=("Cc", "Cs", "Zl", "Zp"),
    exclude_characters="\ufffe\uffff",
)
_TLDS = ("com", "org", "net", "io", "de")
_ZONES = (
    None,
    _dt.timezone.utc,
    _dt.timezone(_dt.timedelta(hours=5, minutes=30)),
    _dt.timezone(-_dt.timedelta(hours=8)),
)


def one_line_text(*, min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[str]:
    """Normalized single-line text: printable, stripped, `min_size` characters or more after stripping."""
    return st.text(_CHARS, min_size=min_size, max_size=max_size).map(str.strip).filter(lambda s: len(s) >= min_size)


def multi_line_text(*, max_lines: int = 4) -> st.SearchStrategy[str]:
    r"""Normalized multi-line text: lines of printable characters and tabs joined by `\\n`, stripped."""
    line = st.text(st.one_of(_CHARS, st.just("\t")), max_size=30)
    return st.lists(line, min_size=1, max_size=max_lines).map(lambda lines: "\n".join(lines).strip()).filter(bool)


def email_addresses() -> st.SearchStrategy[str]:
    """Addresses in the form the parsers normalize to (ASCII local part, lower-case domain)."""
    local = st.from_regex(r"[A-Za-z0-9]{1,10}(\.[A-Za-z0-9_+\-]{1,8}){0,2}", fullmatch=True)
    label = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True)
    domain = st.one_of(
        st.tuples(st.lists(label, min_size=1, max_size=2), st.sampled_from(_TLDS)).map(
            lambda t: ".".join([*t[0], t[1]])
        ),
        st.sampled_from(["bücher.de", "münchen.de"]),
    )
    return st.builds(lambda lp, d: f"{lp}@{d}", local, domain)


def addresses() -> st.SearchStrategy[Address]:
    """Submitter addresses with a display name (the payload's `name`)."""
    return st.builds(Address, email=email_addresses(), name=one_line_text())


def phones() -> st.SearchStrategy[Phone]:
    """Phone numbers, with or without an extension."""
    number = st.from_regex(r"\+?[0-9]{3,12}|[0-9]{3}-[0-9]{3}-[0-9]{4}|\([0-9]{3}\) [0-9]{3} [0-9]{4}", fullmatch=True)
    ext = st.none() | st.from_regex(r"[0-9]{1,6}", fullmatch=True)
    return st.builds(Phone, number=number, ext=ext)


def _sanitized(text: str) -> str:
    return sanitize_html(text).strip()


def html_text() -> st.SearchStrategy[str]:
    """HTML bodies as the parsers leave them: sanitized (like email HTML), stripped, not empty."""
    fragments = st.sampled_from(["<p>", "</p>", "<b>", "</b>", "<br>", '<a href="https://example.com/">', "</a>"])
    raw = st.lists(st.one_of(fragments, one_line_text(max_size=12)), min_size=1, max_size=6).map("".join)
    return raw.map(_sanitized).filter(lambda t: bool(t) and _sanitized(t) == t)


def message_bodies() -> st.SearchStrategy[MessageBody]:
    """Message bodies: plain text, or sanitized HTML."""
    plain = st.builds(MessageBody, text=multi_line_text(), content_type=st.just("text/plain"))
    html = st.builds(MessageBody, text=html_text(), content_type=st.just("text/html"))
    return plain | html


def attachments(*, max_size: int = 256) -> st.SearchStrategy[Attachment]:
    """Attachments as the payload parsers produce them (declared type and charset, sniffed type)."""
    # Names as safe_filename leaves them (the parsers apply it, as the email parser does).
    filename = (
        one_line_text(max_size=30)
        .filter(lambda s: s.strip(" ."))
        .map(lambda s: safe_filename(s, "application/octet-stream", 1))
    )
    content_type = st.sampled_from(
        ["text/plain", "text/html", "image/png", "image/gif", "application/pdf", "application/octet-stream"]
    )
    charset = st.none() | st.sampled_from(["utf-8", "iso-8859-1", "us-ascii"])
    magic = st.sampled_from([b"%PDF-1.7\n", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"MZ"])
    data = st.binary(max_size=max_size) | st.tuples(magic, st.binary(max_size=max_size)).map(b"".join)
    return st.builds(
        lambda name, media, payload, cs: Attachment(name, media, payload, cs, sniffed_type=sniff_type(payload)),
        filename,
        content_type,
        data,
        charset,
    )


def custom_values(spec: FormField) -> st.SearchStrategy[CustomValue]:
    """Normalized values for the form field `spec` (never empty)."""
    kind = spec.type
    if kind == "text":
        return one_line_text()
    if kind == "memo":
        return multi_line_text()
    if kind == "phone":
        return phones()
    if kind == "date":
        return st.dates()
    if kind == "datetime":
        return st.datetimes(timezones=st.sampled_from(_ZONES))
    if kind == "bool":
        return st.booleans()
    if kind == "number":
        floats = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
        return st.one_of(st.integers(-(10**15), 10**15), floats)
    if spec.multiple:
        return st.lists(st.sampled_from(spec.choices), min_size=1, max_size=len(spec.choices), unique=True).map(tuple)
    return st.sampled_from(spec.choices)


@st.composite
def _custom_fields(draw: st.DrawFn, form: Form) -> dict[str, CustomValue]:
    values: dict[str, CustomValue] = {}
    for spec in form.fields:
        if spec.name != "phone" and draw(st.booleans()):
            values[spec.name] = draw(custom_values(spec))
    return values


def ticket_requests(
    *, form: Form = EXAMPLE_FORM, max_attachments: int = 3, max_attachment_size: int = 256
) -> st.SearchStrategy[TicketRequest]:
    """Normalized ticket requests whose custom fields belong to `form`."""
    ids = st.none() | st.integers(0, 2**31 - 1)
    return st.builds(
        TicketRequest,
        email=addresses(),
        subject=one_line_text(max_size=80),
        message=message_bodies(),
        phone=st.none() | phones() if form.get("phone") else st.none(),
        ip=st.none() | st.ip_addresses().map(str),
        alert=st.booleans(),
        autorespond=st.booleans(),
        priority=ids,
        source=st.just("API") | one_line_text(max_size=64),
        topic_id=ids,
        attachments=st.lists(attachments(max_size=max_attachment_size), max_size=max_attachments).map(tuple),
        custom_fields=_custom_fields(form),
    )


def json_values(*, max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Arbitrary JSON values (for replacing members of valid payloads)."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
        max_leaves=max_leaves,
    )


@st.composite
def byte_mutations(draw: st.DrawFn, payload: bytes) -> bytes:
    """`payload` with a few random byte-level edits: flips, deletions, insertions, truncation."""
    data = bytearray(payload)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if not data:
            op = "insert"
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip":
            data[position] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        elif op == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[position:]
    return bytes(data)


@st.composite
def json_mutations(draw: st.DrawFn, payload: bytes) -> bytes:
    """A JSON `payload` with members replaced, removed or added at the top level or in an attachment."""
    document = json.loads(payload)
    keys = [*document, "attachments", "priority", "unknown_field", "phone_ext", "topicId", "alert"]
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["replace", "remove", "attachment"]))
        if action == "remove":
            document.pop(key, None)
        elif action == "attachment":
            item = draw(
                st.dictionaries(
                    st.sampled_from(["name", "data", "type", "encoding", "size", "x.txt"]),
                    json_values(max_leaves=2),
                    max_size=4,
                )
            )
            document.setdefault("attachments", [])
            if isinstance(document["attachments"], list):
                document["attachments"].append(item)
        else:
            document[key] = draw(json_values())
    return json.dumps(document).encode("utf-8")


@st.composite
def xml_mutations(draw: st.DrawFn, payload: bytes) -> bytes:
    """An XML `payload` with elements or attributes changed, duplicated, nested, added or removed."""
    root = ElementTree.fromstring(payload)  # noqa: S314 - our own serializer's output, not untrusted input
    names = ["name", "email", "subject", "message", "phone", "ip", "priority", "topicId", "alert", "attachments",
             "file", "notes", "tags", "x"]  # fmt: skip
    text = st.text(max_size=20) | json_values(max_leaves=1).map(str)
    for _ in range(draw(st.integers(1, 3))):
        elements = list(root.iter())
        target = draw(st.sampled_from(elements))
        action = draw(st.sampled_from(["text", "attribute", "child", "duplicate", "remove"]))
        if action == "text":
            target.text = draw(text)
        elif action == "attribute":
            target.set(draw(st.sampled_from([*names, "type", "encoding", "ext", "size"])), draw(text))
        elif action == "child":
            ElementTree.SubElement(target, draw(st.sampled_from(names))).text = draw(text)
        elif action == "duplicate" and target is not root:
            root.append(copy.deepcopy(target))
        elif action == "remove" and target is not root:
            for parent in root.iter():
                if target in list(parent):
                    parent.remove(target)
                    break
    clean = "".join(ch for ch in ElementTree.tostring(root, encoding="unicode") if _xml_char(ch))
    return clean.encode("utf-8")


def _xml_char(ch: str) -> bool:
    code = ord(ch)
    return code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code >= 0x10000
