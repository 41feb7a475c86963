"""The one validation path from a raw mapping to a `TicketRequest`.

Both wire formats reduce to the same raw shape first (`parsing/json.py` by `json.loads`,
`parsing/xml.py` by mapping osTicket's lax XML onto it) and then come here, so a rule is written once and
JSON and XML cannot drift apart. The raw shape:

* simple members: JSON scalars, or strings from XML;
* `message`: a string (JSON: plain text or an RFC 2397 data URL) or an `XmlMessage`;
* `attachments`: a list of objects, either `{"file.txt": "data:..."}` (osTicket's JSON form: exactly one
  member, file name -> data URL, the name not being one of the long form's member names) or
  `{"name", "data", "type", "encoding", "size"}` (the long form, which XML `<file>` elements become);
* custom fields named by the caller's `Form`.

Work is ordered cheap-first: unknown members, scalars, then attachments (count before any decoding, type
before decoding, decoded size computed before decoding).
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import email_validator

from ticketmail.errors import (
    AttachmentTooLargeError,
    InvalidEmailError,
    InvalidValueError,
    MissingFieldError,
    TooManyAttachmentsError,
    TypeMismatchError,
    UnsupportedFieldError,
)
from ticketmail.model import Address, Attachment, CustomValue, MessageBody, Phone, TicketRequest
from ticketmail.parsing.charsets import text_codec
from ticketmail.parsing.dataurl import decode_base64, decode_text, parse_data_url, parse_media_type
from ticketmail.parsing.fields import (
    Form,
    clean_text,
    describe,
    is_empty,
    parse_phone,
    to_bool,
    to_id,
    to_one_line,
)
from ticketmail.parsing.filenames import safe_filename, sniff_type
from ticketmail.parsing.html import sanitize_html
from ticketmail.parsing.limits import Limits

__all__ = ["CORE_FIELDS", "LONG_FORM_KEYS", "XmlMessage", "body_bytes", "build_request", "validate_address"]

CORE_FIELDS: tuple[str, ...] = (
    "email", "name", "subject", "message", "alert", "autorespond", "ip", "priority", "priorityId", "source",
    "topicId", "attachments",
)  # fmt: skip
LONG_FORM_KEYS = frozenset({"name", "data", "type", "encoding", "size"})
_MAX_SOURCE = 64


@attrs.frozen
class XmlMessage:
    """An XML `<message>` element: its text and the `type`/`encoding`/`charset` attributes."""

    body: str
    type: str | None = None
    encoding: str | None = None
    charset: str | None = None


def body_bytes(body: object) -> bytes:
    """The request body as `bytes`: bytes-like values as they are, `str` as UTF-8.

    Raises:
        TypeMismatchError: anything else (`None`, a dict), with field `body`.
    """
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    raise TypeMismatchError(f"the body must be bytes, got {type(body).__name__}", field="body")


_MAX_ADDRESS_CHARS = 320


def validate_address(value: object, *, field: str, name: str | None, check_deliverability: bool) -> Address:
    """Validate an email address with email-validator and normalize it.

    The domain is lower-cased and IDNA-decoded to Unicode; the local part is kept as written (RFC 5321
    section 2.4: it may be case-sensitive). Deliverability (DNS) is checked only when asked.
    """
    if not isinstance(value, str):
        raise TypeMismatchError(f"expected an email address string, got {describe(value)}", field=field)
    if len(value) > _MAX_ADDRESS_CHARS:
        # RFC 5321 section 4.5.3.1.3: a path is at most 256 octets, so an address at most 254; checked before
        # the validator, whose cost grows with the length.
        raise InvalidEmailError(f"not a valid email address: longer than {_MAX_ADDRESS_CHARS} characters", field=field)
    text = clean_text(value, field=field, multiline=False)
    try:
        result = email_validator.validate_email(text, check_deliverability=check_deliverability)
    except email_validator.EmailNotValidError as exc:
        raise InvalidEmailError(f"not a valid email address: {exc}", field=field) from exc
    return Address(email=result.normalized, name=name)


class _Budget:
    """What is left of the total attachment budget; checks one attachment's decoded size."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.used = 0

    def checker(self, field: str) -> Callable[[int], None]:
        def check(size: int) -> None:
            if size > self.limits.max_attachment_bytes:
                raise AttachmentTooLargeError(
                    f"attachment decodes to at least {size} bytes; the limit is {self.limits.max_attachment_bytes}",
                    field=field,
                )
            if self.used + size > self.limits.max_total_attachment_bytes:
                raise AttachmentTooLargeError(
                    f"attachments decode to more than the total limit of {self.limits.max_total_attachment_bytes} "
                    "bytes",
                    field=field,
                )

        return check


