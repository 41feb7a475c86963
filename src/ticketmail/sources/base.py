r"""The source contract: fetch raw items, acknowledge them only after the pipeline committed.

A source is a thin adapter: it knows its mailbox protocol and nothing of tickets. The poller drives it::

    with source.session() as session:                       # connect + authenticate + select
        for item in session.fetch(limit=cap):               # raw bytes + stable provenance
            outcome = pipeline.process_email(item.data, provenance=item.provenance, context=ctx)
            if outcome.acknowledge:
                session.acknowledge(item)                   # delete / move / flag: AFTER commit
            else:
                session.release(item, failed=True)          # leave it; count a retry; maybe quarantine

Provenance keys never use sequence numbers: IMAP uses `"<uidvalidity>:<uid>"`, POP3 the UIDL, local
folders the file name / mailbox key.

Why acknowledge is separate from fetch: exactly-once delivery needs the mailbox change (delete, move, flag
`\Seen`) to happen strictly *after* the backend committed the effect and recorded the provenance in its
ledger. A crash in between means a redelivery, which the ledger turns into a `duplicate` outcome that is
acknowledged in turn; a crash before the commit means nothing happened and the item is fetched again.

The optional `skip` callable a source accepts (`SkipCallback`, typically
`pipeline.is_processed`) answers "is this provenance already committed?" *before* the bytes are
downloaded. Sources treat a true answer as "committed but not yet acknowledged" and apply the post-fetch
action to such items without yielding them, so a kept mailbox (`after = "seen"` with `fetch = "all"`, or
POP3 leaving mail on the server) is never re-downloaded and a lost acknowledgement heals itself.

Sessions that can wait for new mail (IMAP) also implement `WaitableSession`; the poller checks with
`isinstance(session, WaitableSession)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import attrs

from ticketmail.model import Provenance

__all__ = [
    "OversizeNotice",
    "RawItem",
    "SkipCallback",
    "Source",
    "SourceSession",
    "WaitableSession",
    "headers_only_message",
]

SkipCallback = Callable[[Provenance], bool]
"""`skip(provenance) -> True` when the item is already committed (e.g. `Pipeline.is_processed`)."""


@attrs.frozen
class RawItem:
    """One message as fetched: its raw bytes and where it came from.

    `truncated` is true when only the headers were fetched because the message exceeded the
    mailbox's size limit (`size` then holds the full size the server reported, and `note` says why).
    `flags` are the server flags/keywords at fetch time (IMAP only; used for retry counting).
    """

    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    provenance: Provenance
    size: int = 0
    truncated: bool = False
    flags: tuple[str, ...] = ()
    note: str | None = None


@attrs.frozen
class OversizeNotice:
    """A message left on the server because it exceeds `max_message_size` (policy `skip`).

    Sessions collect these in their `oversized` list during `SourceSession.fetch()` so the poller
    and health reporting can tell the operator, without the message ever being downloaded.
    """

    provenance: Provenance
    size: int
    limit: int


@runtime_checkable
class SourceSession(Protocol):
    """An open connection to one mailbox."""

    def fetch(self, *, limit: int | None = None) -> Iterator[RawItem]:
        """Yield items not yet acknowledged, oldest first, at most `limit`."""

    def acknowledge(self, item: RawItem) -> None:
        """Apply the mailbox's post-fetch action (delete, move, mark seen). Only after a commit."""

    def release(self, item: RawItem, *, failed: bool) -> None:
        """Leave the item in place; `failed` counts a processing failure against it."""


@runtime_checkable
class WaitableSession(SourceSession, Protocol):
    """A session that can block until the mailbox changes (IMAP IDLE, or a polling fallback)."""

    def wait_for_changes(self, timeout: float) -> bool:
        """Block up to `timeout` seconds; true when new mail may have arrived (fetch again)."""


@runtime_checkable
class Source(Protocol):
    """A mailbox that can be opened for one fetch cycle."""

    name: str

    def session(self) -> AbstractContextManager[SourceSession]:
        """Connect and authenticate; raises `SourceError` naming the stage."""


def headers_only_message(header: bytes, note: str, size: int) -> bytes:
    """A small message: the original header block (MIME structure headers dropped) and `note` as body.

    Used by the `oversize = "headers"` policy: the result parses as a `text/plain` message whose body
    explains what was left out; `X-Ticketmail-Truncated: original-size=N` marks it for rules and UIs.
    """
    lines = header.rstrip(b"\r\n").split(b"\r\n") if b"\r\n" in header else header.rstrip(b"\n").split(b"\n")
    kept: list[bytes] = []
    skipping = False
    for line in lines:
        if not line.strip():  # a blank line would end the header block early; the server's block has none
            continue
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        skipping = name in (b"content-type", b"content-transfer-encoding", b"mime-version")
        if not skipping:
            kept.append(line)
    kept += [
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: 8bit",
        f"X-Ticketmail-Truncated: original-size={size}".encode(),
    ]
    return b"\r\n".join(kept) + b"\r\n\r\n" + note.encode() + b"\r\n"
