"""The decision log, for people: where each message came from, what happened to it and why, in words.

The pipeline writes one `AuditRecord` per message it decides on (in the same unit of work as the effect),
and the backend keeps them. This module is the pure half of reading them back: describing a provenance in
words, choosing the headers worth keeping with a decision, and selecting records by mailbox, time,
outcome, ticket, Message-ID or sender. `ticketmail audit` is built on it; an application can show the same
view in its own admin pages.
"""

from __future__ import annotations

import collections
import datetime as _dt
from collections.abc import Iterable, Sequence

import attrs

from ticketmail.backends.base import AuditRecord
from ticketmail.model import InboundEmail, Provenance, TicketRequest, message_view

__all__ = [
    "AUDIT_HEADERS",
    "OUTCOMES",
    "AuditQuery",
    "describe_message",
    "audit_headers",
    "describe_provenance",
    "reasons_in_words",
    "select_audit",
]

AUDIT_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "delivered-to",
    "return-path",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "precedence",
    "x-auto-response-suppress",
    "x-autoreply",
    "x-autorespond",
    "list-id",
    "list-unsubscribe",
    "x-loop",
    "x-spam-flag",
    "x-spam-status",
    "content-type",
)
"""The headers kept with a decision (lower case): the ones filters, automatic-mail detection, threading and
duplicate checks read. Others stay in the raw message."""

OUTCOMES = ("created", "appended", "ignored", "duplicate", "rejected", "failed", "discarded", "retried")
"""Every `AuditRecord.action` the library writes."""

_MAX_VALUE = 300
_MAX_HEADERS = 40
_MAX_SUBJECT = 300

_KINDS = {
    "imap": "IMAP",
    "pop3": "POP3",
    "maildir": "Maildir",
    "mbox": "mbox",
    "pipe": "pipe",
    "file": "file",
    "api": "HTTP API",
    "graph": "Microsoft Graph",
    "lmtp": "LMTP",
    "smtp": "SMTP",
}


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def describe_provenance(provenance: Provenance | None) -> str:
    """Where an item came from, in words: the mailbox, the protocol and the item's own name there.

    IMAP keys (`"<uidvalidity>:<uid>"`) read as `"IMAP support, UID 13 (UIDVALIDITY 7)"`; a file as its path
    (the provenance's `label`) rather than its content hash; anything else as protocol, mailbox and key.
    """
    if provenance is None:
        return "unknown origin"
    kind = _KINDS.get(provenance.kind, provenance.kind)
    mailbox, key = provenance.mailbox, provenance.key
    if provenance.kind == "file":
        return f"file {provenance.label or key}"
    if provenance.kind == "imap" and key.count(":") == 1:
        validity, uid = key.split(":")
        where = f"IMAP {mailbox}, UID {uid} (UIDVALIDITY {validity})"
    elif provenance.kind == "pop3":
        where = f"POP3 {mailbox}, UIDL {key}"
    elif provenance.kind in ("maildir", "mbox"):
        where = f"{kind} {mailbox}, message {key}"
    elif provenance.kind in ("pipe", "api") and len(key) == 64:
        where = f"{kind} ({mailbox}), content sha256 {key[:12]}"
    elif provenance.kind == "api":
        where = f"{kind} ({mailbox}), idempotency key {key}"
    else:
        where = f"{kind} {mailbox}, {key}"
    return f"{where}: {provenance.label}" if provenance.label else where


_WANTED = frozenset(AUDIT_HEADERS)


def audit_headers(message: InboundEmail | TicketRequest) -> tuple[tuple[str, str], ...]:
    """The headers of `message` worth keeping with its decision (`AUDIT_HEADERS`), values truncated."""
    return _kept_headers(message_view(message).headers)


def _kept_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        if name.lower() in _WANTED:
            kept.append((name, _clip(value, _MAX_VALUE)))
            if len(kept) >= _MAX_HEADERS:
                break
    return tuple(kept)


def describe_message(record: AuditRecord, message: InboundEmail | TicketRequest | None) -> AuditRecord:
    """`record` with its `origin` in words and, given the message, its `sender`, `subject` and `headers`."""
    origin = record.origin or describe_provenance(record.provenance)
    if message is None:
        return attrs.evolve(record, origin=origin)
    view = message_view(message)  # one copy of the record, whatever is filled in (this runs for every message)
    return attrs.evolve(
        record,
        origin=origin,
        sender=view.sender.email if view.sender is not None else None,
        subject=_clip(view.subject, _MAX_SUBJECT),
        headers=_kept_headers(view.headers),
    )


def reasons_in_words(record: AuditRecord) -> str:
    """The record's reasons as one line: each message, with the value that fired in brackets."""
    parts = []
    for _code, message, value in record.reasons:
        parts.append(f"{message} [{_clip(value, 60)}]" if value else message)
    return "; ".join(parts) or "-"


def _aware(value: _dt.datetime) -> _dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)


def _bare_id(value: str) -> str:
    return str(value).strip().strip("<>")


def _lower(value: str) -> str:
    return str(value).lower()


def _outcomes(value: Sequence[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    values = (value,) if isinstance(value, str) else tuple(value)
    for one in values:
        if one not in OUTCOMES:
            from ticketmail.errors import InvalidValueError

            raise InvalidValueError(f"unknown outcome {one!r}; expected one of {', '.join(OUTCOMES)}", field="outcome")
    return values


@attrs.frozen
class AuditQuery:
    """Which decisions to read. Every criterion given must match; none given means every record.

    Attributes:
        mailbox: The provenance's mailbox name (exact).
        since: Only decisions at or after this time (naive means UTC).
        outcome: One outcome or several (`OUTCOMES`).
        ticket: The ticket number concerned.
        message_id: The Message-ID, with or without angle brackets.
        sender: A case-insensitive part of the sender's address.
        limit: At most this many records, the newest ones; `None` for all.
    """

    mailbox: str | None = None
    since: _dt.datetime | None = attrs.field(default=None, converter=attrs.converters.optional(_aware))
    outcome: tuple[str, ...] = attrs.field(default=(), converter=_outcomes)
    ticket: str | None = None
    message_id: str | None = attrs.field(default=None, converter=attrs.converters.optional(_bare_id))
    sender: str | None = attrs.field(default=None, converter=attrs.converters.optional(_lower))
    limit: int | None = 50

    def matches(self, record: AuditRecord) -> bool:
        """Whether `record` meets every criterion."""
        prov = record.provenance
        checks = (
            self.mailbox is None or (prov is not None and prov.mailbox == self.mailbox),
            self.since is None or record.at >= self.since,
            not self.outcome or record.action in self.outcome,
            self.ticket is None or record.ticket == self.ticket,
            self.message_id is None or (record.message_id or "").strip("<>") == self.message_id,
            self.sender is None or self.sender in (record.sender or "").lower(),
        )
        return all(checks)


def select_audit(records: Iterable[AuditRecord], query: AuditQuery) -> list[AuditRecord]:
    """The records (read oldest first) that match `query`, newest first, at most `query.limit` of them.

    Memory is bounded by the limit, not by the size of the log.
    """
    kept: collections.deque[AuditRecord] = collections.deque(maxlen=query.limit)
    for record in records:
        if query.matches(record):
            kept.append(record)
    return list(reversed(kept))
