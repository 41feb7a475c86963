"""Markup-dense HTML reduced to its text at C speed (regular expression substitutions and `str` methods).

A long document that is mostly tags, attributes and character references (a `<` or `&` every
`DENSE_RATIO` characters) would cost the sanitizer and the text builder a step per tag for almost no
text. Such a document is read as text instead: raw-text elements go with their content, tags that break
a line become line breaks, every other tag and comment a space, and character references are decoded.
Its HTML is that text, escaped, in paragraphs: no tag survives, so it needs no sanitizer.
"""

from __future__ import annotations

import html as _html
import re

from ticketmail.parsing._entities import unescape

__all__ = ["DENSE_MIN_LENGTH", "DENSE_RATIO", "FLAT_TAG", "is_dense", "render_flat", "strip_raw_blocks"]

DENSE_MIN_LENGTH = 32 * 1024
"""Documents at least this long are read as markup-dense when they hold a `<` or `&` every `DENSE_RATIO` characters."""
DENSE_RATIO = 8

_RAW_BLOCK_NAMES = (
    "script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes", "noscript", "template",
)  # fmt: skip
_RAW_BLOCK = re.compile(rf"<({'|'.join(_RAW_BLOCK_NAMES)})\b[^>]*(?:>|\Z).*?(?:</\1\s*>|\Z)", re.S | re.I)
# Tags and comments in the flattened rest of a document (a simpler, faster cut than the tokenizer's).
FLAT_TAG = re.compile(r"<!--.*?(?:-->|\Z)|<[^<>]*>", re.S)
# Tag starts that begin a new line in the text of a flattened dense document (a prefix may catch a few
# more tags, such as "<pre": an extra line break, never lost text).
_BREAK_STARTS = tuple(
    start for name in ("<br", "<p", "</p", "<div", "</div", "<li", "<tr") for start in (name, name.upper())
)


def strip_raw_blocks(html: str) -> str:
    """`html` with its raw-text elements (scripts, styles) and their content replaced by a space."""
    lowered = html.lower()  # substring tests beat one case-insensitive alternation by about 4x
    if any(f"<{name}" in lowered for name in _RAW_BLOCK_NAMES):
        return _RAW_BLOCK.sub(" ", html)
    return html


def is_dense(html: str) -> bool:
    """Whether `html` is long and mostly markup (a `<` or `&` every `DENSE_RATIO` characters or less).

    Real mail carries far more text than markup; a document made of tags, attributes and character
    references would cost the sanitizer and the text builder a step per tag for almost no text.
    """
    length = len(html)
    return length >= DENSE_MIN_LENGTH and (html.count("<") + html.count("&")) * DENSE_RATIO > length


def render_flat(html: str) -> tuple[str, str]:
    """The HTML (escaped paragraphs) and the text of a markup-dense document, reduced at C speed.

    Raw-text elements go with their content, the tags that break a line become line breaks and every
    other tag and comment a space, then character references are decoded; no tag survives, so the HTML
    needs no sanitizer.
    """
    flat = strip_raw_blocks(html)
    for start in _BREAK_STARTS:  # str.replace scans at C speed; one regex would cost a step per tag
        flat = flat.replace(start, "\n" + start)
    flat = unescape(FLAT_TAG.sub(" ", flat)).replace("\xa0", " ")
    # Whitespace runs become one space and blank lines go (str.split beats a regex substitution here).
    text = "\n".join(line for line in (" ".join(part.split()) for part in flat.split("\n")) if line)
    clean = "<p>" + _html.escape(text).replace("\n", "</p>\n<p>") + "</p>" if text else ""
    return clean, text
