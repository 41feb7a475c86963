"""Failed recipients in the human-readable text of a non-standard bounce: a bounded, line-based scan.

Only the first `MAX_LINES` lines before the returned message are read, each cut to `MAX_LINE`
characters; the patterns are linear, so the cost is O(size of the diagnostic section).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs

from ticketmail.decision import BounceRecipient
from ticketmail.rules._dsn_fields import ADDRESS, MAX_CHARS, MAX_LINE, MAX_LINES, SMTP_CODE, status_code
from ticketmail.rules._text import normalize_address

__all__ = ["diagnostic_lines", "scan_bounce_text"]

# Lines that start the returned copy of the original message (end of the diagnostic section).
_RETURNED_MARKERS = (
    "--- below this line is a copy of the message",
    "--- enclosed are the original headers",
    "--- original message follows",
    "original message follows",
    "------ this is a copy of the message",
    "----- original message",
    "------ original message",
    "----- unsent message follows",
    "----- returned message",
    "----- the following is a copy",
    "original message as received",
    "-----original message-----",
    "a copy of the original message",
    "your message reads (in part)",
    "content-type: message/rfc822",
    "content-type: text/rfc822-headers",
)
_HEADER_START = re.compile(r"^>?(?:received|return-path):", re.IGNORECASE)

# Phrases that introduce the list of failed recipients; addresses on the next lines are collected.
_TRIGGERS = (
    "following address",
    "following recipient",
    "did not reach the following",
    "could not be delivered to",
    "couldn't be delivered to",
    "wasn't delivered to",
    "was not delivered to",
    "delivery has failed to these recipients",
    "delivery to the following recipient",
    "unable to deliver message to",
    "undeliverable to",
    "not yet been delivered is",
    "could not deliver",
    "permanent fatal errors",
    "recipients did not receive",
    "address(es) failed",
    "addresses failed",
    "cannot be reached",
    "following destination",
    "delivery failed",
    "unable to deliver",
    "could not be delivered",
)
# Phrases on the same line as an address that make that address a failed recipient.
_FAILURE_WORDS = (
    "user unknown",
    "unknown user",
    "no such user",
    "no such mailbox",
    "does not exist",
    "doesn't exist",
    "not found",
    "unknown recipient",
    "recipient unknown",
    "undeliverable",
    "could not be delivered",
    "couldn't be delivered",
    "wasn't delivered",
    "not delivered",
    "delivery failed",
    "mailbox unavailable",
    "mailbox full",
    "is full",
    "quota",
    "unable to deliver",
    "not known",
    "unknown",
    "originally addressed to",
    "over quota",
    "quota exceeded",
    "rejected",
    "failed",
    "invalid",
    "not accepting",
    "did not exactly match",
    "no mailbox",
    "account",
    "... user",
)
_TEMPORARY_WORDS = (
    "has not yet been delivered",
    "not yet been delivered",
    "delivery attempts will continue",
    "will continue to try",
    "will keep trying",
    "will be retried",
    "this is only a warning",
    "this is a warning",
    "delivery has been delayed",
    "has been delayed",
    "message delayed",
    "delivery delayed",
)
_PERMANENT_WORDS = (
    "permanent error",
    "permanent failure",
    "failed permanently",
    "given up",
    "gave up",
    "not going to try again",
    "permanently",
    "fatal error",
)
_REPORTER_LOCALS = frozenset(
    {"mailer-daemon", "mailer_daemon", "maildaemon", "mail-daemon", "mailerdaemon", "mdaemon", "postmaster", "root"}
)


def diagnostic_lines(text: str) -> list[str]:
    """The lines of a bounce text before the returned message, bounded."""
    out: list[str] = []
    for raw in text[:MAX_CHARS].splitlines():
        if len(out) >= MAX_LINES:
            break
        line = raw[:MAX_LINE]
        lowered = line.strip().lower()
        if out and (lowered.startswith(_RETURNED_MARKERS) or _HEADER_START.match(line)):
            break
        out.append(line)
    return out


def _is_reporter(address: str, own: Iterable[str]) -> bool:
    local = address.rpartition("@")[0].lower()
    return local in _REPORTER_LOCALS or normalize_address(address) in own


def scan_bounce_text(text: str, *, exclude: Iterable[str] = ()) -> tuple[BounceRecipient, ...]:
    """Find failed recipients in the human-readable text of a non-standard bounce.

    An address is taken when it starts a line (`<user@host>:` as qmail and Yahoo write it, or an
    indented address alone as Exim, Gmail and Exchange do), when it follows `SMTP=` (old Exchange X.400
    form), when it appears within the few lines after a phrase that introduces failed recipients
    ("did not reach the following recipient(s):", "The following address(es) failed:"), or when its line
    also carries a failure phrase ("User unknown", "does not exist"). Reporter addresses (postmaster,
    MAILER-DAEMON) and `exclude` (the bounce's own sender and recipients) are never taken.
    """
    return _Scan(diagnostic_lines(text), exclude).run()


_TRIGGER_WINDOW = 6
"""Lines after a trigger phrase (not counting blank ones) whose addresses are failed recipients."""

_LINE_STARTS = ("smtp=", "rfc822;", "recipient:", "error-for:", "rcpt to:")
"""Text before an address that still counts as the address starting its line."""

_QUOTED_HEADERS = ("to:", "from:", "subject:", "sent:", "cc:", "reply-to:")
"""An address after these is a quoted header of the returned message, not a failed recipient."""


class _Scan:
    """The state of one scan: the recipients found so far, by normalized address, in text order."""

    def __init__(self, lines: list[str], exclude: Iterable[str]) -> None:
        self.lines = lines
        self.blob = "\n".join(lines).lower()
        self.permanent = any(w in self.blob for w in _PERMANENT_WORDS)
        self.temporary = any(w in self.blob for w in _TEMPORARY_WORDS) and not self.permanent
        self.excluded = {normalize_address(a) for a in exclude}
        self.found: dict[str, BounceRecipient] = {}
        self.last_key: str | None = None

    def run(self) -> tuple[BounceRecipient, ...]:
        window = 0
        for index, line in enumerate(self.lines):
            lowered = line.lower()
            if any(t in lowered for t in _TRIGGERS):
                window = _TRIGGER_WINDOW
            elif line.strip() and window:
                window -= 1
            for match in ADDRESS.finditer(line):
                self._address(match, index, lowered, window)
        if len(self.found) == 1:
            # One recipient: a status code anywhere in the diagnostic text is about it (Gmail puts it paragraphs below).
            ((key, only),) = self.found.items()
            status = status_code(self.blob) if only.status is None else None
            if status is not None:
                self.found[key] = attrs.evolve(only, status=status)
        return tuple(self.found.values())

    def _address(self, match: re.Match[str], index: int, lowered: str, window: int) -> None:
        """One address on line `index`: a new failed recipient, a later mention of one, or neither."""
        found = self.found
        line = self.lines[index]
        address = match.group(0).rstrip(".").lstrip("'`")
        if address[:5].lower() == "smtp=":  # Exchange X.400 form: dda:SMTP=user@host
            address = address[5:]
        key = normalize_address(address)
        if "expanded from" in lowered and self.last_key is not None and self.last_key in found:
            # Sendmail: "user@final-host\n    (expanded from: user@alias)": report the address we wrote to.
            found[key] = attrs.evolve(found.pop(self.last_key), recipient=address)
            self.last_key = key
        elif key in found:
            # A later mention (Exchange repeats the address under "Diagnostic information") may carry the code.
            if found[key].status is None:
                detail = _detail(self.lines, index, line)
                status = status_code(detail)
                if status is not None:
                    found[key] = attrs.evolve(found[key], status=status, diagnostic=detail)
        elif self._is_failed_recipient(address, key, line[: match.start()], lowered, window):
            found[key] = self._recipient(address, index)
            self.last_key = key

    def _is_failed_recipient(self, address: str, key: str, before: str, lowered: str, window: int) -> bool:
        """Whether a first mention names a failed recipient (see `scan_bounce_text()`)."""
        if key in self.excluded or _is_reporter(address, self.excluded):
            return False
        before = before.strip().lstrip("<\"'").strip().lower()
        if before.startswith(_QUOTED_HEADERS):
            return False
        starts_line = before == "" or before.endswith(_LINE_STARTS)
        return starts_line or bool(window) or any(w in lowered for w in _FAILURE_WORDS)

    def _recipient(self, address: str, index: int) -> BounceRecipient:
        detail = _detail(self.lines, index, self.lines[index])
        status = status_code(detail)
        if status is None:
            smtp = SMTP_CODE.search(detail or "")
            status = f"{smtp.group(1)}.0.0" if smtp else None
        temporary = self.temporary or ((status or "").startswith("4") and not self.permanent)
        return BounceRecipient(
            recipient=address,
            status=status,
            action="delayed" if temporary else "failed",
            diagnostic=detail,
            permanent=not temporary,
        )


def _detail(lines: list[str], index: int, line: str) -> str | None:
    """The diagnostic text for the address on `lines[index]`: the rest of its line and the lines that follow.

    Following lines are taken up to a blank line, a line that starts another address, or four lines.
    """
    parts = []
    rest = ADDRESS.sub("", line).strip(" \t<>:;,.()[]\"'")
    if len(rest) >= 8:
        parts.append(rest)
    for follow in lines[index + 1 : index + 5]:
        text = follow.strip()
        if not text or ADDRESS.match(text.lstrip("<\"' *")):
            break
        parts.append(text)
    detail = " ".join(parts)
    return detail[:300] or None
