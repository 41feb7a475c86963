"""`POST /api/tickets.xml`: osTicket's lax XML ticket payload to a `TicketRequest`.

osTicket's format (`setup/doc/api/tickets.md`): the root is `<ticket>`; "content can be either sent as
an attribute or a named element if it has no sub-content"; `<phone ext="123">`; ``<message
type="text/html">` usually with CDATA; `<attachments><file name=".." type=".." encoding="base64">``
where file content "is automatically trimmed". This module maps that onto the raw shape of
`ticketmail.parsing.builder`, so JSON and XML share every validation rule.

Security (why defusedxml, and how it is used):

* The document is parsed by `defusedxml.ElementTree.DefusedXMLParser` with `forbid_dtd`,
  `forbid_entities` and `forbid_external` all on. Any `<!DOCTYPE` is refused at the start of the
  declaration, i.e. before an entity could be declared, let alone expanded ("billion laughs", XXE,
  external DTD fetches). These surface as `ForbiddenXMLError`.
* A depth-counting tree builder refuses nesting beyond `Limits.max_depth` and more elements than a
  ticket can use, while parsing (expat does not recurse, so nothing else can blow the stack).
* The declared encoding is honoured: encodings expat knows (UTF-8, UTF-16, ISO-8859-1, US-ASCII) are
  left to it; any other label Python knows (`windows-1252`, `iso-8859-15`, `koi8-r`...) is decoded
  here first (XML 1.0 section 4.3.3), so a legacy client is not refused.

Strictness where osTicket is vague: unknown attributes on known elements, child elements inside simple
values, text directly inside `<ticket>`, and a value given twice (attribute and element, or two
elements, except for `multiple` choice fields) are errors naming the field.
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

import defusedxml
from defusedxml.ElementTree import DefusedXMLParser

from ticketmail.errors import (
    ForbiddenXMLError,
    InvalidValueError,
    MalformedXMLError,
    NestingTooDeepError,
    PayloadTooLargeError,
    TypeMismatchError,
    UnsupportedFieldError,
)
from ticketmail.model import TicketRequest
from ticketmail.parsing.builder import CORE_FIELDS, XmlMessage, body_bytes, build_request
from ticketmail.parsing.charsets import text_codec
from ticketmail.parsing.fields import Form
from ticketmail.parsing.limits import Limits

__all__ = ["load_xml_ticket", "parse_xml"]

_DECL_ENCODING_RE = re.compile(rb"<\?xml[^>?]{0,200}?encoding\s*=\s*[\"']([^\"'>?]{0,200})[\"']")
_EXPAT_NATIVE = frozenset({"utf_8", "utf_16", "latin_1", "ascii"})
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_FILE_ATTRS = frozenset({"name", "type", "encoding", "size"})
_MESSAGE_ATTRS = frozenset({"type", "encoding", "charset"})
_ELEMENT_ALLOWANCE = 256


class _LimitedTreeBuilder(TreeBuilder):
    """A TreeBuilder that refuses too deep nesting and too many elements as they are parsed."""

    def __init__(self, max_depth: int, max_elements: int) -> None:
        super().__init__()
        self._max_depth = max_depth
        self._max_elements = max_elements
        self._depth = 0
        self._count = 0

    def start(self, tag: str, attrs: dict[str, str]) -> Element:
        self._depth += 1
        self._count += 1
        if self._depth > self._max_depth:
            raise NestingTooDeepError(f"XML nests deeper than {self._max_depth} levels")
        if self._count > self._max_elements:
            raise PayloadTooLargeError(f"XML has more than {self._max_elements} elements")
        return super().start(tag, attrs)

    def end(self, tag: str) -> Element:
        self._depth -= 1
        return super().end(tag)


def _prepare(data: bytes) -> bytes | str:
    """Return bytes for expat, or text decoded here when the declared encoding is one expat lacks."""
    if data.startswith(_BOMS):
        return data
    match = _DECL_ENCODING_RE.match(data)
    if not match:
        return data
    label = match.group(1).decode("latin-1")
    codec = text_codec(label)
    if codec is None:
        raise MalformedXMLError(f"unknown XML encoding {label[:40]!r} (or not a text encoding)")
    if codec.name.replace("-", "_") in _EXPAT_NATIVE or codec.name in ("iso8859-1",):
        return data
    try:
        return codec.decode(data)[0]
    except (UnicodeError, ValueError, TypeError, LookupError) as exc:
        raise MalformedXMLError(f"XML is not valid {label}") from exc


def _parse_tree(data: bytes, limits: Limits) -> Element:
    builder = _LimitedTreeBuilder(limits.max_depth, limits.max_attachments + _ELEMENT_ALLOWANCE)
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(_prepare(data))
        root: Element = parser.close()
    except defusedxml.DTDForbidden as exc:
        raise ForbiddenXMLError("XML with a DTD (<!DOCTYPE ...>) is not accepted") from exc
    except defusedxml.EntitiesForbidden as exc:
        raise ForbiddenXMLError("XML entity declarations are not accepted") from exc
    except defusedxml.ExternalReferenceForbidden as exc:
        raise ForbiddenXMLError("XML external references are not accepted") from exc
    except defusedxml.DefusedXmlException as exc:  # pragma: no cover - any future defusedxml refusal
        raise ForbiddenXMLError("XML uses a forbidden construct") from exc
    except ParseError as exc:
        line, column = getattr(exc, "position", (0, 0))
        raise MalformedXMLError(f"malformed XML at line {line} column {column}: {_expat_reason(exc)}") from exc
    except (ValueError, UnicodeError) as exc:
        raise MalformedXMLError(f"malformed XML: {type(exc).__name__}") from exc
    return root


def _expat_reason(exc: ParseError) -> str:
    return str(exc).split(":")[0][:80]


def _no_children(element: Element, field: str) -> str:
    if len(element):
        raise TypeMismatchError(f"expected a simple value, got child element <{element[0].tag}>", field=field)
    return element.text or ""


def _check_attrs(element: Element, allowed: frozenset[str], field: str) -> None:
    for name in element.attrib:
        if name not in allowed:
            raise UnsupportedFieldError(
                f"unexpected attribute {name[:40]!r} on <{element.tag}>", field=f"{field}.{name}"
            )


def _attachments(element: Element) -> list[dict[str, Any]]:
    _check_attrs(element, frozenset(), "attachments")
    if (element.text or "").strip():
        raise TypeMismatchError("expected <file> elements, got text", field="attachments")
    files: list[dict[str, Any]] = []
    for index, child in enumerate(element):
        field = f"attachments[{index}]"
        if child.tag != "file":
            raise UnsupportedFieldError(f"expected <file>, got <{child.tag}>", field=field)
        _check_attrs(child, _FILE_ATTRS, field)
        if (child.tail or "").strip():
            raise TypeMismatchError("unexpected text between <file> elements", field="attachments")
        item: dict[str, Any] = dict(child.attrib)
        # osTicket: "File content is here and is automatically trimmed".
        item["data"] = _no_children(child, f"{field}.data").strip()
        files.append(item)
    return files


def _child_fields(child: Element, tag: str) -> list[tuple[str, Any]]:
    """The raw fields one known child element of `<ticket>` gives (`<phone ext=...>` gives two)."""
    if tag == "message":
        _check_attrs(child, _MESSAGE_ATTRS, "message")
        attrs = child.attrib
        text = _no_children(child, "message")
        message = XmlMessage(
            body=text, type=attrs.get("type"), encoding=attrs.get("encoding"), charset=attrs.get("charset")
        )
        return [("message", message)]
    if tag == "attachments":
        return [("attachments", _attachments(child))]
    if tag == "phone":
        _check_attrs(child, frozenset({"ext"}), "phone")
        fields: list[tuple[str, Any]] = [("phone", _no_children(child, "phone"))]
        if "ext" in child.attrib:
            fields.append(("phone_ext", child.attrib["ext"]))
        return fields
    _check_attrs(child, frozenset(), tag)
    return [(tag, _no_children(child, tag))]


def _ticket_root(data: bytes, limits: Limits) -> Element:
    root = _parse_tree(data, limits)
    if root.tag != "ticket":
        raise MalformedXMLError(f"expected a <ticket> root element, got <{str(root.tag)[:40]}>")
    if (root.text or "").strip():
        raise TypeMismatchError("unexpected text directly inside <ticket>", field="ticket")
    return root


def load_xml_ticket(
    body: bytes | bytearray | memoryview | str, limits: Limits, form: Form, *, ignore_unknown_fields: bool = False
) -> dict[str, Any]:
    """Parse `body` and map the `<ticket>` document onto the builder's raw mapping.

    An element that is neither a core field nor a form field is an `unsupported_field` error, or, with
    `ignore_unknown_fields`, skipped whole (its attributes and children are not looked at).
    """
    data = body_bytes(body)
    if len(data) > limits.max_payload_bytes:
        raise PayloadTooLargeError(f"payload is {len(data)} bytes; the limit is {limits.max_payload_bytes}")
    root = _ticket_root(data, limits)
    multiple = {f.name for f in form.fields if f.multiple}
    known = {*CORE_FIELDS, *(f.name for f in form.fields), "phone_ext"}
    raw: dict[str, Any] = dict(root.attrib)
    if "message" in raw:
        # An attribute message is plain text, like an element's: no data-URL interpretation in XML.
        raw["message"] = XmlMessage(body=raw["message"])

    def put(key: str, value: Any) -> None:
        if key in raw:
            if key not in multiple:
                raise InvalidValueError(f"{key} is given more than once", field=key)
            previous = raw[key]
            raw[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            raw[key] = value

    for child in root:
        tag = str(child.tag)
        if (child.tail or "").strip():
            raise TypeMismatchError(f"unexpected text after <{tag}>", field="ticket")
        if tag in known or tag in ("message", "attachments", "phone"):
            for key, value in _child_fields(child, tag):
                put(key, value)
        elif not ignore_unknown_fields:
            raise UnsupportedFieldError(f"unsupported field {tag[:60]!r}", field=tag[:60])
    return raw


def parse_xml(
    body: bytes,
    *,
    form: Form | None = None,
    limits: Limits | None = None,
    ignore_unknown_fields: bool = False,
    check_deliverability: bool = False,
) -> TicketRequest:
    """Parse an osTicket XML ticket payload into a validated `TicketRequest`.

    Takes the same options as `ticketmail.parsing.parse_json()`.

    Raises:
        TicketmailError: an `InputError` subclass naming the field at fault;
            `ForbiddenXMLError` for a DTD, entity or external reference.
    """
    limits = Limits() if limits is None else limits
    form = Form.default() if form is None else form
    raw = load_xml_ticket(body, limits, form, ignore_unknown_fields=ignore_unknown_fields)
    return build_request(
        raw,
        form=form,
        limits=limits,
        ignore_unknown_fields=ignore_unknown_fields,
        check_deliverability=check_deliverability,
    )