def _required_text(raw: Mapping[str, Any], key: str) -> str:
    value = to_one_line(raw.get(key), field=key, required=True)
    assert value is not None  # noqa: S101 - required=True never returns None
    return value


def _filename(value: object, *, field: str, content_type: str, index: int) -> str:
    """Validate a file name, then make it safe exactly as email attachment names are.

    `ticketmail.parsing.filenames.safe_filename()` drops path components, bidi and other format
    characters, replaces reserved characters, prefixes Windows device names and caps the length, so a
    name means the same whichever way the file arrived.
    """
    if not isinstance(value, str):
        raise TypeMismatchError(f"expected a file name string, got {describe(value)}", field=field)
    name = clean_text(value, field=field, multiline=False)
    if not posixpath.basename(name.replace("\\", "/")).strip(" ."):
        raise InvalidValueError(f"expected a file name, got {value[:40]!r}", field=field)
    return safe_filename(name, content_type, index + 1)


def _message(value: object) -> MessageBody:
    field = "message"
    if is_empty(value if not isinstance(value, XmlMessage) else value.body):
        raise MissingFieldError("message is required", field=field)
    content_type = "text/plain"
    if isinstance(value, XmlMessage):
        text = value.body
        if value.type:
            content_type, _ = parse_media_type(value.type, field=f"{field}.type")
        encoding = (value.encoding or "").strip().lower()
        if encoding == "base64":
            text = decode_text(decode_base64(text, field=field), value.charset, field=field)
        elif encoding not in ("", "7bit", "8bit", "binary"):
            # osTicket treats `encoding` as the body's charset; the XML parser already decoded the
            # document with its declared encoding, so only the name is checked.
            decode_text(b"", encoding, field=f"{field}.encoding")
    elif isinstance(value, str):
        text = value
        if value[:5].lower() == "data:":
            url = parse_data_url(value, field=field)
            content_type = url.media_type
            text = url.text(field=field)
    else:
        raise TypeMismatchError(f"expected a string, got {describe(value)}", field=field)
    if content_type not in ("text/plain", "text/html"):
        raise InvalidValueError(f"message must be text/plain or text/html, got {content_type}", field=field)
    text = clean_text(text, field=field, multiline=True)
    if text and content_type == "text/html":
        # The same sanitizer as email HTML bodies (nh3/ammonia): no scripts, handlers or remote resources.
        text = sanitize_html(text).strip()
    if not text:
        raise MissingFieldError("message is required (and must keep some content after sanitizing)", field=field)
    return MessageBody(text=text, content_type=content_type)


def _attachment(item: object, index: int, limits: Limits, budget: _Budget) -> Attachment:
    base = f"attachments[{index}]"
    if not isinstance(item, Mapping):
        raise TypeMismatchError(f"expected an object, got {describe(item)}", field=base)
    if len(item) == 0:
        raise MissingFieldError("an attachment needs a name and data", field=base)
    if len(item) == 1 and next(iter(item)) not in LONG_FORM_KEYS:
        return _short_form_attachment(item, index, limits, budget)
    return _long_form_attachment(item, index, limits, budget)


