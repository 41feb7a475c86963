"""Where the quoted history starts in an HTML reply, read from the structure mail clients write.

Mail clients mark the quote they append to a reply, and the mark is more reliable than any text rule:

* Gmail: `<div class="gmail_quote">` (attribution and `<blockquote class="gmail_quote">` inside).
* Outlook web and new Outlook: `<div id="appendonsend">`, `<div id="divRplyFwdMsg">` (also
  `x_`-prefixed), `id="mail-editor-reference-message-container"`; Outlook for Mac:
  `<span id="OLK_SRC_BODY_SECTION">`.
* Outlook desktop and Exchange: the `border:none;border-top:solid ...` div right above the
  From/Sent/To/Subject block (taken only when a header line follows it).
* Apple Mail: `<blockquote type="cite">`; Thunderbird: `<div class="moz-cite-prefix">` (the attribution)
  then `<blockquote type="cite">`.
* Outlook for iOS and Android: `<div name="messageReplySection">`.
* Yahoo: `<div class="yahoo_quoted">`; Zimbra: `<hr id="zwchr">`, `data-marker="__QUOTED_TEXT__"`;
  Zoho: `class="zmail_extra"`; Proton: `class="protonmail_quote"`.

`extract_reply` first runs the text rules of `ticketmail.parsing.quotes`; when a history marker in the
text decided (an attribution, a header block, an "Original Message" line, a mobile signature, a
forward), that is the answer, and the HTML is not read. Otherwise (an attribution in a language
without a table, a quote without `>` markers) `quote_start` finds the first mark (substring search
for the mark names, each candidate tag read from a bounded slice, comments skipped, no DOM, no
backtracking pattern); the HTML above it is turned into text, lined up with the message's plain text,
and the plain text is cut there; the text rules then run on what is left (signatures, a trailing
attribution line).

When unsure it defers to the text rules: a forward (the forwarded content is the request), a quote mark
followed by more text of the writer (an inline or bottom-posted answer), or HTML whose words do not line
up with the plain text.
"""

from __future__ import annotations

import html as _html
import re

from ticketmail.parsing._quote_lines import _header_kind, _is_forward_marker
from ticketmail.parsing.html import html_to_text
from ticketmail.parsing.quotes import extract_new_text, extract_with_verdict, is_forward_subject

__all__ = ["MAX_CANDIDATES", "MAX_HTML_SCAN", "MAX_PREFIX", "extract_reply", "quote_start"]

MAX_HTML_SCAN = 4 * 1024 * 1024
"""Only this many characters of an HTML body are scanned for a quote mark."""

MAX_PREFIX = 256 * 1024
"""A quote mark further into the HTML than this is not used (the text rules decide): the HTML above it
would have to be converted to text a second time."""

_NAME = re.compile(r"(/?)([a-zA-Z][a-zA-Z0-9:-]{0,30})")
_ATTR = re.compile(r"""([a-zA-Z_:][-a-zA-Z0-9_:.]{0,40})\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""")
_TAG_TEXT = re.compile(r"<[^<>]{0,2000}>")
_WORD = re.compile(r"[^\W_]+")
_CLASS_MARKS = frozenset(
    {"gmail_quote", "gmail_quote_container", "yahoo_quoted", "moz-cite-prefix", "zmail_extra", "protonmail_quote"}
)
_ID_MARKS = (
    "divrplyfwdmsg", "appendonsend", "mail-editor-reference-message-container", "zwchr", "olk_src_body_section",
)
_CANDIDATES = (
    "gmail_quote", "yahoo_quoted", "moz-cite-prefix", "zmail_extra", "protonmail_quote", "divrplyfwdmsg",
    "appendonsend", "mail-editor-reference-message-container", "zwchr", "olk_src_body_section",
    "messagereplysection", "cite", "__quoted_text__", "__divider__", "border-top",
)  # fmt: skip
MAX_CANDIDATES = 200
"""How many occurrences of one mark name are checked (names in the text itself are skipped)."""
_TAG_BACK = 2000  # how far a candidate's tag may start before it, or end after it
_MARK_TAGS = frozenset({"div", "blockquote", "hr", "span", "table", "section"})
_CONTAINED = frozenset({"gmail_quote", "gmail_quote_container", "yahoo_quoted", "blockquote", "protonmail_quote"})
_TOP_WORDS = 8
_PEEK = 1000
_BREAKS = re.compile(r"(?i)<br\s*/?>|</(?:div|p|tr|li|h\d)>")


