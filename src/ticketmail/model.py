"""The normalized value model shared by every part of ticketmail.

All classes are frozen attrs classes with slots: values, not records. Parsers build them; rules, threading,
the pipeline and backends read them. Computed members (an attachment's `size` and `sha256`) are filled
at construction, so `attrs.asdict` never computes anything.

Two inputs, two models:

* `TicketRequest`: a ticket-creation request from the HTTP API (osTicket JSON/XML contract).
* `InboundEmail`: one raw RFC 5322 message, decoded.

Both reduce to the same questions the rules layer asks (who, what subject, what text), see
`message_view()`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Mapping
from typing import Literal

import attrs

__all__ = [
    "Address",
    "Attachment",
    "Choice",
    "CustomValue",
    "Defect",
    "InboundEmail",
    "MailboxContext",
    "MessageBody",
    "MessageView",
    "Phone",
    "Provenance",
    "ReportPart",
    "TicketRequest",
    "message_view",
]

BodyType = Literal["text/plain", "text/html"]
Disposition = Literal["attachment", "inline"]


def _lower_str(value: str) -> str:
    return value.lower()


@attrs.frozen
class Address:
    """An email address with an optional display name.

    `email` is stored as given by the parser after normalization: the domain part lower-cased and
    IDNA-decoded to Unicode; the local part kept as written (RFC 5321 says it may be case sensitive).
    """

    email: str
    name: str | None = None

    @property
    def domain(self) -> str:
        """The part after the last `@` (lower case), or `""`."""
        return self.email.rpartition("@")[2].lower() if "@" in self.email else ""

    @property
    def local(self) -> str:
        """The part before the last `@`."""
        return self.email.rpartition("@")[0] if "@" in self.email else self.email

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@attrs.frozen
class Phone:
    """A phone number with an optional extension (osTicket's `3185558634X123` form)."""

    number: str
    ext: str | None = None

    def __str__(self) -> str:
        return f"{self.number}X{self.ext}" if self.ext else self.number


@attrs.frozen
class Choice:
    """A value of a choice custom field: its key and its label."""

    key: str
    label: str


CustomValue = str | int | float | bool | _dt.datetime | _dt.date | Phone | Choice | tuple[Choice, ...] | None
"""The types a custom form field value can take after parsing."""


@attrs.frozen
class MessageBody:
    """A message body as text, with its type (`text/plain` or `text/html`)."""

    text: str
    content_type: BodyType = attrs.field(default="text/plain", converter=_lower_str)

    @content_type.validator
    def _check_type(self, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in ("text/plain", "text/html"):
            raise ValueError(f"MessageBody.content_type must be text/plain or text/html, got {value!r}")


@attrs.frozen
class Attachment:
    """One attached file: its bytes and what is known about them.

    `size` and `sha256` are computed from `data` at construction.
    `content_type` is the declared media type (lower case, no parameters); `sniffed_type` what the
    bytes look like, when a parser checked. `charset` is the declared charset of a text part.
    """

    filename: str
    content_type: str = attrs.field(converter=_lower_str)
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    charset: str | None = None
    content_id: str | None = None
    disposition: Disposition = "attachment"
    sniffed_type: str | None = None
    size: int = attrs.field(init=False)
    sha256: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "size", len(self.data))
        object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())


@attrs.frozen
class TicketRequest:
    """A normalized ticket-creation request, as the osTicket API contract describes it.

    Attributes:
        email: The submitter (validated, normalized address; `name` holds the display name).
        subject: The ticket subject (one line).
        message: The first message of the thread.
        phone: The submitter's phone, with extension.
        ip: The submitter's IP address (normalized text form).
        alert: Whether staff should be alerted (osTicket `alert`; default true).
        autorespond: Whether the submitter gets an auto-response (default true).
        priority: Priority id.
        source: Where the ticket came from (default `"API"`).
        topic_id: Help topic id.
        attachments: Files, in payload order (names may repeat).
        custom_fields: Values of the caller's form fields, by field name (`notes` and others).
    """

    email: Address
    subject: str
    message: MessageBody
    phone: Phone | None = None
    ip: str | None = None
    alert: bool = True
    autorespond: bool = True
    priority: int | None = None
    source: str = "API"
    topic_id: int | None = None
    attachments: tuple[Attachment, ...] = ()
    custom_fields: Mapping[str, CustomValue] = attrs.field(factory=dict, hash=False)

    @property
    def name(self) -> str:
        """The submitter's name (the address's display name, or its local part)."""
        return self.email.name or self.email.local


@attrs.frozen
class Defect:
    """A recoverable problem found while parsing (the stdlib `email` package's notion of a defect)."""

    code: str
    message: str
    part: str | None = None


@attrs.frozen
class ReportPart:
    """A machine-readable part of a `multipart/report` (RFC 6522) message.

    `content_type` is e.g. `message/delivery-status`, `message/feedback-report`,
    `text/rfc822-headers` or `message/rfc822`; `text` is its decoded content (for a returned
    message: its header block).
    """

    content_type: str
    text: str


