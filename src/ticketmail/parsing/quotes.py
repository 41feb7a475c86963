"""Find the text a person actually wrote in a reply: quoted history and signature removed.

The order follows what helpdesks learned the hard way (osTicket, Zammad, talon):

1. A configured separator line ("-- reply above this line --", osTicket's `reply_separator`): everything
   from the line that contains it is history. The attribution line a client puts right above the quote
   ("On ..., X wrote:") is removed with it.
2. Attribution lines ("On <date>, <name> wrote:" and its equivalents), from per-language tables
   (`ATTRIBUTIONS`): English, German, French, Spanish, Italian, Portuguese, Dutch, Swedish, Norwegian,
   Danish, Finnish, Polish, Czech, Slovak, Hungarian, Turkish, Russian, Ukrainian, Japanese, Chinese and
   Korean, with ASCII or full-width colons, also when a client wrapped them over two or three lines
   (`Le 4 janv. 2016 19:03, "Name"` / `<address>` / `a écrit :`), without the colon, or framed in
   dashes (Zoho). A bare `<name> wrote:` counts only right above a `>` quote. An attribution followed
   by a `>` quote and then more unquoted text introduces an inline or bottom-posted reply: it is not cut.
3. "-----Original Message-----" lines and their translations; quoted header blocks (Outlook, Exchange,
   Notes, GMX/Web.de, Foxmail, Naver: a From line with at least two of Sent/Date, To, Subject, Cc within a
   few lines, in the languages of `HEADER_LABELS`), with the "______" rule Outlook draws above them.
4. "Sent from my iPhone" style lines (`MOBILE_LINES`): mobile clients put the (unquoted) history
   below them.
5. A trailing block of `>`-quoted lines (interleaved answers between quotes are kept).
6. A signature after the RFC 3676 section 4.3 delimiter "-- " (also "--", which many clients trim).

Forwarded mail keeps its forwarded content: a forward marker ("---------- Forwarded message ---------",
"Begin forwarded message:", their translations) above the first history marker, or a forward prefix on
the subject (`Fwd:`, `WG:`, `TR:`, ...; pass `subject`), makes the whole text the new text.

When cutting would leave nothing (a forward whose header block starts the message), the full text is
returned: a helpdesk must never show an empty message for a non-empty mail.

Cost: every step is a pass over the lines with plain string tests and short anchored patterns on lines
of bounded length; the look-ahead after an attribution is precomputed in one backward pass, so the work is
linear in the input. Only the first `MAX_SCAN_CHARS` characters and `MAX_SCAN_LINES` lines are searched
for history markers (a text of many short lines costs per line, not per character); beyond that a
signature delimiter among those lines and a trailing `>` block of at most `MAX_SCAN_LINES` lines are still
removed, the rest is kept.
"""

from __future__ import annotations

from ticketmail.parsing._quote_lines import (
    MAX_ATTRIBUTION,
    _fold,
    _is_attribution,
    _is_forward_marker,
    _is_header_block,
    _is_mobile_line,
    _is_original_marker,
    _is_rule,
    _labelled_lines,
    is_forward_subject,
)
from ticketmail.parsing._quote_tables import (
    _BARE_WROTE,
    _CLOCK,
    _DIGIT,
    _MIDDLE_WORDS,
    _REPLY_SUBJECT,
    _RULE_CHARS,
    _STARTS,
    _TIME,
    _YEAR,
    ATTRIBUTIONS,
    FORWARD_MARKERS,
    HEADER_LABELS,
    MOBILE_LINES,
    ORIGINAL_MARKERS,
)

__all__ = [
    "ATTRIBUTIONS",
    "FORWARD_MARKERS",
    "HEADER_LABELS",
    "MAX_SCAN_CHARS",
    "MAX_SCAN_LINES",
    "MOBILE_LINES",
    "ORIGINAL_MARKERS",
    "extract_new_text",
    "extract_with_verdict",
    "is_forward_subject",
]

