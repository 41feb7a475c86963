"""The pipeline machine's model of what the backend should hold, and its checks that show the values involved."""

from __future__ import annotations

from typing import Literal, TypeVar

import attrs

from ticketmail.model import Provenance
from ticketmail.pipeline import Outcome
from ticketmail.testing._pipeline_support import DOMAIN, build_mail

__all__ = ["Conversation", "Pending", "Sent", "expect", "mail", "present", "same"]

_T = TypeVar("_T")


def present(value: _T | None, what: str) -> _T:
    """`value`, or an `AssertionError` saying `what` is missing."""
    if value is None:
        raise AssertionError(f"{what} is missing")
    return value


def expect(condition: object, message: str) -> None:
    """Like `assert`, but not stripped by `python -O` (this suite must never pass silently)."""
    if not condition:
        raise AssertionError(message)


def same(actual: object, expected: object, what: str) -> None:
    """`actual == expected`, or an `AssertionError` naming `what` with both values."""
    if actual != expected:
        raise AssertionError(f"{what}: got {actual!r}, expected {expected!r}")


@attrs.define
class Conversation:
    """One conversation of the model: its ticket once opened, and its committed messages in order."""

    index: int
    requester: str
    subject: str
    ticket: str | None = None
    message_ids: list[str] = attrs.field(factory=list)  # committed, in order
    entries: list[int] = attrs.field(factory=list)
    closed: bool = False
    merged_into: Conversation | None = None

    def survivor(self) -> Conversation:
        """The conversation whose ticket receives this one's replies (itself unless merged)."""
        current = self
        while current.merged_into is not None:
            current = current.merged_into
        return current


@attrs.define
class Sent:
    """A message the model knows was committed, for duplicates and redeliveries."""

    raw: bytes
    provenance: Provenance
    outcome: Outcome


@attrs.define
class Pending:
    """A message on its way (or failed by an injected fault, to be retried)."""

    raw: bytes
    provenance: Provenance
    conversation: Conversation
    kind: Literal["new", "reply", "auto"]
    message_id: str


def mail(
    *,
    sender: str,
    subject: str,
    message_id: str,
    to: str = f"support@{DOMAIN}",
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    auto: bool = False,
) -> bytes:
    return build_mail(
        sender=sender,
        subject=subject,
        message_id=message_id,
        to=to,
        in_reply_to=in_reply_to,
        references=references or None,
        headers={"Auto-Submitted": "auto-replied"} if auto else None,
    )
