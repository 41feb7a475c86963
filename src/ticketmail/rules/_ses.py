"""Amazon SES notifications as SNS e-mails them: bounce, complaint and delivery notices in JSON."""

from __future__ import annotations

import json
from typing import Any

from ticketmail.decision import BounceRecipient
from ticketmail.rules._dsn_fields import (
    ACTION_ALIASES,
    MAX_CHARS,
    MAX_LINE,
    MAX_LINES,
    clean_address,
    status_code,
    typed_value,
)

__all__ = ["read_ses_notification"]

_RECIPIENT_LISTS = {
    "bounce": ("bounce", "bouncedRecipients", "failed"),
    "delivery": ("delivery", "recipients", "delivered"),
    "complaint": ("complaint", "complainedRecipients", "failed"),
}
"""Notification type -> (its section, the section's recipient list, the recipients' action)."""


def read_ses_notification(text: str) -> tuple[str, tuple[BounceRecipient, ...], str | None] | None:
    """Read an Amazon SES notification as SNS e-mails it: `(type, recipients, original Message-ID)`.

    The body is the notification's JSON (`notificationType` or `eventType`: `Bounce`, `Complaint`,
    `Delivery`), followed by SNS's unsubscribe footer. `type` is lower case; `None` when the text
    holds no such JSON. Only the first `MAX_CHARS` characters are read.
    """
    data = _notification(text)
    if data is None:
        return None
    kind = data.get("notificationType") or data.get("eventType")
    if not isinstance(kind, str):
        return None
    kind = kind.strip().lower()
    return kind, _recipients(kind, data), _original_message_id(data)


def _json_object(text: str, *, whole: bool = False) -> dict[str, Any] | None:
    """The JSON object at the start of `text` (`whole`: `text` must be only that object)."""
    try:
        data = json.loads(text) if whole else json.JSONDecoder().raw_decode(text)[0]
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _notification(text: str) -> dict[str, Any] | None:
    """The notification object: the JSON in the text, or the one inside a raw SNS envelope's `Message`."""
    start = text.find("{", 0, 4096)
    if start < 0:
        return None
    data = _json_object(text[start:MAX_CHARS])
    if data is not None and isinstance(data.get("Message"), str):  # the SNS envelope, when it sends JSON
        return _json_object(data["Message"][:MAX_CHARS], whole=True)
    return data


def _recipients(kind: str, data: dict[str, Any]) -> tuple[BounceRecipient, ...]:
    where = _RECIPIENT_LISTS.get(kind)
    section = data.get(where[0]) if where else None
    if where is None or not isinstance(section, dict):
        return ()
    items = section.get(where[1])
    if not isinstance(items, list):
        return ()
    permanent = kind == "bounce" and str(section.get("bounceType", "")).lower() != "transient"
    found = (_recipient(item, where[2], permanent) for item in items[:MAX_LINES])
    return tuple(recipient for recipient in found if recipient is not None)


def _recipient(item: Any, action: str, permanent: bool) -> BounceRecipient | None:
    """One recipient entry: an object with `emailAddress` (and `status`, `action`, `diagnosticCode`) or a string."""
    entry = item if isinstance(item, dict) else {}
    address = entry.get("emailAddress") if isinstance(item, dict) else item
    if not isinstance(address, str) or "@" not in address:
        return None
    status = status_code(str(entry.get("status", ""))) if entry else None
    diagnostic = entry.get("diagnosticCode")
    if isinstance(entry.get("action"), str):
        action = ACTION_ALIASES.get(entry["action"].lower(), entry["action"].lower())
    return BounceRecipient(
        recipient=clean_address(address[:MAX_LINE]),
        status=status,
        action=action,
        diagnostic=typed_value(diagnostic)[:300] if isinstance(diagnostic, str) else None,
        permanent=permanent and action == "failed" and not (status or "").startswith("4"),
    )


def _original_message_id(data: dict[str, Any]) -> str | None:
    mail = data.get("mail")
    common = mail.get("commonHeaders") if isinstance(mail, dict) else None
    value = common.get("messageId") if isinstance(common, dict) else None
    if isinstance(value, str) and value.strip():
        return value.strip()[:MAX_LINE].strip("<>") or None
    return None