MAX_SCAN_CHARS = 512 * 1024
"""Only this many characters at the start of a text are searched for history markers."""

MAX_SCAN_LINES = 1000
"""Only this many lines at the start of a text are searched for history markers."""

_MAX_ATTRIBUTION = MAX_ATTRIBUTION
_ATTRIBUTION_LINES = 3  # an attribution wrapped by a client spans at most this many lines
_TOP_WORDS = 8  # words above an attribution that make a reply top-posted


def _look_ahead(lines: list[str]) -> tuple[list[int], list[int]]:
    """For each index: the next non-blank unquoted line and the next `>`-quoted line at or after it.

    One backward pass, so that the look-ahead after each candidate attribution costs O(1).
    """
    count = len(lines)
    next_plain = [count] * (count + 1)
    next_quote = [count] * (count + 1)
    for index in range(count - 1, -1, -1):
        stripped = lines[index].strip()
        next_plain[index] = next_plain[index + 1] if not stripped or stripped[0] == ">" else index
        next_quote[index] = index if stripped[:1] == ">" else next_quote[index + 1]
    return next_plain, next_quote


def _is_quoted(line: str) -> bool:
    return line.lstrip()[:1] == ">"


def _is_wrapped(quoted: str, line: str) -> bool:
    """Whether `line` continues the sentence of the `>` line above it (a client re-wrapped the quote)."""
    above = quoted.lstrip().lstrip("> ").rstrip()
    text = line.strip()
    return _is_quoted(quoted) and bool(above) and above[-1] not in "?:" and text[:1].islower()


def _quote_then_answer(lines: list[str], start: int, ahead: tuple[list[int], list[int]], top: int) -> bool:
    """True when lines from `start` are a `>` quote followed by more unquoted text (inline/bottom reply).

    `top` counts the words written above the attribution. When the writer top-posted (`top` is
    substantial), unquoted text after the quote is a footer or a disclaimer a server appended, unless
    answers interleave with more quotes (a quoted line that lost its `>` does not count as an answer).
    """
    next_plain, next_quote = ahead
    count = len(lines)
    if start >= count or next_quote[start] >= next_plain[start]:
        return False  # no quote right below: the history is unquoted
    index = next_plain[start]
    if index >= count:
        return False
    stripped = lines[index].strip()
    if (
        lines[index].rstrip() in ("--", "-- ")
        or _is_mobile_line(stripped)
        or _is_original_marker(stripped)
        or _is_attribution(stripped)
    ):
        return False
    if top < _TOP_WORDS:
        return True  # bottom-posted or inline reply
    for _ in range(50):  # bounded: a few re-wrapped quote lines, then the verdict
        following = next_quote[index]
        if following >= count:
            return False  # only a trailing footer after the quote
        wrapped = following == index + 1 and index > 0 and _is_wrapped(lines[index - 1], lines[index])
        if not wrapped:
            return True
        index = next_plain[following]
        if index >= count:
            return False
    return True


def _followed_by_quote(start: int, ahead: tuple[list[int], list[int]]) -> bool:
    """True when the next non-blank line from `start` is `>`-quoted."""
    next_plain, next_quote = ahead
    return start < len(next_plain) - 1 and next_quote[start] < next_plain[start]


def _attribution_at(lines: list[str], index: int, stripped: str) -> int:
    """How many lines (1-3) an attribution starting at `index` spans, or 0."""
    if (stripped[-1] in ":\uff1a-*" or stripped.lower().endswith("wrote")) and _is_attribution(stripped):
        return 1
    joined = stripped
    for extra in range(1, _ATTRIBUTION_LINES):
        if index + extra >= len(lines):
            break
        follow = lines[index + extra].strip()
        if not follow or (follow[0] == ">" and follow[:2] not in (">:", ">\uff1a")):
            break
        if len(joined) + len(follow) > _MAX_ATTRIBUTION:
            break
        joined = f"{joined}{follow}" if follow[0] == ">" else f"{joined} {follow}"
        if follow[-1] in ":\uff1a" and _is_attribution(joined):
            lowered = stripped.lower()
            # The first line must look like the start of an attribution, not a sentence of the reply.
            if (
                lowered.startswith(_STARTS)
                or lowered[:1].isdigit()
                or "@" in stripped
                or stripped[:1] in "\"'<"
                or any(middle in lowered for middle in _MIDDLE_WORDS)
                or _DIGIT.search(stripped) is not None
            ):
                return extra + 1
            break
    return 0


