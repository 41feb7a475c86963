"""Delivery reports: RFC 3464 DSNs, RFC 5965 feedback reports and the non-standard bounces of real MTAs.

A bounce must never become a ticket, and the desk wants to know *which* recipient failed and *which*
message of ours bounced, so the caller can flag the address. Two sources of truth, in order:

1. A `multipart/report; report-type=delivery-status` message (RFC 6522) carries a machine-readable
   `message/delivery-status` part (RFC 3464 section 2): one block of per-message fields, then one block
   per recipient with `Final-Recipient`, `Action` (`failed`, `delayed`, `delivered`,
   `relayed`, `expanded`; section 2.3.3), `Status` (an RFC 3463 code: `5.x.x` permanent,
   `4.x.x` transient, `2.x.x` success) and `Diagnostic-Code`. The returned message, or its header
   block (`text/rfc822-headers`), gives the original Message-ID.
2. Everything else (qmail, old Exim and Postfix, Exchange/M365 NDR text, Gmail, Yahoo, ...) is read from the
   human-readable text with a bounded, line-based scan: only the first `MAX_LINES` lines before
   the returned message, each cut to `MAX_LINE` characters, with simple linear regexes. No pattern
   here can backtrack catastrophically, and the cost is O(size of the diagnostic section).
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from ticketmail.decision import BounceRecipient
from ticketmail.model import InboundEmail
from ticketmail.rules._bounce_text import diagnostic_lines, scan_bounce_text
from ticketmail.rules._dsn_fields import (
    ACTION_ALIASES,
    ADDRESS,
    MAX_CHARS,
    MAX_LINE,
    MAX_LINES,
    SMTP_CODE,
    clean_address,
    status_code,
    typed_value,
)
from ticketmail.rules._ses import read_ses_notification
from ticketmail.rules._text import normalize_address

__all__ = [
    "MAX_CHARS",
    "MAX_LINE",
    "MAX_LINES",
    "DeliveryReport",
    "header_block_message_id",
    "parse_delivery_status",
    "read_delivery_report",
    "read_ses_notification",
    "scan_bounce_text",
]


@attrs.frozen
class DeliveryReport:
    """What a delivery report says, however it was written.

    Attributes:
        recipients: Per-recipient status, in report order (deduplicated by address).
        original_message_id: The Message-ID of the message the report is about, when found.
        standard: True when read from an RFC 3464 `message/delivery-status` part.
    """

    recipients: tuple[BounceRecipient, ...] = ()
    original_message_id: str | None = None
    standard: bool = False

    @property
    def failed(self) -> tuple[BounceRecipient, ...]:
        """Recipients whose delivery failed (`Action: failed`)."""
        return tuple(r for r in self.recipients if r.action == "failed")


def _unfold_blocks(text: str) -> Iterator[dict[str, str]]:
    """Split a `message/delivery-status` body into field blocks (RFC 3464 section 2.1), unfolding lines."""
    block: dict[str, str] = {}
    last: str | None = None
    for raw in text[:MAX_CHARS].splitlines()[: MAX_LINES * 2]:
        line = raw[:MAX_LINE]
        if not line.strip():
            if block:
                yield block
            block, last = {}, None
            continue
        if line[:1] in (" ", "\t") and last is not None:
            block[last] = f"{block[last]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        last = name.strip().lower()
        # Keep the first occurrence: RFC 3464 fields appear once per block.
        block.setdefault(last, value.strip())
    if block:
        yield block


def _recipient_of(block: dict[str, str]) -> str | None:
    """The address the sender used: `Original-Recipient` when it is an RFC 822 address, else `Final-Recipient`.

    RFC 3464 section 2.3.1: Original-Recipient is the address as the sender gave it, Final-Recipient the one
    the reporting MTA tried (after aliasing/forwarding, possibly an X.400 form). The desk wants to flag the
    address it wrote to.
    """
    for field in ("original-recipient", "final-recipient"):
        raw = block.get(field)
        if not raw:
            continue
        kind, semi, _ = raw.partition(";")
        value = clean_address(typed_value(raw))
        if "@" in value and (not semi or kind.strip().lower() in ("rfc822", "utf-8")):
            return value
    raw = block.get("final-recipient") or block.get("original-recipient")
    return clean_address(typed_value(raw)) if raw else None


def parse_delivery_status(text: str) -> tuple[BounceRecipient, ...]:
    """Parse the body of a `message/delivery-status` part into per-recipient statuses.

    Recipient blocks are those with `Final-Recipient` (or, from sloppy MTAs, only `Original-Recipient`).
    `permanent` is false for a `4.x.x` status or an `Action: delayed`.
    """
    out: list[BounceRecipient] = []
    seen: set[str] = set()
    for block in _unfold_blocks(text):
        recipient = _recipient_of(block)
        if not recipient:
            continue
        key = normalize_address(recipient)
        if not recipient or key in seen:
            continue
        seen.add(key)
        status = status_code(block.get("status"))
        if status is None and block.get("status"):
            # Non-standard "Status: 553 Exceeded ..." (an SMTP reply code): keep its class.
            smtp = SMTP_CODE.match(block["status"].strip())
            status = f"{smtp.group(1)}.0.0" if smtp else None
        words = block.get("action", "").split()
        action = ACTION_ALIASES.get(words[0].lower(), words[0].lower()) if words else None
        if action is None and status:
            action = {"5": "failed", "4": "delayed", "2": "delivered"}[status[0]]
        diagnostic = block.get("diagnostic-code")
        permanent = action == "failed" and not (status or "").startswith("4")
        out.append(
            BounceRecipient(
                recipient=recipient,
                status=status,
                action=action,
                diagnostic=typed_value(diagnostic) if diagnostic else None,
                permanent=permanent,
            )
        )
    return tuple(out)


def header_block_message_id(text: str) -> str | None:
    """The Message-ID in a header block (of a returned message), without angle brackets."""
    lines = text[:MAX_CHARS].splitlines()[: MAX_LINES * 2]
    for index, line in enumerate(lines):
        name, colon, value = line.partition(":")
        if not colon or name.strip().lstrip(">").strip().lower() != "message-id":
            continue
        value = value.strip()
        if not value and index + 1 < len(lines):
            value = lines[index + 1].strip()
        value = value[:MAX_LINE].strip()
        if value.startswith("<") and ">" in value:
            value = value[1 : value.index(">")]
        return value.strip() or None
    return None


_REPORT_TYPES = frozenset(
    {"message/delivery-status", "message/global-delivery-status", "text/rfc822-headers", "message/feedback-report"}
)


def _report_texts(email: InboundEmail) -> Iterator[tuple[str, str]]:
    """(content type, text) of the report parts, then of report-typed attachments.

    Some relays (disclaimer appenders, broken MIME writers) leave the machine-readable parts as plain
    attachments outside a `multipart/report`; they are read the same way.
    """
    for part in email.report_parts:
        yield part.content_type.lower(), part.text
    for attachment in email.attachments:
        ctype = attachment.content_type.lower()
        if ctype in _REPORT_TYPES:
            yield ctype, attachment.data[:MAX_CHARS].decode("utf-8", "replace")


def read_delivery_report(email: InboundEmail, *, scan_text: bool) -> DeliveryReport:
    """Read the per-recipient status and the original Message-ID from a report or a bounce.

    `scan_text` enables the non-standard scan (used when other signals say this is a bounce).
    """
    report = _from_parts(email)
    return _completed_from_text(email, report) if scan_text else report


_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_HEADER_TYPES = ("text/rfc822-headers", "message/rfc822", "text/rfc822")


def _from_parts(email: InboundEmail) -> DeliveryReport:
    """What the machine-readable parts and the attached original message say."""
    recipients: tuple[BounceRecipient, ...] = ()
    original: str | None = None
    for ctype, text in _report_texts(email):
        if ctype in _STATUS_TYPES and not recipients:
            recipients = parse_delivery_status(text)
        elif ctype in _HEADER_TYPES and original is None:
            original = header_block_message_id(text)
    if original is None:
        original = next(
            (a.message_id for a in email.attached_messages if not a.message_id_generated and a.message_id), None
        )
    return DeliveryReport(recipients=recipients, original_message_id=original, standard=bool(recipients))


def _completed_from_text(email: InboundEmail, report: DeliveryReport) -> DeliveryReport:
    """`report`, with what a wrapped DSN, the bounce's text and its headers add when the parts said nothing."""
    recipients, standard, original = report.recipients, report.standard, report.original_message_id
    if not recipients:
        # A DSN wrapped by a relay (disclaimer appenders forward the report as message/rfc822).
        wrapped = next(
            (a for a in email.attached_messages[:3] if (a.report_type or "").lower() in _WRAPPED_TYPES), None
        )
        if wrapped is not None:
            inner = read_delivery_report(wrapped, scan_text=False)
            recipients, standard = inner.recipients, inner.standard
            original = inner.original_message_id or original
    if not recipients:
        exclude = [a.email for a in (email.from_, *email.to) if a is not None]
        recipients = scan_bounce_text(email.text, exclude=exclude) or _failed_recipients_header(email)
    if original is None:
        original = _returned_message_id(email.text)
    return DeliveryReport(recipients=recipients, original_message_id=original, standard=standard)


_WRAPPED_TYPES = ("delivery-status", "global-delivery-status")


def _returned_message_id(text: str) -> str | None:
    """The Message-ID of a message returned inline in a bounce's text (after the diagnostic section)."""
    lines = text[:MAX_CHARS].splitlines()
    start = len(diagnostic_lines(text))
    return header_block_message_id("\n".join(lines[start : start + MAX_LINES]))


def _failed_recipients_header(email: InboundEmail) -> tuple[BounceRecipient, ...]:
    """`X-Failed-Recipients` (Exim, Gmail, Google Groups): the failed addresses when the text names none."""
    out: dict[str, BounceRecipient] = {}
    for name, value in email.headers[:MAX_LINES]:
        if name.strip().lower() != "x-failed-recipients":
            continue
        for match in ADDRESS.finditer(value[:MAX_LINE]):
            address = match.group(0)
            out.setdefault(normalize_address(address), BounceRecipient(recipient=address, action="failed"))
    return tuple(out.values())
