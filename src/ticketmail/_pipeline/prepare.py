"""The pure work before a message's transaction, outside any lock.

Argument checks, parsing, duplicate keys, threading candidates and the attachment policy: holding the write
lock during this CPU work would serialize workers for nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


class _Stop(Exception):
    def __init__(self, error: TicketmailError) -> None:
        super().__init__(error.message)
        self.error = error


@contextlib.contextmanager
def _stage(config: Config, key: str, stage: str, log_text: str, *, contain_all: bool = False) -> Iterator[None]:
    """A ticketmail error stops the message as it is; anything else stops it as a `ProcessingError` (logged).

    A `BackendError` propagates (storage is down: retry later). With `contain_all` every exception is
    contained: a failing attachment policy must not cost the message, which is kept, unprocessed, in quarantine.
    """
    try:
        yield
    except Exception as exc:
        if not contain_all and isinstance(exc, BackendError):
            raise
        if not contain_all and isinstance(exc, TicketmailError):
            raise _Stop(exc) from exc
        config.log.exception(log_text, key)
        raise _Stop(unexpected_error(exc, stage)) from exc


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
    """Check the arguments, parse, and compute what the unit of work will look up, outside any transaction."""
    data = _checked(raw, provenance)
    key = ledger_key(provenance)
    message_id: str | None = None
    try:
        with _stage(config, key, "parsing", "parsing %s failed unexpectedly"):
            email = config.parse(data)
        message_id = email.message_id
        with _stage(config, key, "processing", "duplicate keys of %s failed unexpectedly"):
            dup_keys = config.duplicate_keys(email, ctx)
            candidates = _thread_candidates(config, email, ctx)
        log_text = "the attachment policy failed on %s"
        with _stage(config, key, "checking the attachments of", log_text, contain_all=True):
            email, notes = attachment_policy(config, email)
    except _Stop as stop:
        return Unprocessable(data, provenance, key, stop.error, message_id)
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
