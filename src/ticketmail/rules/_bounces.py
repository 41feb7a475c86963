"""Bounces, delivery and feedback reports: the report structures first, then the evidence of a notice.

A multipart report (feedback, disposition), a provider's notification (Amazon SES), a Microsoft JMRP
complaint or a mailing-list server's rejection decide at once. Otherwise the evidence is weighed: a DSN
structure, a reporting sender or a null sender is strong on its own; from what looks like a person, a bounce
subject or phrase alone is not enough, the text must read like a mail system's notice.
"""

from __future__ import annotations

import re

import attrs

from ticketmail.decision import BounceRecipient
from ticketmail.model import InboundEmail
from ticketmail.rules._automatic_text import (
    AUTOREPLY_PREFIX,
    BOUNCE_BODY,
    BOUNCE_HINTS,
    BOUNCE_PREFIX,
    BOUNCE_SUBJECTS,
    DELAY_PREFIX,
    DELAY_SUBJECTS,
    JMRP_SENDERS,
    LIST_REJECTIONS,
    OOF_PREFIX,
    REPORTER_NAMES,
    SES_SENDERS,
    SUCCESS_PREFIX,
    Signals,
    contains,
    contains_body,
    is_reporter_address,
    subject_prefix,
)
from ticketmail.rules.dsn import DeliveryReport, read_delivery_report, read_ses_notification

__all__ = ["report_signals"]


def _reporter_sender(email: InboundEmail) -> str | None:
    """The sender when it is a mail system's reporting address or name (`MAILER-DAEMON <>` included)."""
    if email.from_ is not None:
        if email.from_.email and is_reporter_address(email.from_.email):
            return email.from_.email
        name = " ".join(email.from_.name.split()).strip("\"' ").lower() if email.from_.name else ""
        if name in REPORTER_NAMES and (not email.from_.email or email.return_path in ("", None)):
            return email.from_.name or email.from_.email
        local = email.from_.email.rpartition("@")[0].lower()
        if local.startswith("microsoftexchange") and len(local) > 20:
            return email.from_.email  # Exchange's system mailbox that writes NDRs
    if email.return_path and is_reporter_address(email.return_path):
        return email.return_path
    if email.from_ is None:
        # "From: MAILER-DAEMON <>" (DragonFly, some appliances) leaves no address to parse.
        for name, value in email.headers[:200]:
            if name.strip().lower() == "from":
                words = value.replace("<", " ").replace(">", " ").replace('"', " ").lower().split()
                if words and (" ".join(words) in REPORTER_NAMES or is_reporter_address(words[0])):
                    return value.strip()[:200]
                break
    return None


def _list_server_notice(email: InboundEmail) -> str | None:
    """A mailing-list server rejecting a post (fml, Mailman, Majordomo `-admin`/`owner-` senders)."""
    sender = email.from_.email.lower() if email.from_ else ""
    local = sender.rpartition("@")[0]
    if not (local.endswith(("-admin", "-owner", "-bounces")) or local.startswith("owner-")):
        return None
    subject = email.subject.lower()
    head = email.text[:2000].lower()
    for phrase in LIST_REJECTIONS:
        if phrase in subject or phrase in head:
            return phrase
    return None


Found = tuple[tuple[BounceRecipient, ...], str | None]
"""(per-recipient status of a bounce or delivery report, Message-ID of the original message)."""

_NOTHING: Found = ((), None)


