"""Parsers: bytes in, normalized models out. Pure, no I/O.

Public entry points:

* `parse_json()`, `parse_xml()`: osTicket's ticket API payloads -> `TicketRequest`;
* `parse()`: dispatch by content type (or an explicit `format`, or by sniffing the bytes);
* `to_json()`, `to_xml()`: the inverse, for clients and round-trip tests;
* `parse_data_url()`: RFC 2397;
* `Form`, `FormField`: the caller's custom fields; `Limits`: size/count/type/depth bounds.

Format sniffing (`format="auto"` without a content type), after an optional UTF-8 byte order mark and
leading whitespace: `{` or `[` -> JSON; `<` (or a UTF-16 BOM) -> XML; a first line that is an RFC 5322
header field (`Name: value`, the name made of printable ASCII except `:`) or an mbox `From` line ->
email; anything else -> `UnsupportedContentTypeError`.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any

from ticketmail.errors import PayloadTooLargeError, UnsupportedContentTypeError
from ticketmail.model import InboundEmail, TicketRequest
from ticketmail.parsing.builder import body_bytes
from ticketmail.parsing.dataurl import DataURL, parse_data_url
from ticketmail.parsing.fields import Form, FormField
from ticketmail.parsing.json import parse_json
from ticketmail.parsing.limits import Limits
from ticketmail.parsing.serialize import to_json, to_xml
from ticketmail.parsing.xml import parse_xml

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "FORMATS",
    "DataURL",
    "Form",
    "FormField",
    "Limits",
    "format_for_content_type",
    "parse",
    "parse_data_url",
    "parse_json",
    "parse_xml",
    "sniff_format",
    "to_json",
    "to_xml",
]

FORMATS: tuple[str, ...] = ("auto", "json", "xml", "email")

_HEADER_LINE_RE = re.compile(rb"[!-9;-~]{1,76}[ \t]*:")
_JSON_TYPES = frozenset({"application/json", "text/json"})
_XML_TYPES = frozenset({"application/xml", "text/xml"})
_EMAIL_TYPES = frozenset({"message/rfc822"})


def sniff_format(body: bytes) -> str | None:
    """Guess `json`, `xml` or `email` from the first bytes of `body`; `None` when unsure."""
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "xml"
    head = body[:4096]
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    stripped = head.lstrip(b" \t\r\n")
    if stripped[:1] in (b"{", b"["):
        return "json"
    if stripped[:1] == b"<":
        return "xml"
    if head.startswith(b"From ") or _HEADER_LINE_RE.match(head):
        return "email"
    return None


def format_for_content_type(content_type: str) -> str:
    """Map a `Content-Type` value to `json`, `xml` or `email`.

    `application/json` (and any `+json` type), `application/xml`/`text/xml` (and `+xml`),
    `message/rfc822`; parameters such as `charset` are ignored here.

    Raises:
        UnsupportedContentTypeError: any other type.
    """
    media = content_type.partition(";")[0].strip().lower()
    if media in _JSON_TYPES or media.endswith("+json"):
        return "json"
    if media in _XML_TYPES or media.endswith("+xml"):
        return "xml"
    if media in _EMAIL_TYPES:
        return "email"
    raise UnsupportedContentTypeError(
        f"unsupported content type {media[:60]!r} (expected application/json, application/xml or message/rfc822)",
        field="content_type",
    )


def _email_parser() -> Callable[[bytes], InboundEmail]:
    try:
        mime = importlib.import_module("ticketmail.parsing.mime")
    except ModuleNotFoundError as exc:
        if exc.name != "ticketmail.parsing.mime":
            raise
        mime = None
    parser = getattr(mime, "parse_email", None)
    if parser is None:
        raise UnsupportedContentTypeError("email parsing is not available", field="format")
    result: Callable[[bytes], InboundEmail] = parser
    return result


def parse(
    body: bytes,
    *,
    content_type: str | None = None,
    format: str = "auto",
    form: Form | None = None,
    limits: Limits | None = None,
    ignore_unknown_fields: bool = False,
    check_deliverability: bool = False,
) -> TicketRequest | InboundEmail:
    """Parse `body` as JSON, XML or a raw email, whichever it is.

    Args:
        body: The request body or raw message.
        content_type: The HTTP `Content-Type`; used when `format` is `auto`.
        format: `auto` (content type, else sniffing; see the module docs), `json`, `xml` or
            `email`. An explicit format wins over `content_type`.
        form: Custom fields (JSON/XML), as for `parse_json()`.
        limits: As for `parse_json()`. When given, `max_payload_bytes` also bounds a raw email;
            otherwise the email parser's own size limit applies (50 MiB by default, mail being larger).
        ignore_unknown_fields: As for `parse_json()`.
        check_deliverability: As for `parse_json()`.

    Raises:
        UnsupportedContentTypeError: unknown content type or format, an undecidable body, or email
            parsing not installed.
        TicketmailError: whatever the chosen parser raises.
    """
    if format not in FORMATS:
        raise UnsupportedContentTypeError(
            f"unknown format {str(format)[:20]!r} (expected one of {', '.join(FORMATS)})", field="format"
        )
    data = body_bytes(body)
    chosen = format
    if chosen == "auto":
        if content_type is not None:
            chosen = format_for_content_type(content_type)
        else:
            sniffed = sniff_format(data)
            if sniffed is None:
                raise UnsupportedContentTypeError("cannot tell whether the body is JSON, XML or an email")
            chosen = sniffed
    options: dict[str, Any] = {
        "form": form,
        "limits": limits,
        "ignore_unknown_fields": ignore_unknown_fields,
        "check_deliverability": check_deliverability,
    }
    if chosen == "json":
        return parse_json(data, **options)
    if chosen == "xml":
        return parse_xml(data, **options)
    parser = _email_parser()
    if limits is not None and len(data) > limits.max_payload_bytes:
        raise PayloadTooLargeError(f"message is {len(data)} bytes; the limit is {limits.max_payload_bytes}")
    return parser(data)
