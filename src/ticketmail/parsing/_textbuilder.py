"""The text of an HTML document, built from start tag, end tag and text events.

Block elements become line breaks, paragraphs blank lines, list items "- " or "1. ", table cells are
separated, `<a href>` becomes "text (url)" when the URL adds information, and `<blockquote>` lines get
"> " so that the quote stripper recognises them. Script, style, head and title content is skipped.
Quote prefixes stop growing at `MAX_QUOTE_DEPTH` levels and list indentation at `MAX_LIST_DEPTH`; the
text stops growing at its budget (`truncated` is then set).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import nh3

from ticketmail.parsing._entities import unescape

__all__ = ["ACTIVE_TAGS", "MAX_LIST_DEPTH", "MAX_QUOTE_DEPTH", "TextBuilder", "text_token"]

MAX_QUOTE_DEPTH = 10
"""Most `> ` prefixes given to one line of text."""
MAX_LIST_DEPTH = 10
"""Most indentation levels given to a list item."""

_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
        "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "thead", "tfoot", "tr", "ul",
    }
)  # fmt: skip
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre", "hr", "dl"})
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript", "object", "iframe"})
_SPACES = re.compile(r"[ \t\r\n\f\u200b]+")
_BLANKS = re.compile(r"\n{3,}")
_TEXT_SCHEMES = frozenset(nh3.ALLOWED_URL_SCHEMES)
_SCHEME = re.compile(r"\s*([a-zA-Z][a-zA-Z0-9+.-]{0,30}):")
ACTIVE_TAGS = _BLOCK | _PARAGRAPH | _SKIP | {"a", "br", "img", "td", "th", "hr", "blockquote", "pre", "ul", "ol", "li"}
"""Tags whose start or end changes the text; for any other tag both events do nothing."""
_ATTRIBUTE = re.compile(r"""([^\s=/<>"']+)(?:\s*=\s*(?:"([^"]*)"?|'([^']*)'?|([^\s>]+)))?""")


def _attributes(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _ATTRIBUTE.finditer(text):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        if value is None:
            value = match.group(4) or ""
        found.setdefault(match.group(1).lower(), unescape(value) if "&" in value else value)
    return found


def _attribute(attrs: str | Mapping[str, str | None], name: str) -> str:
    if isinstance(attrs, str):
        return _attributes(attrs).get(name, "") if attrs else ""
    return attrs.get(name) or ""


class TextBuilder:
    """Plain text from start tag, end tag and text events (from the tokenizer scan or from a DOM walk)."""

    def __init__(self, budget: int) -> None:
        self.lines: list[str] = []  # finished lines
        self.current: list[str] = []  # pieces of the current line
        self.quote = 0
        self.pre = 0
        self.skip = 0
        self.lists: list[list[int]] = []  # per open list: [is_ordered, counter]
        self.links: list[tuple[str, int]] = []  # open <a>: href, index of its first piece in `current`
        self.has_text = False  # the current line holds non-blank text (kept so that work stays linear)
        self.budget = budget  # characters still allowed in the text
        self.truncated = False

    def add(self, piece: str) -> None:
        if self.budget <= 0:
            self.truncated = True
            return
        if len(piece) > self.budget:
            piece = piece[: self.budget]
            self.truncated = True
        self.budget -= len(piece)
        self.current.append(piece)
        if not self.has_text and piece.strip():
            self.has_text = True

    def _append_line(self, line: str) -> None:
        self.budget -= 1  # the line end; the text itself was counted in add()
        self.lines.append(line)

    def newline(self, blank: bool = False) -> None:
        line = "".join(self.current).rstrip()
        if line or (self.lines and self.lines[-1] != ""):
            if self.quote:
                depth = min(self.quote, MAX_QUOTE_DEPTH)
                prefix = "> " * depth if line else ">" * depth
                self.budget -= len(prefix)
                line = prefix + line
            self._append_line(line)
        self.current = []
        self.has_text = False
        if blank and self.lines and self.lines[-1] != "":
            self._append_line("")

    def handle_starttag(self, tag: str, attrs: str | Mapping[str, str | None]) -> None:
        """A start tag; `attrs` is its raw attribute text, or its attributes already parsed."""
        if tag in _SKIP:
            self.skip += 1
            return
        if tag == "br":
            self.newline()
            return
        paragraph = tag in _PARAGRAPH and not (tag in ("ul", "ol") and self.lists)  # nested lists stay tight
        if tag in _BLOCK and self.has_text:
            self.newline(blank=paragraph)
        elif paragraph and self.lines and self.lines[-1] != "":
            self._append_line("")
        if tag == "blockquote":
            self.quote += 1
        elif tag == "pre":
            self.pre += 1
        elif tag in ("ul", "ol"):
            self.lists.append([tag == "ol", 0])
        elif tag == "li":
            self._list_item()
        else:
            self._inline_start(tag, attrs)

    def _list_item(self) -> None:
        """The marker of a list item: `1. ` in an ordered list, `- ` otherwise, indented by the nesting."""
        if self.lists and self.lists[-1][0]:
            self.lists[-1][1] += 1
            marker = f"{self.lists[-1][1]}. "
        else:
            marker = "- "
        self.add("  " * min(max(len(self.lists) - 1, 0), MAX_LIST_DEPTH) + marker)

    def _inline_start(self, tag: str, attrs: str | Mapping[str, str | None]) -> None:
        """Links (their text is followed by the URL at the end tag), image alt texts, cells, rules."""
        if tag == "a":
            self.links.append((_attribute(attrs, "href"), len(self.current)))
        elif tag == "img":
            alt = _attribute(attrs, "alt").strip()
            if alt and not self.skip:
                self.add(f"[{alt}]")
        elif tag in ("td", "th") and self.current:
            self.add("  ")
        elif tag == "hr":
            self._append_line("-" * 20)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(self.skip - 1, 0)
            return
        if tag == "a" and self.links:
            href, start = self.links.pop()
            if self.skip:
                return
            text = "".join(self.current[start:]).strip()
            target = href.strip()
            scheme = _SCHEME.match(target)
            if scheme is not None and scheme.group(1).lower() not in _TEXT_SCHEMES:
                target = ""  # javascript:, data: and other schemes the sanitizer drops
            if target.lower().startswith("mailto:"):
                target = target[7:]
            if target and not target.startswith(("#", "cid:")) and target not in text and text not in target:
                self.add(f" ({target})")
            elif target and not text:
                self.add(target)
            return
        if tag in _BLOCK:
            self.newline(blank=tag in _PARAGRAPH and not (tag in ("ul", "ol") and len(self.lists) > 1))
        if tag == "blockquote":
            self.quote = max(self.quote - 1, 0)
        elif tag == "pre":
            self.pre = max(self.pre - 1, 0)
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            first, *rest = data.split("\n")
            self.add(first)
            for line in rest:
                if self.budget <= 0:
                    self.truncated = True
                    break
                self.newline()
                self.add(line)
            return
        text = _SPACES.sub(" ", data)
        if not self.has_text or self.current[-1].endswith(" "):
            text = text.lstrip(" ")
        if text:
            self.add(text)

    def result(self) -> str:
        self.newline()
        text = "\n".join(line.replace("\u00a0", " ").rstrip() for line in self.lines)
        return _BLANKS.sub("\n\n", text).strip("\n")


def text_token(builder: TextBuilder, text: str) -> None:
    """Feed `builder` a text token of the HTML (whitespace between tags is at most one space)."""
    if not builder.pre and text.isspace():
        # Whitespace between tags (most text tokens of real HTML): at most one space.
        if builder.has_text and not builder.current[-1].endswith(" "):
            builder.add(" ")
        return
    builder.handle_data(unescape(text) if "&" in text else text)
