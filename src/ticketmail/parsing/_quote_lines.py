"""What one line of a reply is, for the rules of `ticketmail.parsing.quotes`.

Attribution ("On ..., X wrote:"), mobile signature, "Original Message" and forward markers, quoted header
fields and blocks, rules: plain string tests and short anchored patterns on lines of bounded length.
"""

from __future__ import annotations

from ticketmail.parsing._quote_tables import (
    _AFTERS,
    _DEVICE_WORDS,
    _DIGIT,
    _ENDS,
    _FORWARD,
    _FORWARD_SUBJECT,
    _LABELS,
    _MIDDLES,
    _MOBILE_ENDINGS,
    _MOBILE_GENERIC,
    _MOBILE_STARTS,
    _MOBILE_STRONG,
    _ORIGINAL,
    _STARTS,
)

__all__ = ["MAX_ATTRIBUTION", "HEADER_WINDOW", "is_forward_subject"]

MAX_ATTRIBUTION = 400
"""Longest line (or lines joined) read as an attribution."""
HEADER_WINDOW = 14
"""Lines after a From line searched for the rest of a header block (blank lines included)."""


def _fold(text: str) -> str:
    """Full-width colons and no-break/ideographic spaces as ASCII (`str.translate` is slower for short lines)."""
    if text.isascii():
        return text
    return text.replace("\uff1a", ":").replace("\u00a0", " ").replace("\u3000", " ")


def is_forward_subject(subject: str) -> bool:
    """Whether a subject starts with a forward prefix (`Fwd:`, `FW:`, `WG:`, `TR:`, `RV:`, ...)."""
    return _FORWARD_SUBJECT.match(subject[:200]) is not None


def _is_attribution(line: str, *, loose: bool = False) -> bool:
    """Whether `line` is an attribution; `loose`: also without a date or address (right above a quote)."""
    text = _fold(line.strip().lower())
    if not text or len(text) > MAX_ATTRIBUTION or text.startswith(">"):
        return False
    core = text.strip("-\u2013 *").strip()  # Zoho: "---- On <date> <address> wrote ----"; "*On ... wrote:*"
    has_digit = _DIGIT.search(core) is not None
    if core.endswith(">:") and "@" in core and has_digit:
        # "Am 04.06.2024 um 09:00 schrieb Name <a@b>:", "2024年6月3日(月) 10:15 山田 <a@b>:"
        return True
    if not core.endswith(":"):
        if core == text and not core.startswith("on "):
            return False
        core += ":"  # "On Wed, 14 Nov 2018 ... <a@b> wrote" (no colon) and the dashed Zoho form
    if core.endswith(_ENDS):
        # "Here is what the customer wrote:" is prose; an attribution names a date or an address.
        return "@" in core or has_digit or (loose and core.startswith(_STARTS))
    if has_digit and (core.startswith(_STARTS) or core[:1].isdigit()) and any(a in core for a in _AFTERS):
        # "Am 03.06.2024 um 10:00 schrieb Support:", "Op ma 3 jun 2024 om 10:00 schreef Bob:"
        return len(core) <= 250
    if has_digit and any(middle in core for middle in _MIDDLES):
        # "Name <a@b> schrieb am Di., 16. Aug. 2016 um 12:52 Uhr:", "Bob/ACME wrote on 06/03/2024 10:00 AM:"
        return "@" in core or core.count(":") >= 2 or "/" in core
    return False


def _is_mobile_line(stripped: str) -> bool:
    """A device or app signature line; the generic forms ("Sent with ...") only when they name a device or app."""
    if len(stripped) >= 90:
        return False
    lowered = stripped.lower()
    if lowered.startswith(_MOBILE_STARTS):
        generic = lowered.startswith(_MOBILE_GENERIC) and not lowered.startswith(_MOBILE_STRONG)
        if generic and not any(word in lowered for word in _DEVICE_WORDS):
            return False  # "Sent with DHL this morning", "Gesendet von der Zentrale"
        return not lowered.endswith((".", "?", "!")) or (len(lowered) < 60 and "," not in lowered)
    return lowered.endswith(_MOBILE_ENDINGS) and len(lowered) < 40


def _is_original_marker(stripped: str) -> bool:
    text = _fold(stripped).strip("-_=*~ ").strip().rstrip(":").strip().lower()
    return bool(text) and text in _ORIGINAL


def _is_forward_marker(stripped: str) -> bool:
    if len(stripped) > 120:
        return False
    text = _fold(stripped).strip("-_=*~ <>").strip().lower()
    return text.startswith(_FORWARD)


def _header_kind(line: str) -> str | None:
    colon = line.find(":", 0, 42)
    if not line.isascii():
        wide = line.find("\uff1a", 0, 42)
        if wide >= 0 and (colon < 0 or wide < colon):
            colon = wide
    if colon < 0:
        return None
    label = line[:colon]
    if "\t" in label.strip():
        return None
    label = label.replace("\u00a0", " ").strip(" \t*").lower()
    return _LABELS.get(label)


def _is_header_block(lines: list[str], index: int, cache: dict[int, str | None] | None = None) -> bool:
    """True when a quoted header block starts at `index`.

    A From/Sent/Date/To/Subject/Cc line begins at least three distinct kinds (From among them) within a
    few lines. Outlook starts such a block with From:, Hotmail with Date:, GMX/Web.de with Gesendet:.
    `cache` keeps each line's kind, so that a run of header-like lines costs O(1) per line.
    """
    memo: dict[int, str | None] = {} if cache is None else cache

    def kind_of(at: int) -> str | None:
        if at not in memo:
            memo[at] = _header_kind(lines[at])
        return memo[at]

    first = kind_of(index)
    if first is None:
        return False
    kinds = {first}
    seen = 0
    for at in range(index + 1, min(index + HEADER_WINDOW, len(lines))):
        if not lines[at].strip():
            continue
        seen += 1
        if seen > 7:
            break
        kind = kind_of(at)
        if kind is not None:
            if kind in kinds:
                return False  # a field repeats: a list of "From:" lines, not one header block
            kinds.add(kind)
            if len(kinds) >= 3 and "from" in kinds:
                return True
    return False


def _labelled_lines(lines: list[str], start: int) -> bool:
    """Whether at least three of the next four non-blank lines are `Label: value` lines (short labels)."""
    seen = labelled = 0
    for line in lines[start : start + 10]:
        text = _fold(line.strip())
        if not text:
            continue
        seen += 1
        colon = text.find(":", 0, 32)
        if colon > 0 and " " not in text[:colon].strip().strip("*").replace(" ", "", 2):
            labelled += 1
        if seen == 4:
            break
    return labelled >= 3


def _is_rule(line: str) -> bool:
    text = line.strip()
    return len(text) >= 10 and set(text) <= {"_", "-", "=", "\u2014", "\u2500"}