def report_signals(email: InboundEmail, found: Signals) -> Found:
    """Multipart reports and bounces; returns (recipients, original message id)."""
    structured = _structured_report(email, found)
    if structured is not None:
        return structured
    evidence = _Evidence.of(email, found)
    if evidence is None:
        return _NOTHING
    if not evidence.strong and _forwarded(email):
        # A customer forwarding a bounce ("Fwd: Undelivered Mail ...") to ask for help: a ticket.
        return _NOTHING
    report = read_delivery_report(email, scan_text=True)
    returned = bool(evidence.bounce_subject or evidence.delay_subject or evidence.body_phrase) and _returned_headers(
        email
    )
    if not evidence.strong and not evidence.machine and not _reads_like_notice(email, evidence, report, returned):
        return _NOTHING
    evidence.record(found, returned)
    failed = "failed" in {r.action for r in report.recipients} or (
        not report.recipients and not (evidence.delay_subject or evidence.success_subject)
    )
    found.kinds -= {"auto_reply", "out_of_office"} if failed else {"auto_reply", "out_of_office", "bounce"}
    found.kinds.add("bounce" if failed else "delivery_report")
    return tuple(report.recipients), report.original_message_id


def _structured_report(email: InboundEmail, found: Signals) -> Found | None:
    """A report whose structure or sender says what it is: feedback, disposition, provider, JMRP, list rejection."""
    report_type = (email.report_type or "").strip().lower()
    if report_type == "feedback-report":
        found.add("feedback_report", "feedback_report", "ARF feedback report (RFC 5965)", _feedback_type(email))
    elif report_type == "disposition-notification":
        found.add("delivery_report", "mdn", "Message disposition notification (RFC 8098)", None)
    else:
        provider = _provider_notification(email, found)
        if provider is not None:
            return provider
        sender_address = (email.from_.email if email.from_ else "").lower()
        if sender_address in JMRP_SENDERS and "complaint about message" in email.subject.lower():
            # Microsoft's junk mail reporting program (JMRP): the complained-about message is attached.
            found.add("feedback_report", "provider_notification", "Microsoft JMRP complaint", sender_address)
        else:
            rejection = _list_server_notice(email)
            if rejection is None:
                return None
            found.kinds -= {"bulk", "mailing_list"}
            found.add("bounce", "list_rejection", "A mailing-list server rejected the message", rejection)
    return (), read_delivery_report(email, scan_text=False).original_message_id


@attrs.frozen
class _Evidence:
    """What speaks for a delivery notice without a report structure that decides it."""

    report_type: str
    subject_line: str  # the subject, cut for the reason
    is_dsn: bool  # a multipart/report of type delivery-status
    sender: str | None  # a mail system's reporting sender
    bounce_subject: str | None
    delay_subject: str | None
    success_subject: str | None
    body_phrase: str | None  # the wording of a mail system's notice
    machine: bool  # machine-written (auto-reply headers, null reverse-path), not an auto-reply to a bounce
    null_sender: bool

    @classmethod
    def of(cls, email: InboundEmail, found: Signals) -> _Evidence | None:
        """The evidence in `email`, or `None` when nothing speaks for a notice (most mail)."""
        report_type = (email.report_type or "").strip().lower()
        subject = email.subject
        is_dsn = report_type in ("delivery-status", "global-delivery-status")
        sender = _reporter_sender(email)
        bounce_subject = subject_prefix(subject, BOUNCE_PREFIX) or contains(subject, BOUNCE_SUBJECTS)
        delay_subject = contains(subject, DELAY_SUBJECTS)
        success_subject = subject_prefix(subject, SUCCESS_PREFIX)
        body_phrase = contains_body(email.text, BOUNCE_BODY)
        if not (is_dsn or sender is not None or bounce_subject or delay_subject or success_subject or body_phrase):
            return None
        return cls(
            report_type=report_type,
            subject_line=subject[:200],
            is_dsn=is_dsn,
            sender=sender,
            bounce_subject=bounce_subject,
            delay_subject=delay_subject,
            success_subject=success_subject,
            body_phrase=body_phrase,
            machine=(bool(found.kinds & {"auto_reply", "out_of_office"}) or email.return_path == "")
            and not (subject_prefix(subject, OOF_PREFIX) or subject_prefix(subject, AUTOREPLY_PREFIX)),
            null_sender=email.return_path == "" or (email.from_ is not None and not email.from_.email),
        )

    @property
    def subject(self) -> bool:
        return bool(self.bounce_subject or self.delay_subject or self.success_subject)

    @property
    def strong(self) -> bool:
        """Enough on its own: a DSN, a reporting sender or a null sender."""
        return self.is_dsn or self.sender is not None or self.null_sender

    def record(self, found: Signals, returned: bool) -> None:
        """Add a reason for every piece of evidence, in a fixed order."""
        if self.is_dsn:
            found.add("bounce", "dsn", "Delivery status notification (RFC 3464)", self.report_type)
        if self.sender is not None:
            found.add("bounce", "reporter_sender", "Sent by a mail system's reporting address", self.sender)
        if self.subject:
            found.add("bounce", "bounce_subject", "Subject of a delivery notice", self.subject_line)
        if self.body_phrase:
            found.add("bounce", "bounce_body", "Text of a mail system's delivery notice", self.body_phrase)
        if returned:
            found.add("bounce", "returned_headers", "The returned message's headers are quoted in the text", None)