def _short_form_attachment(item: Mapping[Any, Any], index: int, limits: Limits, budget: _Budget) -> Attachment:
    """The short form osTicket accepts: `{"file.txt": "data:text/plain;charset=utf-8,content"}`."""
    base = f"attachments[{index}]"
    data_field = f"{base}.data"
    ((raw_name, raw_data),) = item.items()
    if not isinstance(raw_data, str):
        raise TypeMismatchError(f"expected a data: URL string, got {describe(raw_data)}", field=data_field)
    check_type = _type_checker(limits, f"{base}.type")
    url = parse_data_url(raw_data, field=data_field, check_size=budget.checker(data_field), check_type=check_type)
    budget.used += len(url.data)
    return Attachment(
        filename=_filename(raw_name, field=f"{base}.name", content_type=url.media_type, index=index),
        content_type=url.media_type,
        data=url.data,
        charset=url.charset,
        sniffed_type=sniff_type(url.data),
    )


def _long_form_attachment(item: Mapping[Any, Any], index: int, limits: Limits, budget: _Budget) -> Attachment:
    """`{"name": ..., "data": ..., "type": ..., "encoding": ..., "size": ...}`."""
    base = f"attachments[{index}]"
    data_field = f"{base}.data"
    for key in item:
        if key not in LONG_FORM_KEYS:
            raise UnsupportedFieldError(f"unknown attachment member {str(key)[:40]!r}", field=f"{base}.{key}")
    if is_empty(item.get("name")):
        raise MissingFieldError("an attachment needs a name", field=f"{base}.name")
    raw_data = item.get("data")
    if raw_data is None:
        raise MissingFieldError("an attachment needs data", field=data_field)
    if not isinstance(raw_data, str):
        raise TypeMismatchError(f"expected a string, got {describe(raw_data)}", field=data_field)
    content_type, charset = "text/plain", None
    if not is_empty(item.get("type")):
        if not isinstance(item["type"], str):
            raise TypeMismatchError("expected a media type string", field=f"{base}.type")
        content_type, charset = parse_media_type(item["type"], field=f"{base}.type")
    _type_checker(limits, f"{base}.type")(content_type)
    name = _filename(item["name"], field=f"{base}.name", content_type=content_type, index=index)
    data = _attachment_data(item, raw_data, charset, base, budget.checker(data_field))
    size = item.get("size")
    if size is not None and to_id(size, field=f"{base}.size") != len(data):
        raise InvalidValueError(f"declared size {size} but the data has {len(data)} bytes", field=f"{base}.size")
    budget.used += len(data)
    return Attachment(
        filename=name, content_type=content_type, data=data, charset=charset, sniffed_type=sniff_type(data)
    )


def _attachment_data(
    item: Mapping[Any, Any], raw_data: str, charset: str | None, base: str, check: Callable[[int], None]
) -> bytes:
    """The bytes of a long-form attachment: base64 decoded, or the text encoded in its charset."""
    data_field = f"{base}.data"
    encoding = item.get("encoding")
    if encoding is not None and not isinstance(encoding, str):
        raise TypeMismatchError("expected a string such as 'base64'", field=f"{base}.encoding")
    encoding = (encoding or "").strip().lower()
    if encoding == "base64":
        return decode_base64(raw_data, field=data_field, check_size=check)
    if encoding not in ("", "7bit", "8bit", "binary"):
        raise InvalidValueError(f"unknown encoding {encoding[:20]!r} (expected 'base64')", field=f"{base}.encoding")
    check(len(raw_data))
    codec = text_codec(charset or "utf-8")
    if codec is None:
        message = f"unknown charset {str(charset)[:40]!r} (or not a text encoding)"
        raise InvalidValueError(message, field=f"{base}.type")
    try:
        data: bytes = codec.encode(raw_data)[0]
    except (UnicodeError, ValueError, TypeError, LookupError) as exc:
        raise InvalidValueError(f"text cannot be encoded as {charset}", field=data_field) from exc
    check(len(data))
    return data


def _type_checker(limits: Limits, field: str) -> Callable[[str], None]:
    def check(media_type: str) -> None:
        limits.check_type(media_type, field=field)

    return check


def _attachments(value: object, limits: Limits) -> tuple[Attachment, ...]:
    if is_empty(value):
        return ()
    if not isinstance(value, list):
        raise TypeMismatchError(f"expected a list of attachments, got {describe(value)}", field="attachments")
    if len(value) > limits.max_attachments:
        raise TooManyAttachmentsError(
            f"{len(value)} attachments; the limit is {limits.max_attachments}", field="attachments"
        )
    budget = _Budget(limits)
    return tuple(_attachment(item, index, limits, budget) for index, item in enumerate(value))