def _attributes(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _ATTR.finditer(text[:2000]):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        found.setdefault(match.group(1).lower(), value if value is not None else match.group(4) or "")
    return found


def _mark(tag: str, attributes: dict[str, str]) -> str | None:
    """The kind of quote mark a start tag is, or `None`."""
    classes = set(attributes.get("class", "").lower().split())
    hit = classes & _CLASS_MARKS
    if hit:
        return sorted(hit)[0]
    ident = attributes.get("id", "").lower()
    if ident:
        bare = ident.removeprefix("x_")
        for mark in _ID_MARKS:
            if bare == mark or bare.startswith("yahoo_quoted"):
                return "yahoo_quoted" if bare.startswith("yahoo_quoted") else mark
    if tag == "blockquote" and attributes.get("type", "").lower() == "cite":
        return "blockquote"
    if attributes.get("name", "").lower() == "messagereplysection":
        return "messagereplysection"  # Outlook for iOS and Android (Exchange ActiveSync smart reply)
    if attributes.get("data-marker", "") in ("__QUOTED_TEXT__", "__DIVIDER__"):
        return "zimbra"
    style = attributes.get("style", "")
    if tag == "div" and "border-top:" in style.replace(" ", "").lower():
        normalized = style.replace(" ", "").lower()
        if "border:none" in normalized and "border-top:solid" in normalized:
            return "outlook_border"
    return None


def _peek_lines(html: str, start: int) -> list[str]:
    """The first few text lines of `html` from `start` (tags removed), cheaply and bounded."""
    window = _BREAKS.sub("\n", html[start : start + _PEEK])
    text = _html.unescape(_TAG_TEXT.sub("", window)).replace("\u00a0", " ")
    return [line.strip() for line in text.split("\n") if line.strip()][:6]


def _has_text(html: str) -> bool:
    """Whether an HTML fragment holds visible text (tags, entities for spaces and whitespace aside)."""
    text = _TAG_TEXT.sub("", html).replace("&nbsp;", " ").replace("&#160;", " ")
    return bool(text.strip())


def _element_end(html: str, tag: str, start: int, limit: int) -> int:
    """Offset just after the element `tag` that starts at `start` closes (`limit` if it never does)."""
    depth = 0
    pos = start
    opener = f"<{tag}"
    closer = f"</{tag}"
    lowered_tag = len(tag)
    while pos < limit:
        lt = html.find("<", pos, limit)
        if lt < 0:
            return limit
        head = html[lt : lt + lowered_tag + 2].lower()
        if head.startswith(closer) and not head[len(closer) : len(closer) + 1].isalnum():
            depth -= 1
            if depth <= 0:
                gt = html.find(">", lt, limit)
                return limit if gt < 0 else gt + 1
        elif head.startswith(opener) and not head[len(opener) : len(opener) + 1].isalnum():
            depth += 1
        elif html.startswith("<!--", lt):
            end = html.find("-->", lt + 4, limit)
            if end < 0:
                return limit
            pos = end + 3
            continue
        pos = lt + 1
    return limit


def quote_start(html: str) -> tuple[int, str, str] | None:
    """Find the first quote mark in an HTML body.

    Returns `(offset, kind, tag)`: where the marked element starts, which mark it is (`gmail_quote`,
    `divrplyfwdmsg`, `blockquote`, `outlook_border`, ...) and its tag name. `None` when no mark is
    found. Linear in the input: each mark name is looked for with one substring search over the
    lower-cased HTML, and each occurrence's tag is read from a bounded slice around it (at most
    `MAX_CANDIDATES` occurrences per name; most mail has none at all).
    """
    limit = min(len(html), MAX_HTML_SCAN)
    lowered = html[:limit].lower()
    best: tuple[int, str, str] | None = None
    for needle in _CANDIDATES:
        at = lowered.find(needle)
        tries = 0
        while at >= 0 and (best is None or at < best[0]) and tries < MAX_CANDIDATES:
            tries += 1
            found = _tag_mark(html, lowered, at, limit)
            if found is not None:
                if best is None or found[0] < best[0]:
                    best = found
                break
            at = lowered.find(needle, at + len(needle))
    return best


def _tag_mark(html: str, lowered: str, at: int, limit: int) -> tuple[int, str, str] | None:
    """The quote mark of the tag around offset `at`, or `None` (text, another tag, a comment)."""
    lt = lowered.rfind("<", max(0, at - _TAG_BACK), at)
    if lt < 0 or lowered.find(">", lt, at) >= 0:
        return None  # the name is in text, not inside a tag
    gt = lowered.find(">", at, min(limit, at + _TAG_BACK))
    if gt < 0:
        return None
    name = _NAME.match(html, lt + 1, gt)
    if name is None or name.group(1):
        return None
    tag = name.group(2).lower()
    if tag not in _MARK_TAGS or _in_comment(lowered, lt):
        return None
    kind = _mark(tag, _attributes(html[name.end() : gt]))
    if kind is None:
        return None
    if kind == "outlook_border":
        lines = _peek_lines(html, lt)
        if not lines or _header_kind(lines[0]) is None:
            return None  # a bordered box of the writer's own, not a quoted header block
    return lt, kind, tag


def _in_comment(html: str, at: int) -> bool:
    """Whether `at` is inside an HTML comment (looking back a bounded distance)."""
    start = max(0, at - 20000)
    return html.rfind("<!--", start, at) > html.rfind("-->", start, at)


def _tokens(text: str) -> list[str]:
    """Words (letters and digits) in lower case: punctuation and link markup differ between the two bodies."""
    return _WORD.findall(text.lower())


def _aligned_cut(text_lines: list[str], words: list[str]) -> int | None:
    """The line index in `text_lines` right after the plain text has used up `words`; `None` if they differ."""
    position = 0
    total = len(words)
    for index, line in enumerate(text_lines):
        for token in _tokens(line):
            if position >= total or token != words[position]:
                return None
            position += 1
        if position >= total:
            return index + 1
    return None


def extract_reply(text: str, html: str | None = None, separator: str | None = None, *, subject: str = "") -> str:
    """The new text of a reply, decided from the HTML structure where there is one.

    Args:
        text: The message's plain text (its text part, or the text of its HTML part).
        html: The message's HTML body as received (before sanitizing, which drops the marks), if any.
        separator: A configured "reply above this line" separator.
        subject: The subject (a forward prefix keeps the forwarded content).

    Returns:
        What `ticketmail.parsing.quotes.extract_new_text` returns for the part of `text` above the
        HTML quote mark; for `text` as a whole when there is no usable mark.
    """
    by_text, decided = extract_with_verdict(text, separator, subject=subject)
    if decided or not html:
        return by_text  # a history marker in the text decided: the HTML would cut at the same place
    found = quote_start(html)
    if found is None or is_forward_subject(subject):
        return by_text
    offset, kind, tag = found
    if offset > MAX_PREFIX:
        return extract_new_text(text, separator, subject=subject)  # the writer's part alone is too big to convert
    if any(_is_forward_marker(line) for line in _peek_lines(html or "", offset)[:3]):
        return extract_new_text(text, separator, subject=subject)
    prefix = html_to_text((html or "")[:offset])
    tail = [line.strip() for line in prefix[-600:].split("\n") if line.strip()][-3:]
    if any(_is_forward_marker(line) for line in tail):
        return extract_new_text(text, separator, subject=subject)  # "Begin forwarded message:" above the quote
    words = _tokens(prefix)
    if not words:
        return extract_new_text(text, separator, subject=subject)
    if kind in _CONTAINED and len(words) < _TOP_WORDS:
        limit = min(len(html or ""), MAX_HTML_SCAN)
        end = _element_end(html or "", tag, offset, limit)
        if end < limit and _has_text((html or "")[end : end + _PEEK * 8]):
            return extract_new_text(text, separator, subject=subject)  # answers below the quote: inline reply
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cut = _aligned_cut(lines, words)
    if cut is None:
        return extract_new_text(text, separator, subject=subject)
    result = extract_new_text("\n".join(lines[:cut]), separator, subject=subject)
    return result if result.strip() else extract_new_text(text, separator, subject=subject)