def _reads_like_notice(email: InboundEmail, evidence: _Evidence, report: DeliveryReport, returned: bool) -> bool:
    """From what looks like a person, a bounce subject or phrase alone is not enough.

    The text must read like a mail system's notice: failed recipients with the returned headers or the
    notice's wording, both of those, or an anchored bounce subject with recipients and a notice's hints.
    """
    subject = email.subject
    anchored = subject_prefix(subject, BOUNCE_PREFIX) or subject_prefix(subject, DELAY_PREFIX)
    hint = bool(anchored and report.recipients and contains_body(email.text, BOUNCE_HINTS))
    phrase = bool(evidence.body_phrase)
    return bool(report.recipients and (returned or phrase)) or (returned and phrase) or hint


_SES_TYPES = {"bounce": "bounce", "complaint": "feedback_report", "delivery": "delivery_report"}


def _provider_notification(
    email: InboundEmail, found: Signals
) -> tuple[tuple[BounceRecipient, ...], str | None] | None:
    """Amazon SES notifications delivered by SNS e-mail subscriptions (JSON with `notificationType`)."""
    sender = (email.from_.email if email.from_ else "").lower()
    if not sender.endswith(SES_SENDERS):
        return None
    notice = read_ses_notification(email.text)
    if notice is None:
        return None
    kind_name, recipients, original = notice
    kind = _SES_TYPES.get(kind_name)
    if kind is None:
        return None
    found.add(kind, "provider_notification", f"Amazon SES {kind_name} notification", sender)  # type: ignore[arg-type]
    return (recipients if kind != "feedback_report" else ()), original


def _returned_headers(email: InboundEmail) -> bool:
    """Whether the text quotes the header block of a returned message (`Received:` and `Message-ID:`)."""
    head = email.text[:20000].lower()
    return ("\nreceived: from " in head or "\n>received: " in head or "\nreceived:" in head) and ("message-id:" in head)


_FORWARD_SUBJECT = re.compile(r"[ \t]*(?:fwd?|wg|tr|rv|doorst|vs|i)[ \t]*:", re.IGNORECASE)
_FORWARD_MARKERS = (
    "forwarded message",
    "begin forwarded message",
    "-----original message-----",
    "weitergeleitete nachricht",
)


def _forwarded(email: InboundEmail) -> bool:
    """Whether a person forwarded this (a forward prefix on the subject, or a forward marker in the text)."""
    if _FORWARD_SUBJECT.match(email.subject):
        return True
    head = email.text[:3000].lower()
    return any(marker in head for marker in _FORWARD_MARKERS)


def _feedback_type(email: InboundEmail) -> str | None:
    for part in email.report_parts:
        if part.content_type.lower() != "message/feedback-report":
            continue
        for line in part.text[:20000].splitlines():
            name, colon, value = line.partition(":")
            if colon and name.strip().lower() == "feedback-type":
                return value.strip().lower() or None
    return None
