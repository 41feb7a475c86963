"""Replies to the mail server: one per copy from its pipeline outcome, and the sender check behind `verified`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from ticketmail.errors import InputError, LimitExceededError, PolicyRejectedError
from ticketmail.pipeline import Outcome

__all__ = ["Delivery", "Reply", "clean", "header_value", "one_reply", "reply_for", "sender_verified"]


@attrs.frozen
class Reply:
    """One SMTP/LMTP reply: `code` (`250`), enhanced `status` (`2.0.0`, RFC 3463) and `text`."""

    code: int
    status: str
    text: str

    @property
    def temporary(self) -> bool:
        """A 4xx reply: the client keeps the message and retries."""
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        """A 5xx reply: the client bounces the message."""
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


@attrs.frozen
class Delivery:
    """What happened to one recipient's copy: the `reply` sent and the pipeline `outcome` (if it ran)."""

    recipient: str
    reply: Reply
    outcome: Outcome | None = None
    mailbox: str | None = None


def clean(text: str, limit: int = 200) -> str:
    """Reply text: printable ASCII on one line, bounded (it ends up in bounce messages and logs)."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text.replace("\r", " ").replace("\n", " "))
    return out[:limit].strip() or "-"


def reply_for(outcome: Outcome, *, policy_refusal: str = "reject") -> Reply:
    """The reply for one copy's pipeline outcome (see the module table)."""
    ticket = f" ticket {outcome.ticket}" if outcome.ticket else ""
    if outcome.action in ("created", "appended"):
        return Reply(250, "2.0.0", f"Ok: {outcome.action}{ticket}")
    if outcome.action == "ignored":
        return Reply(250, "2.0.0", "Ok: accepted")
    if outcome.action == "duplicate":
        first = outcome.reasons[0].value if outcome.already_processed and outcome.reasons else None
        if first == "rejected" and policy_refusal == "reject":
            return Reply(550, "5.7.1", "Refused by policy (already decided)")
        return Reply(250, "2.0.0", f"Ok: already delivered{ticket}")
    if outcome.action == "rejected":
        if any(reason.code == "identity.missing" for reason in outcome.reasons):
            return Reply(554, "5.6.0", "Message has no usable sender")
        if policy_refusal == "accept":
            return Reply(250, "2.0.0", "Ok: accepted")
        why = outcome.error.message if outcome.error else "refused by a rule"
        return Reply(550, "5.7.1", clean(f"Refused by policy: {why}"))
    # failed: quarantined with its bytes; a bounce only for what no retry can fix.
    error = outcome.error
    if isinstance(error, LimitExceededError):
        return Reply(552, "5.3.4", clean(f"Message exceeds a limit: {error.message}"))
    if isinstance(error, InputError):
        return Reply(554, "5.6.0", clean(f"Message cannot be used: {error.message}"))
    if isinstance(error, PolicyRejectedError):
        return Reply(550, "5.7.1", clean(f"Refused by policy: {error.message}"))
    return Reply(451, "4.3.0", "Processing failed, try again later")


def _header_block(raw: bytes, limit: int = 256 * 1024) -> list[str]:
    """The unfolded header fields of `raw` (bounded), decoded leniently."""
    end = raw.find(b"\r\n\r\n", 0, limit)
    if end < 0:
        end = raw.find(b"\n\n", 0, limit)
    head = raw[: end if end >= 0 else limit].decode("utf-8", "replace")
    fields: list[str] = []
    for line in head.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += " " + line.strip()
        elif line:
            fields.append(line)
    return fields


def sender_verified(raw: bytes, trusted_authserv_ids: Iterable[str]) -> bool:
    """Whether a trusted `Authentication-Results` header (RFC 8601) says `spf`, `dkim` or `dmarc` passed.

    Only headers whose authserv-id is in `trusted_authserv_ids` count (your own servers add them and
    remove look-alikes that came from outside, as RFC 8601 section 5 requires of them).
    """
    trusted = {t.lower() for t in trusted_authserv_ids}
    if not trusted:
        return False
    for field in _header_block(raw):
        name, sep, value = field.partition(":")
        if not sep or name.strip().lower() != "authentication-results":
            continue
        parts = [p.strip() for p in value.split(";")]
        authserv = parts[0].split()[0].lower() if parts and parts[0].split() else ""
        if authserv not in trusted:
            continue
        for part in parts[1:]:
            method, eq, result = part.partition("=")
            words = result.split()
            if eq and method.strip().lower() in ("spf", "dkim", "dmarc") and words and words[0].lower() == "pass":
                return True
    return False


def one_reply(replies: Sequence[Reply]) -> Reply:
    """The one SMTP reply for several copies: temporary wins (a retry is harmless), then success."""
    for reply in replies:
        if reply.temporary:
            return reply
    for reply in replies:
        if reply.code < 300:
            return reply
    return replies[0]


def header_value(text: str) -> bytes:
    return "".join(c for c in text if c >= " " and c != "\x7f").encode("utf-8", "replace")