def _check_keys(raw: Mapping[str, Any], form: Form, ignore_unknown_fields: bool) -> None:
    known = set(CORE_FIELDS) | {f.name for f in form.fields}
    if form.get("phone") is not None:
        known.add("phone_ext")
    for key in raw:
        if key not in known and not ignore_unknown_fields:
            raise UnsupportedFieldError(f"unsupported field {str(key)[:60]!r}", field=str(key)[:60])


def _ip(raw: Mapping[str, Any]) -> str | None:
    if is_empty(raw.get("ip")):
        return None
    if not isinstance(raw["ip"], str):
        raise TypeMismatchError(f"expected an IP address string, got {describe(raw['ip'])}", field="ip")
    try:
        return str(ipaddress.ip_address(raw["ip"].strip()))
    except ValueError as exc:
        raise InvalidValueError(f"not an IPv4 or IPv6 address: {raw['ip'][:60]!r}", field="ip") from exc


def _priority(raw: Mapping[str, Any]) -> int | None:
    priority: int | None = None
    for key in ("priority", "priorityId"):
        if not is_empty(raw.get(key)):
            value = to_id(raw[key], field=key)
            if priority is not None and value != priority:
                raise InvalidValueError(f"priorityId {value} conflicts with priority {priority}", field=key)
            priority = value
    return priority


def _source(raw: Mapping[str, Any]) -> str:
    source = to_one_line(raw.get("source"), field="source") or "API"
    if len(source) > _MAX_SOURCE:
        raise InvalidValueError(f"at most {_MAX_SOURCE} characters", field="source")
    return source


def _form_fields(raw: Mapping[str, Any], form: Form) -> tuple[Phone | None, dict[str, CustomValue]]:
    """The phone and the custom fields the form declares, converted."""
    phone: Phone | None = None
    custom: dict[str, CustomValue] = {}
    for spec in form.fields:
        if spec.name == "phone":
            if not is_empty(raw.get("phone")):
                phone = parse_phone(raw["phone"], field="phone", ext=raw.get("phone_ext"))
            elif not is_empty(raw.get("phone_ext")):
                raise MissingFieldError("phone_ext given without phone", field="phone")
            elif spec.required:
                raise MissingFieldError("phone is required", field="phone")
            continue
        converted = spec.convert(raw.get(spec.name), field=spec.name)
        if converted is not None:
            custom[spec.name] = converted
    return phone, custom


def build_request(
    raw: Mapping[str, Any],
    *,
    form: Form | None = None,
    limits: Limits | None = None,
    ignore_unknown_fields: bool = False,
    check_deliverability: bool = False,
) -> TicketRequest:
    """Validate a raw payload mapping and build the normalized `TicketRequest`.

    Raises:
        InputError: a subclass naming the offending field (see `docs/errors.md`).
    """
    form = Form.default() if form is None else form
    limits = Limits() if limits is None else limits
    _check_keys(raw, form, ignore_unknown_fields)
    name = _required_text(raw, "name")
    if is_empty(raw.get("email")):
        raise MissingFieldError("email is required", field="email")
    address = validate_address(raw["email"], field="email", name=name, check_deliverability=check_deliverability)
    subject = _required_text(raw, "subject")
    message = _message(raw.get("message"))
    alert = True if raw.get("alert") is None else to_bool(raw["alert"], field="alert")
    autorespond = True if raw.get("autorespond") is None else to_bool(raw["autorespond"], field="autorespond")
    ip = _ip(raw)
    priority = _priority(raw)
    topic_id = None if is_empty(raw.get("topicId")) else to_id(raw["topicId"], field="topicId")
    source = _source(raw)
    phone, custom = _form_fields(raw, form)
    return TicketRequest(
        email=address,
        subject=subject,
        message=message,
        phone=phone,
        ip=ip,
        alert=alert,
        autorespond=autorespond,
        priority=priority,
        source=source,
        topic_id=topic_id,
        attachments=_attachments(raw.get("attachments"), limits),
        custom_fields=custom,
    )