def _is_bare_attribution(
    lines: list[str], index: int, stripped: str, ahead: tuple[list[int], list[int]], top: int
) -> bool:
    """A short "Name wrote:" line (no date, no address) right above a `>` quote that ends the message."""
    return (
        stripped[-1] in ":\uff1a"
        and len(stripped) <= 80
        and (_BARE_WROTE.match(_fold(stripped.lower())) is not None or _is_attribution(stripped, loose=True))
        and _followed_by_quote(index + 1, ahead)
        and not _quote_then_answer(lines, index + 1, ahead, top)
    )


def _cut_index(lines: list[str]) -> tuple[int | None, bool]:
    """Index of the first line of quoted history (or None), and whether forwarded content starts there.

    Cheap tests on the first and last character and on the length run first, so that ordinary lines cost
    almost nothing.
    """
    ahead = _look_ahead(lines)
    header_kinds: dict[int, str | None] = {}
    top = 0
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped[0] == ">":
            continue
        if len(stripped) <= 120 and stripped[0] in "-_=*~<Bb" and _is_forward_marker(stripped):
            return index, True
        span = _attribution_at(lines, index, stripped) if len(stripped) <= _MAX_ATTRIBUTION else 0
        if span and not _quote_then_answer(lines, index + span, ahead, top):
            return index, False
        if not span and _is_bare_attribution(lines, index, stripped, ahead, top):
            return index, False  # "Bob Smith wrote:" right above a quote
        if len(stripped) < 90 and _is_mobile_line(stripped):
            return index, False  # "Sent from my iPhone": mobile clients put the unquoted history below it
        if len(stripped) < 80 and _is_original_marker(stripped):
            return index, False
        if stripped[0] == "_" and len(stripped) >= 20 and set(stripped) == {"_"} and _labelled_lines(lines, index + 1):
            return index, False  # Outlook's rule above a header block in a language without a table
        if (":" in stripped or "\uff1a" in stripped) and _is_header_block(lines, index, header_kinds):
            return _header_block_start(lines, index), False
        top += stripped.count(" ") + 1
    return None, False


def _header_block_start(lines: list[str], index: int) -> int:
    """Where the history of a quoted header block at `index` starts: the rule or marker line above it."""
    if index > 0 and _is_rule(lines[index - 1]):
        return index - 1
    if index > 1 and not lines[index - 1].strip() and _is_rule(lines[index - 2]):
        return index - 2
    if index > 0 and _is_original_marker(lines[index - 1].strip()):
        return index - 1
    return index


def _strip_trailing_quote(lines: list[str]) -> list[str]:
    """Remove a trailing `>` block, and the attribution right above it in a language without a table.

    That attribution is a line ending with a colon that names an address (`<a@b>`) or a time
    (`10:00`); a Gmail line wrapped inside the address (`... Name <` / `a@b>:`) goes whole.
    """
    end = len(lines)
    while end and (lines[end - 1].lstrip().startswith(">") or not lines[end - 1].strip()):
        end -= 1
    if end == len(lines) or not end:
        return lines[:end]
    last = _fold(lines[end - 1].strip())
    named = ("@" in last and ">" in last) or _CLOCK.search(last) is not None
    named = named or (_TIME.search(last) is not None and _YEAR.search(last) is not None)
    if last.endswith(":") and len(last) <= _MAX_ATTRIBUTION and named:
        if "@" in last and "<" not in last and end > 1 and lines[end - 2].rstrip().endswith("<"):
            end -= 1
        end -= 1
    return lines[:end]


