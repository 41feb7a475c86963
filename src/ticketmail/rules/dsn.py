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

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from ticketmail.decision import BounceRecipient
from ticketmail.model import InboundEmail
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

MAX_LINES = 400
"""How many lines of a bounce's human-readable text are scanned for failed recipients."""

MAX_LINE = 1000
"""Each scanned line is cut to this many characters (RFC 5322 section 2.1.1 allows 998)."""

MAX_CHARS = 256 * 1024
"""Only this many characters of a report part or bounce text are looked at."""

# An address as MTAs print it. Linear: the local-part class has no '@', every domain label repetition
# starts with a literal '.', so there is exactly one way to match any string.
_ADDRESS = re.compile(r"[A-Za-z0-9._%+\-=/!#$&'*^`{|}~]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){1,10}")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([45])\d\d\b")

# Lines that start the returned copy of the original message (end of the diagnostic section).
_RETURNED_MARKERS = (
    "--- below this line is a copy of the message",
    "--- enclosed are the original headers",
    "--- original message follows",
    "original message follows",
    "------ this is a copy of the message",
    "----- original message",
    "------ original message",
    "----- unsent message follows",
    "----- returned message",
    "----- the following is a copy",
    "original message as received",
    "-----original message-----",
    "a copy of the original message",
    "your message reads (in part)",
    "content-type: message/rfc822",
    "content-type: text/rfc822-headers",
)
_HEADER_START = re.compile(r"^>?(?:received|return-path):", re.IGNORECASE)

# Phrases that introduce the list of failed recipients; addresses on the next lines are collected.
_TRIGGERS = (
    "following address",
    "following recipient",
    "did not reach the following",
    "could not be delivered to",
    "couldn't be delivered to",
    "wasn't delivered to",
    "was not delivered to",
    "delivery has failed to these recipients",
    "delivery to the following recipient",
    "unable to deliver message to",
    "undeliverable to",
    "not yet been delivered is",
    "could not deliver",
    "permanent fatal errors",
    "recipients did not receive",
    "address(es) failed",
    "addresses failed",
    "cannot be reached",
    "following destination",
    "delivery failed",
    "unable to deliver",
    "could not be delivered",
)
# Phrases on the same line as an address that make that address a failed recipient.
_FAILURE_WORDS = (
    "user unknown",
    "unknown user",
    "no such user",
    "no such mailbox",
    "does not exist",
    "doesn't exist",
    "not found",
    "unknown recipient",
    "recipient unknown",
    "undeliverable",
    "could not be delivered",
    "couldn't be delivered",
    "wasn't delivered",
    "not delivered",
    "delivery failed",
    "mailbox unavailable",
    "mailbox full",
    "is full",
    "quota",
    "unable to deliver",
    "not known",
    "unknown",
    "originally addressed to",
    "over quota",
    "quota exceeded",
    "rejected",
    "failed",
    "invalid",
    "not accepting",
    "did not exactly match",
    "no mailbox",
    "account",
    "... user",
)
_TEMPORARY_WORDS = (
    "has not yet been delivered",
    "not yet been delivered",
    "delivery attempts will continue",
    "will continue to try",
    "will keep trying",
    "will be retried",
    "this is only a warning",
    "this is a warning",
    "delivery has been delayed",
    "has been delayed",
    "message delayed",
    "delivery delayed",
)
_PERMANENT_WORDS = (
    "permanent error",
    "permanent failure",
    "failed permanently",
    "given up",
    "gave up",
    "not going to try again",
    "permanently",
    "fatal error",
)
_REPORTER_LOCALS = frozenset(
    {"mailer-daemon", "mailer_daemon", "maildaemon", "mail-daemon", "mailerdaemon", "mdaemon", "postmaster", "root"}
)


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


def _typed_value(value: str) -> str:
    """`rfc822; user@example.com` -> `user@example.com` (the address-type or diagnostic-type prefix)."""
    _, semi, rest = value.partition(";")
    return (rest if semi else value).strip()


