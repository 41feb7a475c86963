"""HTML bodies: sanitizing for display, and conversion to readable plain text.

Sanitizing uses nh3 (Python bindings to the Rust *ammonia* crate, an allow-list sanitizer built on html5ever's
spec-compliant parser): hand-written sanitizers lose to parser differentials. ammonia already drops scripts,
``<style>`` content, event handlers (``on*``), ``style`` attributes and unknown URL schemes such as
``javascript:``. On top of its defaults we

* allow ``cid:`` URLs (inline images of ``multipart/related``, RFC 2392) and keep ``img`` ``src``;
* drop every remote resource (``img src=http...``, which is also a read-receipt tracking pixel) unless the
  caller allows remote images; links (``a href``) stay, with ``rel="noopener noreferrer"``.

:func:`html_to_text` is a small tokenizer driving a text builder: block elements become line
breaks, paragraphs blank lines, list items "- " or "1. ", table cells are separated, ``<a href>`` becomes
"text (url)" when the URL adds information, and ``<blockquote>`` lines get "> " so that the quote stripper
recognises them. It is linear in the input.
"""

from __future__ import annotations

import html as _html
import re

import nh3

__all__ = ["html_to_text", "sanitize_html"]

_TAGS = frozenset(nh3.ALLOWED_TAGS) - {"img"} | {"img", "font", "center", "span", "div"}
_ATTRIBUTES: dict[str, set[str]] = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES.setdefault("img", set()).update({"src", "alt", "width", "height", "title"})
_ATTRIBUTES.setdefault("font", set()).update({"color", "face", "size"})
_ATTRIBUTES.setdefault("td", set()).update({"colspan", "rowspan", "align", "valign"})
_ATTRIBUTES.setdefault("th", set()).update({"colspan", "rowspan", "align", "valign"})
_ATTRIBUTES.setdefault("*", set()).update({"dir", "lang"})
_SCHEMES = frozenset(nh3.ALLOWED_URL_SCHEMES) | {"cid"}


def _keep_local_images(tag: str, attr: str, value: str) -> str | None:
    if tag == "img" and attr == "src" and not value.strip().lower().startswith("cid:"):
        return None
    return value


def _cleaner(allow_remote_images: bool) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(_TAGS),
        attributes=_ATTRIBUTES,
        url_schemes=set(_SCHEMES),
        attribute_filter=None if allow_remote_images else _keep_local_images,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )


# Built once: converting the allow-lists to Rust on every call costs more than cleaning a short message.
# Cleaners are immutable, so sharing them is safe.
_CLEANERS = {False: _cleaner(False), True: _cleaner(True)}


def sanitize_html(html: str, *, allow_remote_images: bool = False) -> str:
    """Sanitize an HTML body for display (see the module docstring for what is kept)."""
    return _CLEANERS[bool(allow_remote_images)].clean(html)


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


class _TextBuilder:
    def __init__(self) -> None:
        self.lines: list[str] = []  # finished lines
        self.current: list[str] = []  # pieces of the current line
        self.quote = 0
        self.pre = 0
        self.skip = 0
        self.lists: list[list[int]] = []  # per open list: [is_ordered, counter]
        self.links: list[tuple[str, int]] = []  # open <a>: href, index of its first piece in `current`
        self.has_text = False  # the current line holds non-blank text (kept so that work stays linear)

    def add(self, piece: str) -> None:
        self.current.append(piece)
        if not self.has_text and piece.strip():
            self.has_text = True

    def newline(self, blank: bool = False) -> None:
        line = "".join(self.current).rstrip()
        if line or (self.lines and self.lines[-1] != ""):
            prefix = "> " * self.quote if line else (">" * self.quote)
            self.lines.append(prefix + line if self.quote else line)
        self.current = []
        self.has_text = False
        if blank and self.lines and self.lines[-1] != "":
            self.lines.append("")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
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
            self.lines.append("")
        if tag == "blockquote":
            self.quote += 1
        elif tag == "pre":
            self.pre += 1
        elif tag in ("ul", "ol"):
            self.lists.append([tag == "ol", 0])
        elif tag == "li":
            if self.lists and self.lists[-1][0]:
                self.lists[-1][1] += 1
                marker = f"{self.lists[-1][1]}. "
            else:
                marker = "- "
            self.add("  " * max(len(self.lists) - 1, 0) + marker)
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.links.append((href, len(self.current)))
        elif tag == "img":
            alt = (dict(attrs).get("alt") or "").strip()
            if alt:
                self.add(f"[{alt}]")
        elif tag in ("td", "th") and self.current:
            self.add("  ")
        elif tag == "hr":
            self.lines.append("-" * 20)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(self.skip - 1, 0)
            return
        if tag == "a" and self.links:
            href, start = self.links.pop()
            text = "".join(self.current[start:]).strip()
            target = href[7:] if href.lower().startswith("mailto:") else href
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


# One token per match: comment, declaration/processing instruction, tag (group 1: "/", 2: name, 3: attributes),
# text (group 4), or a lone "<". Attribute text stops at "<", so a tag that never closes costs only the distance
# to the next "<": the scan is linear.
_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)|<[!?][^<>]*>?|<(/?)([a-zA-Z][^\s/<>]*)((?:[^<>\"']|\"[^\"]*\"|'[^']*')*)>|([^<]+)|<",
    re.S,
)
_ATTRIBUTE = re.compile(r"""([^\s=/<>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?""")
_SKIP_END = {tag: re.compile(rf"</{tag}\s*>", re.I) for tag in _SKIP}


def _attributes(text: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for match in _ATTRIBUTE.finditer(text):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        if value is None:
            value = match.group(4)
        found.append((match.group(1).lower(), _html.unescape(value) if value is not None else None))
    return found


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML document: paragraphs, line breaks, lists, links and quotes kept.

    A regular-expression tokenizer feeds the text builder (about four times faster than
    :class:`html.parser.HTMLParser`, and linear): it is made for the well-formed output of
    :func:`sanitize_html` but reads any HTML; script and style content is skipped.
    """
    builder = _TextBuilder()
    pos = 0
    length = len(html)
    while pos < length:
        match = _TOKEN.match(html, pos)
        if match is None:  # pragma: no cover - the last alternative matches any "<"
            break
        pos = match.end()
        text = match.group(4)
        if text is not None:
            builder.handle_data(_html.unescape(text) if "&" in text else text)
            continue
        name = match.group(2)
        if name is None:
            if match.group(0) == "<":
                builder.handle_data("<")
            continue
        tag = name.lower()
        if match.group(1):
            builder.handle_endtag(tag)
            continue
        builder.handle_starttag(tag, _attributes(match.group(3)) if match.group(3).strip() else [])
        if tag in _SKIP:
            end = _SKIP_END[tag].search(html, pos)
            pos = end.end() if end is not None else length
            builder.handle_endtag(tag)
        elif tag in _BLOCK and tag != "hr" and match.group(3).rstrip().endswith("/"):
            builder.handle_endtag(tag)  # "<div/>": XHTML-style empty element
    return builder.result()