def _strip_signature(lines: list[str]) -> list[str]:
    index = _signature_line(lines)
    if index is not None:
        return lines[:index]
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    if end and _is_mobile_line(lines[end - 1].strip()):
        return lines[: end - 1]
    return lines


def _signature_line(lines: list[str]) -> int | None:
    """Index of the first signature delimiter line ("-- ", "--"), or `None`."""
    for index, line in enumerate(lines):
        if (line in ("-- ", "--", "\u2014 ") or line.rstrip() == "-- ") and (index > 0 or len(lines) > 1):
            return index
    return None


def _trailing_quote_start(text: str) -> int:
    """Offset where a trailing block of `>`-quoted and blank lines begins (scanning back from the end).

    At most `MAX_SCAN_LINES` lines are read back; a longer block is cut where the scan stopped.
    """
    end = len(text)
    for _ in range(MAX_SCAN_LINES):
        if end <= 0:
            return 0
        start = text.rfind("\n", 0, end - 1) + 1 if end > 1 else 0
        stripped = text[start:end].strip()
        if stripped and not stripped.startswith(">"):
            return end
        if start == 0:
            return 0
        end = start
    return end


def _clean_result(lines: list[str], original: str) -> str:
    lines = _strip_trailing_quote(lines)
    lines = _strip_signature(lines)
    while lines and (not lines[-1].strip() or set(lines[-1].strip()) <= _RULE_CHARS):
        lines = lines[:-1]  # the "====" or "______" a client drew above the history
    result = "\n".join(lines).strip().rstrip()
    if not result.strip():
        return original.strip("\n").rstrip()
    return result


def extract_new_text(text: str, separator: str | None = None, *, subject: str = "") -> str:
    """The new text of a reply (see the module docstring); `text` itself when nothing would remain.

    Args:
        text: The plain text of the message.
        separator: A configured "reply above this line" separator, if any.
        subject: The message's subject: a forward prefix (`Fwd:`, `WG:`, ...) keeps the quoted content.
    """
    return extract_with_verdict(text, separator, subject=subject)[0]


def extract_with_verdict(text: str, separator: str | None = None, *, subject: str = "") -> tuple[str, bool]:
    """`extract_new_text`, and whether a history marker in the text decided it.

    The markers: a separator, an attribution, a header block, an "Original Message" line, a mobile
    signature or a forward marker; not only the trailing `>` block and signature rules.
    """
    if not text:
        return "", False
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    head = text if len(text) <= MAX_SCAN_CHARS else text[: text.rfind("\n", 0, MAX_SCAN_CHARS) + 1]
    lines = head.split("\n", MAX_SCAN_LINES)
    partial = len(head) < len(text)
    if len(lines) > MAX_SCAN_LINES:
        lines.pop()  # the unsplit rest
        partial = True
    if separator:
        for index, line in enumerate(lines):
            if separator in line:
                lines = lines[:index]
                while lines and not lines[-1].strip():
                    lines.pop()
                if lines and (_is_attribution(lines[-1]) or _is_rule(lines[-1])):
                    lines.pop()
                return _clean_result(lines, text), True
    cut, forward = _cut_index(lines)
    if cut is not None and (forward or (is_forward_subject(subject) and not _REPLY_SUBJECT.match(subject))):
        return text.strip("\n").rstrip(), True  # forwarded content is the request
    if cut is not None:
        return _clean_result(lines[:cut], text), True
    if partial:
        # Too long to search further: keep it, less a signature among the lines read and a trailing quote block.
        signature = _signature_line(lines)
        if signature is not None:
            return _clean_result(lines[:signature], text), False
        rest = text[: _trailing_quote_start(text)]
        return rest.strip("\n").rstrip() or text.strip("\n").rstrip(), False
    return _clean_result(lines, text), False