def _clean_address(value: str) -> str:
    value = value.strip().strip("<>").strip()
    match = _ADDRESS.search(value)
    return match.group(0) if match else value


def _status_code(value: str | None) -> str | None:
    if not value:
        return None
    match = _STATUS.search(value)
    return match.group(0) if match else None


_ACTION_ALIASES = {"failure": "failed", "fail": "failed", "delay": "delayed", "deliver": "delivered"}


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
        value = _clean_address(_typed_value(raw))
        if "@" in value and (not semi or kind.strip().lower() in ("rfc822", "utf-8")):
            return value
    raw = block.get("final-recipient") or block.get("original-recipient")
    return _clean_address(_typed_value(raw)) if raw else None


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
        status = _status_code(block.get("status"))
        if status is None and block.get("status"):
            # Non-standard "Status: 553 Exceeded ..." (an SMTP reply code): keep its class.
            smtp = _SMTP_CODE.match(block["status"].strip())
            status = f"{smtp.group(1)}.0.0" if smtp else None
        words = block.get("action", "").split()
        action = _ACTION_ALIASES.get(words[0].lower(), words[0].lower()) if words else None
        if action is None and status:
            action = {"5": "failed", "4": "delayed", "2": "delivered"}[status[0]]
        diagnostic = block.get("diagnostic-code")
        permanent = action == "failed" and not (status or "").startswith("4")
        out.append(
            BounceRecipient(
                recipient=recipient,
                status=status,
                action=action,
                diagnostic=_typed_value(diagnostic) if diagnostic else None,
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


def _diagnostic_lines(text: str) -> list[str]:
    """The lines of a bounce text before the returned message, bounded."""
    out: list[str] = []
    for raw in text[:MAX_CHARS].splitlines():
        if len(out) >= MAX_LINES:
            break
        line = raw[:MAX_LINE]
        lowered = line.strip().lower()
        if out and (lowered.startswith(_RETURNED_MARKERS) or _HEADER_START.match(line)):
            break
        out.append(line)
    return out


def _is_reporter(address: str, own: Iterable[str]) -> bool:
    local = address.rpartition("@")[0].lower()
    return local in _REPORTER_LOCALS or normalize_address(address) in own


def scan_bounce_text(text: str, *, exclude: Iterable[str] = ()) -> tuple[BounceRecipient, ...]:
    """Find failed recipients in the human-readable text of a non-standard bounce.

    An address is taken when it starts a line (`<user@host>:` as qmail and Yahoo write it, or an
    indented address alone as Exim, Gmail and Exchange do), when it follows `SMTP=` (old Exchange X.400
    form), when it appears within the few lines after a phrase that introduces failed recipients
    ("did not reach the following recipient(s):", "The following address(es) failed:"), or when its line
    also carries a failure phrase ("User unknown", "does not exist"). Reporter addresses (postmaster,
    MAILER-DAEMON) and `exclude` (the bounce's own sender and recipients) are never taken.
    """
    lines = _diagnostic_lines(text)
    blob = "\n".join(lines).lower()
    temporary = any(w in blob for w in _TEMPORARY_WORDS) and not any(w in blob for w in _PERMANENT_WORDS)
    excluded = {normalize_address(a) for a in exclude}
    found: dict[str, BounceRecipient] = {}
    last_key: str | None = None
    window = 0
    for index, line in enumerate(lines):
        lowered = line.lower()
        stripped = line.strip()
        if any(t in lowered for t in _TRIGGERS):
            window = 6
        elif stripped and window:
            window -= 1
        for match in _ADDRESS.finditer(line):
            address = match.group(0).rstrip(".").lstrip("'`")
            if address[:5].lower() == "smtp=":  # Exchange X.400 form: dda:SMTP=user@host
                address = address[5:]
            key = normalize_address(address)
            if "expanded from" in lowered and last_key is not None and last_key in found:
                # Sendmail: "user@final-host\n    (expanded from: user@alias)": report the address we wrote to.
                previous = found.pop(last_key)
                found[key] = attrs.evolve(previous, recipient=address)
                last_key = key
                continue
            if key in found:
                # A later mention (Exchange repeats the address under "Diagnostic information") may carry the code.
                if found[key].status is None:
                    detail = _detail(lines, index, line)
                    status = _status_code(detail)
                    if status is not None:
                        found[key] = attrs.evolve(found[key], status=status, diagnostic=detail)
                continue
            if key in excluded or _is_reporter(address, excluded):
                continue
            before = line[: match.start()].strip().lstrip("<\"'").strip()
            starts_line = before == "" or before.lower().endswith(
                ("smtp=", "rfc822;", "recipient:", "error-for:", "rcpt to:")
            )
            if before.lower().startswith(("to:", "from:", "subject:", "sent:", "cc:", "reply-to:")):
                continue
            if not (starts_line or window or any(w in lowered for w in _FAILURE_WORDS)):
                continue
            detail = _detail(lines, index, line)
            status = _status_code(detail)
            if status is None:
                smtp = _SMTP_CODE.search(detail or "")
                status = f"{smtp.group(1)}.0.0" if smtp else None
            is_temp = temporary or ((status or "").startswith("4") and not any(w in blob for w in _PERMANENT_WORDS))
            found[key] = BounceRecipient(
                recipient=address,
                status=status,
                action="delayed" if is_temp else "failed",
                diagnostic=detail,
                permanent=not is_temp,
            )
            last_key = key
    if len(found) == 1:
        # One recipient: a status code anywhere in the diagnostic text is about it (Gmail puts it paragraphs below).
        ((key, only),) = found.items()
        if only.status is None:
            status = _status_code(blob)
            if status is not None:
                found[key] = attrs.evolve(only, status=status)
    return tuple(found.values())


def _detail(lines: list[str], index: int, line: str) -> str | None:
    """The diagnostic text for the address on `lines[index]`: the rest of its line and the lines that follow.

    Following lines are taken up to a blank line, a line that starts another address, or four lines.
    """
    parts = []
    rest = _ADDRESS.sub("", line).strip(" \t<>:;,.()[]\"'")
    if len(rest) >= 8:
        parts.append(rest)
    for follow in lines[index + 1 : index + 5]:
        text = follow.strip()
        if not text or _ADDRESS.match(text.lstrip("<\"' *")):
            break
        parts.append(text)
    detail = " ".join(parts)
    return detail[:300] or None


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
    recipients: tuple[BounceRecipient, ...] = ()
    standard = False
    original: str | None = None
    for ctype, text in _report_texts(email):
        if ctype in ("message/delivery-status", "message/global-delivery-status") and not recipients:
            recipients = parse_delivery_status(text)
            standard = bool(recipients)
        elif ctype in ("text/rfc822-headers", "message/rfc822", "text/rfc822") and original is None:
            original = header_block_message_id(text)
    if original is None:
        for attached in email.attached_messages:
            if not attached.message_id_generated and attached.message_id:
                original = attached.message_id
                break
    if not recipients and scan_text:
        # A DSN wrapped by a relay (disclaimer appenders forward the report as message/rfc822).
        for attached in email.attached_messages[:3]:
            if (attached.report_type or "").lower() in ("delivery-status", "global-delivery-status"):
                inner = read_delivery_report(attached, scan_text=False)
                recipients, standard = inner.recipients, inner.standard
                original = inner.original_message_id or original
                break
    if not recipients and scan_text:
        exclude = [a.email for a in (email.from_, *email.to) if a is not None]
        recipients = scan_bounce_text(email.text, exclude=exclude)
    if not recipients and scan_text:
        recipients = _failed_recipients_header(email)
    if original is None and scan_text:
        original = _returned_message_id(email.text)
    return DeliveryReport(recipients=recipients, original_message_id=original, standard=standard)


def _returned_message_id(text: str) -> str | None:
    """The Message-ID of a message returned inline in a bounce's text (after the diagnostic section)."""
    lines = text[:MAX_CHARS].splitlines()
    start = len(_diagnostic_lines(text))
    return header_block_message_id("\n".join(lines[start : start + MAX_LINES]))


def _ses_recipient(item: Any, action: str, permanent: bool) -> BounceRecipient | None:
    address = item.get("emailAddress") if isinstance(item, dict) else item
    if not isinstance(address, str) or "@" not in address:
        return None
    address = _clean_address(address[:MAX_LINE])
    status = _status_code(str(item.get("status", ""))) if isinstance(item, dict) else None
    diagnostic = item.get("diagnosticCode") if isinstance(item, dict) else None
    if isinstance(item, dict) and isinstance(item.get("action"), str):
        action = _ACTION_ALIASES.get(item["action"].lower(), item["action"].lower())
    if status is not None and status.startswith("4"):
        permanent = False
    return BounceRecipient(
        recipient=address,
        status=status,
        action=action,
        diagnostic=_typed_value(diagnostic)[:300] if isinstance(diagnostic, str) else None,
        permanent=permanent and action == "failed",
    )


def read_ses_notification(text: str) -> tuple[str, tuple[BounceRecipient, ...], str | None] | None:
    """Read an Amazon SES notification as SNS e-mails it: `(type, recipients, original Message-ID)`.

    The body is the notification's JSON (`notificationType` or `eventType`: `Bounce`, `Complaint`,
    `Delivery`), followed by SNS's unsubscribe footer. `type` is lower case; `None` when the text
    holds no such JSON. Only the first `MAX_CHARS` characters are read.
    """
    start = text.find("{", 0, 4096)
    if start < 0:
        return None
    try:
        data, _ = json.JSONDecoder().raw_decode(text[start:MAX_CHARS])
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("Message"), str):  # the raw SNS envelope, when the subscription sends JSON
        try:
            inner = json.loads(data["Message"][:MAX_CHARS])
        except (ValueError, RecursionError):
            return None
        if not isinstance(inner, dict):
            return None
        data = inner
    kind = data.get("notificationType") or data.get("eventType")
    if not isinstance(kind, str):
        return None
    kind = kind.strip().lower()
    recipients: list[BounceRecipient] = []
    if kind == "bounce" and isinstance(data.get("bounce"), dict):
        bounce = data["bounce"]
        permanent = str(bounce.get("bounceType", "")).lower() != "transient"
        for item in (bounce.get("bouncedRecipients") or [])[:MAX_LINES]:
            found = _ses_recipient(item, "failed", permanent)
            if found is not None:
                recipients.append(found)
    elif kind == "delivery" and isinstance(data.get("delivery"), dict):
        for item in (data["delivery"].get("recipients") or [])[:MAX_LINES]:
            found = _ses_recipient(item, "delivered", False)
            if found is not None:
                recipients.append(found)
    elif kind == "complaint" and isinstance(data.get("complaint"), dict):
        for item in (data["complaint"].get("complainedRecipients") or [])[:MAX_LINES]:
            found = _ses_recipient(item, "failed", False)
            if found is not None:
                recipients.append(found)
    original: str | None = None
    mail = data.get("mail")
    if isinstance(mail, dict):
        common = mail.get("commonHeaders")
        value = common.get("messageId") if isinstance(common, dict) else None
        if isinstance(value, str) and value.strip():
            original = value.strip()[:MAX_LINE].strip("<>") or None
    return kind, tuple(recipients), original


def _failed_recipients_header(email: InboundEmail) -> tuple[BounceRecipient, ...]:
    """`X-Failed-Recipients` (Exim, Gmail, Google Groups): the failed addresses when the text names none."""
    out: dict[str, BounceRecipient] = {}
    for name, value in email.headers[:MAX_LINES]:
        if name.strip().lower() != "x-failed-recipients":
            continue
        for match in _ADDRESS.finditer(value[:MAX_LINE]):
            address = match.group(0)
            out.setdefault(normalize_address(address), BounceRecipient(recipient=address, action="failed"))
    return tuple(out.values())
