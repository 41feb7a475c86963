"""Decisions: what the rules layer concluded about a message, and why.

Produced by `ticketmail.rules.evaluate()` and `ticketmail.rules.classify_automatic()`; read by the
pipeline and the CLI (`ticketmail parse` prints `Automatic` as its `automatic` member and a
`Decision` as `decision`). Every decision carries its reasons so an operator can see why a message
did or did not become a ticket; the reason codes are listed in docs/rules.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

__all__ = ["Automatic", "BounceRecipient", "Decision", "Reason"]

DecisionAction = Literal["accept", "ignore", "reject"]
AutomaticKind = Literal[
    "auto_reply", "out_of_office", "bounce", "delivery_report", "feedback_report", "mailing_list", "bulk"
]


@attrs.frozen
class Reason:
    """One thing that fired: a filter, a header signal, a rule, a threading route.

    Attributes:
        code: Stable dotted code, e.g. `filter.ignore`, `auto.auto_submitted`, `rule.match`,
            `thread.token`, `loop.own_address`, `duplicate.message_id`.
        message: A sentence for an operator.
        value: The matched value (header value, address, keyword), when there is one.
        source: The name of the filter or rule that fired, when there is one.
    """

    code: str
    message: str
    value: str | None = None
    source: str | None = None


@attrs.frozen
class BounceRecipient:
    """Per-recipient delivery status parsed from a DSN (RFC 3464) or a non-standard bounce.

    Attributes:
        recipient: The address the message was sent to (`Original-Recipient` when given, else
            `Final-Recipient`; for non-standard bounces the address found in the text).
        status: The RFC 3463 status code (`5.1.1`), when known.
        action: `failed`, `delayed`, `delivered`, `relayed` or `expanded` (RFC 3464 section 2.3.3).
        diagnostic: The remote server's answer (`Diagnostic-Code` or the text near the address).
        permanent: True for a permanent failure; false for a delay or a `4.x.x` (transient) status.
    """

    recipient: str
    status: str | None = None
    action: str | None = None
    diagnostic: str | None = None
    permanent: bool = True


@attrs.frozen
class Automatic:
    """Why a message looks machine-generated, and what kind of automatic mail it is.

    Attributes:
        kind: `auto_reply`, `out_of_office` (reported apart: it must not reopen or change a ticket),
            `bounce` (permanent or temporary delivery failure), `delivery_report` (delayed, delivered,
            relayed, expanded; read receipts), `feedback_report` (ARF abuse/complaint reports),
            `mailing_list` or `bulk`.
        reasons: Every signal found (codes `auto.<signal>`), in header order.
        recipients: For `bounce` and `delivery_report`: the per-recipient status.
        original_message_id: For reports: the Message-ID of the message the report is about, when found.
    """

    kind: AutomaticKind
    reasons: tuple[Reason, ...] = ()
    recipients: tuple[BounceRecipient, ...] = ()
    original_message_id: str | None = None


@attrs.frozen
class Decision:
    """The verdict on one message.

    Attributes:
        action: `accept` (may become a ticket or an entry), `ignore` (dropped silently, recorded),
            `reject` (refused by policy).
        attributes: What rules set: `department`, `team`, `category`, `priority`, `topic_id`,
            `assignee`, `tags` (tuple), `custom.<name>`.
        autorespond: Whether the application may send an auto-response for it.
        may_open_ticket: False for automatic mail that may only be appended to an existing ticket.
        automatic: The automatic-mail classification, or `None` for mail written by a person.
        reasons: Everything that fired, in evaluation order.
    """

    action: DecisionAction = "accept"
    attributes: Mapping[str, object] = attrs.field(factory=dict, hash=False)
    autorespond: bool = True
    may_open_ticket: bool = True
    automatic: Automatic | None = None
    reasons: tuple[Reason, ...] = ()