@attrs.frozen
class Provenance:
    """Where a raw item came from, stable across refetches.

    `kind` is `imap`, `pop3`, `maildir`, `mbox`, `pipe`, `file` or `api`; `key` identifies
    the item inside the mailbox: `"<uidvalidity>:<uid>"` for IMAP, the UIDL for POP3, the file name or
    key for local folders, a content hash for pipes and files.

    `label` says where the item was for a person (a file's path, for example, where the key is a content
    hash). It is not part of the identity: two provenances that differ only in their labels are equal, and
    the ledger key ignores it.
    """

    mailbox: str
    kind: str
    key: str
    label: str | None = attrs.field(default=None, eq=False, kw_only=True)


@attrs.frozen
class InboundEmail:
    """One raw email message, decoded. Built by `ticketmail.parse_email()`.

    Header-derived members are decoded (RFC 2047/2231) to `str`. Lists are tuples in header order.

    Attributes:
        message_id: `Message-ID` without angle brackets; when absent, a deterministic one derived from
            a hash of the raw bytes (and `message_id_generated` is true).
        in_reply_to: Message ids in `In-Reply-To`.
        references: Message ids in `References`, oldest first as written.
        date: `Date` as an aware datetime, or `None` when absent or unparseable.
        from_: The `From` address (first one), or `None`.
        reply_to: `Reply-To` addresses.
        sender: `Sender` address, if any.
        to: `To` addresses.
        cc: `Cc` addresses.
        delivered_to: Envelope recipients seen in `Delivered-To`, `X-Original-To`, `Envelope-To`,
            `X-Envelope-To` (in that order, deduplicated).
        return_path: `Return-Path` value without brackets (`""` for the null sender `<>`), or `None`.
        subject: Decoded subject (`""` when absent).
        text: The plain-text body (derived from HTML when the mail has only HTML).
        html: The sanitized HTML body, or `None` when the mail has no HTML.
        new_text: The text the writer added in this message: quoted history and signature removed.
        attachments: Attached and inline files (inline ones have `disposition="inline"`).
        attached_messages: Nested `message/rfc822` parts, parsed (each is also in `attachments`
            as a `.eml` file).
        content_type: The top-level media type (lower case).
        report_type: The `report-type` of a `multipart/report` message, else `None`.
        report_parts: The machine-readable parts of a `multipart/report`.
        signal_headers: Raw values of the headers that signal automatic mail (`Auto-Submitted`,
            `Precedence`, `X-Autoreply`, `List-Id`, ...), by lower-case header name.
        headers: Every header as (name, decoded value), in order.
        charsets: Charsets finally used to decode the text parts, in part order.
        defects: Recoverable problems found while parsing (`code`, `message`, dotted MIME `part`).
        message_id_generated: True when `message_id` was derived from the raw bytes (no usable
            `Message-ID`): the same bytes always give the same id.
        size: Size of the raw message in bytes.
        unwrapped: True when the message was a forwarded wrapper (its whole body one `message/rfc822`
            part): body and files come from the inner message, header members from the outer envelope,
            and the inner message is also in `attached_messages`.
    """

    message_id: str
    subject: str = ""
    from_: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    sender: Address | None = None
    delivered_to: tuple[str, ...] = ()
    return_path: str | None = None
    date: _dt.datetime | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    text: str = ""
    html: str | None = None
    new_text: str = ""
    attachments: tuple[Attachment, ...] = ()
    attached_messages: tuple[InboundEmail, ...] = ()
    content_type: str = "text/plain"
    report_type: str | None = None
    report_parts: tuple[ReportPart, ...] = ()
    signal_headers: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict, hash=False)
    headers: tuple[tuple[str, str], ...] = ()
    charsets: tuple[str, ...] = ()
    defects: tuple[Defect, ...] = ()
    message_id_generated: bool = False
    size: int = 0
    unwrapped: bool = False

    def header(self, name: str) -> list[str]:
        """All decoded values of header `name` (case-insensitive), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@attrs.frozen
class MessageView:
    """What rules need to know of any inbound message, whatever its origin."""

    sender: Address | None
    recipients: tuple[Address, ...]
    subject: str
    body: str
    headers: tuple[tuple[str, str], ...]


def message_view(message: InboundEmail | TicketRequest) -> MessageView:
    """Reduce an email or an API request to the fields filters and routing rules look at."""
    if isinstance(message, TicketRequest):
        return MessageView(
            sender=message.email,
            recipients=(),
            subject=message.subject,
            body=message.message.text,
            headers=(),
        )
    return MessageView(
        sender=message.from_,
        recipients=message.to + message.cc,
        subject=message.subject,
        body=message.text,
        headers=message.headers,
    )


@attrs.frozen
class MailboxContext:
    """Where an inbound message arrived and the defaults that mailbox applies.

    Attributes:
        name: The mailbox (or API endpoint) name, used for per-mailbox filters and duplicate scope.
        addresses: The desk's own addresses at this mailbox (mail from them is a loop).
        department: Default department for tickets opened here.
        category: Default category.
        priority: Default priority id.
    """

    name: str = "default"
    addresses: tuple[str, ...] = ()
    department: str | None = None
    category: str | None = None
    priority: int | None = None
