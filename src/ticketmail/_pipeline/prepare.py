"""The pure work before a message's transaction, outside any lock.

Argument checks, parsing, duplicate keys, threading candidates and the attachment policy: holding the write
lock during this CPU work would serialize workers for nothing.
"""

from __future__ import annotations

import attrs

from ticketmail._pipeline.config import Config
from ticketmail._pipeline.content import with_html_note, with_note
from ticketmail._pipeline.outcome import ledger_key, unexpected_error
from ticketmail.decision import Reason
from ticketmail.errors import BackendError, TicketmailError, TypeMismatchError
from ticketmail.model import InboundEmail, MailboxContext, Provenance
from ticketmail.threading import ThreadCandidates, prefilter_candidates, thread_candidates

__all__ = ["Prepared", "Unprocessable", "prepare"]


@attrs.frozen
class Prepared:
    """A parsed message ready for its unit of work."""

    raw: bytes
    provenance: Provenance
    key: str
    email: InboundEmail
    dup_keys: tuple[str, ...]
    candidates: ThreadCandidates | None = None
    notes: tuple[Reason, ...] = ()


@attrs.frozen
class Unprocessable:
    """A message that failed before its unit of work: it goes to the quarantine with `error`."""

    raw: bytes
    provenance: Provenance
    key: str
    error: TicketmailError
    message_id: str | None = None


_LOG_TEXT = {
    "parsing": "parsing %s failed unexpectedly",
    "processing": "duplicate keys of %s failed unexpectedly",
    "checking the attachments of": "the attachment policy failed on %s",
}
"""What the log says when a stage fails with an exception that is not a ticketmail error."""


def _unexpected(config: Config, key: str, stage: str, exc: Exception) -> TicketmailError:
    config.log.exception(_LOG_TEXT[stage], key)
    return unexpected_error(exc, stage)


def _checked(raw: object, provenance: object) -> bytes:
    """`raw` as bytes; `TypeMismatchError` for arguments of the wrong type (a programming error)."""
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise TypeMismatchError(f"raw must be bytes, got {type(raw).__name__}", field="raw")
    if not isinstance(provenance, Provenance):
        raise TypeMismatchError(f"provenance must be a Provenance, got {type(provenance).__name__}", field="provenance")
    return raw


def prepare(config: Config, raw: bytes, provenance: Provenance, ctx: MailboxContext) -> Prepared | Unprocessable:
    """Check the arguments, parse, and compute what the unit of work will look up, outside any transaction.

    A ticketmail error makes the message `Unprocessable` as it is, any other exception as a `ProcessingError`
    (logged); a `BackendError` propagates (storage is down: retry later). The attachment policy is contained
    whatever it raises: a failing policy must not cost the message, which is kept, unprocessed, in quarantine.
    """
    data = _checked(raw, provenance)
    key = ledger_key(provenance)
    stage, message_id = "parsing", None
    try:
        email = config.parse(data)
        stage, message_id = "processing", email.message_id
        dup_keys = config.duplicate_keys(email, ctx)
        candidates = _thread_candidates(config, email, ctx)
    except BackendError:
        raise
    except TicketmailError as exc:
        return Unprocessable(data, provenance, key, exc, message_id)
    except Exception as exc:
        return Unprocessable(data, provenance, key, _unexpected(config, key, stage, exc), message_id)
    try:
        email, notes = attachment_policy(config, email)
    except Exception as exc:
        return Unprocessable(
            data, provenance, key, _unexpected(config, key, "checking the attachments of", exc), message_id
        )
    return Prepared(data, provenance, key, email, dup_keys, candidates, notes)


def _thread_candidates(config: Config, email: InboundEmail, ctx: MailboxContext) -> ThreadCandidates:
    """The capped threading candidates, ticket numbers checked with a read-only lookup (no write lock)."""
    candidates = thread_candidates(email, config.threading, ctx.addresses)
    if not (candidates.subject_numbers or candidates.plus_tokens):
        return candidates
    backend = config.backend
    return prefilter_candidates(candidates, lambda number: backend.get_ticket(number) is not None)


def attachment_policy(config: Config, email: InboundEmail) -> tuple[InboundEmail, tuple[Reason, ...]]:
    """Drop the files the attachment policy refuses; the note goes into the text the ticket shows."""
    files = config.apply_policy(email.attachments)
    if not files.rejected:
        return email, ()
    note = files.note()
    dropped = {r.filename for r in files.rejected if r.inline}
    html = email.html
    if html is not None and dropped:
        for attachment in email.attachments:
            if attachment.content_id and attachment.filename in dropped and attachment not in files.kept:
                html = html.replace(f"cid:{attachment.content_id}", "about:blank")
    email = attrs.evolve(
        email,
        attachments=files.kept,
        text=with_note(email.text, note),
        new_text=with_note(email.new_text, note),
        html=with_html_note(html, note),
    )
    return email, files.reasons()
