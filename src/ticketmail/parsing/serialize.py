"""Serialize a `TicketRequest` back into osTicket's JSON and XML payload formats.

Useful to clients (build a request in Python, post it to a ticketmail or osTicket endpoint) and to tests:
`parse_json(to_json(r)) == r` and `parse_xml(to_xml(r)) == r` for every normalized request `r`
(hypothesis checks both round trips).

Choices made for compatibility with osTicket itself:

* attachments use the one-member form `{"file.txt": "data:...;base64,..."}` (the only one osTicket's
  JSON parser reads) and `<file encoding="base64">` in XML;
* the priority is written as `priorityId`, the name osTicket's API accepts;
* an HTML message is a `data:text/html;charset=utf-8,...` URL in JSON and `<message type="text/html">`
  in XML; a plain message is a plain string unless it itself starts with `data:`.

Custom values are written in the form the parser reads back: choices by key (a list for multiple),
dates and datetimes in ISO 8601, phones as `numberXext`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json as _json
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

from ticketmail.model import Attachment, Choice, CustomValue, Phone, TicketRequest
from ticketmail.parsing.builder import LONG_FORM_KEYS as _LONG_FORM_KEYS
from ticketmail.parsing.dataurl import format_data_url

__all__ = ["to_json", "to_xml"]

# Everything printable in ASCII except "%" stays readable in a data URL; the rest is percent-encoded.
_URL_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _custom_value(value: CustomValue) -> Any:
    if isinstance(value, Choice):
        return value.key
    if isinstance(value, tuple):
        return [item.key for item in value]
    if isinstance(value, Phone):
        return str(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return value


def _message_json(request: TicketRequest) -> str:
    text = request.message.text
    if request.message.content_type == "text/plain" and text[:5].lower() != "data:":
        return text
    return f"data:{request.message.content_type};charset=utf-8,{quote(text, safe=_URL_SAFE)}"


def _attachment_type(attachment: Attachment) -> str:
    return f"{attachment.content_type};charset={attachment.charset}" if attachment.charset else attachment.content_type


def _attachment_json(attachment: Attachment) -> dict[str, Any]:
    if attachment.filename in _LONG_FORM_KEYS:
        # A file literally called "name", "data", ... would read as the long form: write the long form.
        return {
            "name": attachment.filename,
            "type": _attachment_type(attachment),
            "encoding": "base64",
            "data": base64.b64encode(attachment.data).decode("ascii"),
        }
    return {attachment.filename: format_data_url(attachment.data, attachment.content_type, charset=attachment.charset)}


def to_json(request: TicketRequest, *, indent: int | None = None) -> bytes:
    """The request as an osTicket JSON payload (UTF-8 bytes)."""
    payload: dict[str, Any] = {
        "alert": request.alert,
        "autorespond": request.autorespond,
        "source": request.source,
        "name": request.name,
        "email": request.email.email,
        "subject": request.subject,
        "message": _message_json(request),
    }
    if request.phone is not None:
        payload["phone"] = str(request.phone)
    if request.ip is not None:
        payload["ip"] = request.ip
    if request.priority is not None:
        payload["priorityId"] = request.priority
    if request.topic_id is not None:
        payload["topicId"] = request.topic_id
    for name, value in request.custom_fields.items():
        payload[name] = _custom_value(value)
    if request.attachments:
        payload["attachments"] = [_attachment_json(item) for item in request.attachments]
    return _json.dumps(payload, ensure_ascii=False, indent=indent).encode("utf-8")


def _element(parent: ET.Element, tag: str, text: str, attrib: dict[str, str] | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag, attrib or {})
    child.text = text
    return child


def to_xml(request: TicketRequest) -> bytes:
    """The request as an osTicket XML payload (UTF-8 bytes with an XML declaration)."""
    root = ET.Element("ticket", {"alert": str(request.alert).lower(), "autorespond": str(request.autorespond).lower()})
    _element(root, "source", request.source)
    _element(root, "name", request.name)
    _element(root, "email", request.email.email)
    _element(root, "subject", request.subject)
    if request.phone is not None:
        _element(root, "phone", request.phone.number, {"ext": request.phone.ext} if request.phone.ext else None)
    _element(root, "message", request.message.text, {"type": request.message.content_type})
    if request.ip is not None:
        _element(root, "ip", request.ip)
    if request.priority is not None:
        _element(root, "priorityId", str(request.priority))
    if request.topic_id is not None:
        _element(root, "topicId", str(request.topic_id))
    for name, value in request.custom_fields.items():
        converted = _custom_value(value)
        for item in converted if isinstance(converted, list) else [converted]:
            text = str(item).lower() if isinstance(item, bool) else str(item)
            _element(root, name, text)
    if request.attachments:
        files = ET.SubElement(root, "attachments")
        for attachment in request.attachments:
            attrib = {"name": attachment.filename, "type": _attachment_type(attachment), "encoding": "base64"}
            _element(files, "file", base64.b64encode(attachment.data).decode("ascii"), attrib)
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return data
