"""The source contract: fetch raw items, acknowledge them only after the pipeline committed.

OWNER: the sources work (issue 6). A source is a thin adapter: it knows its mailbox protocol and nothing of
tickets. The poller drives it::

    with source.session() as session:                       # connect + authenticate + select
        for item in session.fetch(limit=cap):               # raw bytes + stable provenance
            outcome = pipeline.process_email(item.data, provenance=item.provenance, context=ctx)
            if outcome.acknowledge:
                session.acknowledge(item)                   # delete / move / flag: AFTER commit
            else:
                session.release(item, failed=True)          # leave it; count a retry; maybe quarantine

Provenance keys never use sequence numbers: IMAP uses ``"<uidvalidity>:<uid>"``, POP3 the UIDL, local
folders the file name / mailbox key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import attrs

from ticketmail.model import Provenance

__all__ = ["RawItem", "Source", "SourceSession"]


@attrs.frozen
class RawItem:
    """One message as fetched: its raw bytes and where it came from.

    ``truncated`` is true when only the headers were fetched because the message exceeded the
    mailbox's size limit (``size`` then holds the full size the server reported).
    """

    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    provenance: Provenance
    size: int = 0
    truncated: bool = False
    flags: tuple[str, ...] = ()


@runtime_checkable
class SourceSession(Protocol):
    """An open connection to one mailbox."""

    def fetch(self, *, limit: int | None = None) -> Iterator[RawItem]:
        """Yield items not yet acknowledged, oldest first, at most ``limit``."""

    def acknowledge(self, item: RawItem) -> None:
        """Apply the mailbox's post-fetch action (delete, move, mark seen). Only after a commit."""

    def release(self, item: RawItem, *, failed: bool) -> None:
        """Leave the item in place; ``failed`` counts a processing failure against it."""


@runtime_checkable
class Source(Protocol):
    """A mailbox that can be opened for one fetch cycle."""

    name: str

    def session(self) -> AbstractContextManager[SourceSession]:
        """Connect and authenticate; raises :class:`~ticketmail.errors.SourceError` naming the stage."""
