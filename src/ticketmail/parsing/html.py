"""HTML bodies: sanitizing for display, and conversion to readable plain text, with bounded cost.

Sanitizing uses nh3 (Python bindings to the Rust *ammonia* crate, an allow-list sanitizer built on html5ever's
spec-compliant parser): hand-written sanitizers lose to parser differentials. ammonia already drops scripts,
`<style>` content, event handlers (`on*`), `style` attributes and unknown URL schemes such as
`javascript:`. On top of its defaults we

* allow `cid:` URLs (inline images of `multipart/related`, RFC 2392) and keep `img` `src`;
* drop every remote resource (`img src=http...`, which is also a read-receipt tracking pixel) unless the
  caller allows remote images; links (`a href`) stay, with `rel="noopener noreferrer"`.

Text is built by one linear scan of the *original* HTML (a regular-expression tokenizer that follows the
HTML tokenizer's rules for tags, quoted attribute values, comments and raw-text elements, so it can never
fail or rescan): block elements become line breaks, paragraphs blank lines, list items "- " or "1. ", table
cells are separated, `<a href>` becomes "text (url)" when the URL adds information, and `<blockquote>`
lines get "> " so that the quote stripper recognises them. Script, style, head and title content is skipped.

Bounded cost on hostile HTML (html5ever, inside nh3, is quadratic in the nesting depth):

* the same scan tracks the stack of open elements (with the end tags HTML implies: `<li>`, `<p>`,
  `<td>`, ...) and drops the start and end tags of elements nested deeper than `MAX_TAG_DEPTH` (100),
  keeping their content: the HTML given to nh3 and the text are both *flattened* beyond that depth; after
  `MAX_FLATTENED` (50) dropped tags the rest of the document is reduced to its text in one pass;
* a document of at least `DENSE_MIN_LENGTH` (32 KiB) characters holding a `<` or `&` every `DENSE_RATIO` (8)
  characters or less (tags, attributes and references, hardly any text) is read as text at C speed and its
  HTML is that text, escaped, in paragraphs (`html_too_deep` names every tag as flattened);
* quote prefixes stop growing at `MAX_QUOTE_DEPTH` (10) levels and list indentation at `MAX_LIST_DEPTH`
  (10), so no line gets a prefix longer than a few dozen characters;
* the text is at most `TEXT_GROWTH` (2) times the HTML's length plus 4096 characters; beyond that it is
  truncated.

`render_html()` returns the sanitized HTML, the text and what was flattened or truncated, so that
`ticketmail.parsing.mime.parse_email()` records defects (`html_too_deep`, `text_truncated`).
"""

from __future__ import annotations

import html as _html
import re

import attrs
import nh3

from ticketmail.parsing._domtext import dom_text
from ticketmail.parsing._entities import unescape
from ticketmail.parsing._flathtml import (
    FLAT_TAG,
    is_dense,
    render_flat,
    strip_raw_blocks,
)
from ticketmail.parsing._textbuilder import _BLOCK, MAX_LIST_DEPTH, MAX_QUOTE_DEPTH, TextBuilder, text_token

__all__ = [
    "MAX_FLATTENED",
    "MAX_LIST_DEPTH",
    "MAX_QUOTE_DEPTH",
    "MAX_TAGS",
    "MAX_TAG_DEPTH",
    "TEXT_GROWTH",
    "RenderedHTML",
    "html_to_text",
    "limit_html_depth",
    "render_html",
    "sanitize_html",
]

MAX_TAG_DEPTH = 100
"""Open elements kept nested; deeper start/end tags are dropped (their content stays)."""
TEXT_GROWTH = 2
MAX_TAGS = 20_000
"""Tags read as tags; from the next one on, the rest of the document is reduced to its text (flattened)."""
MAX_FLATTENED = 50
"""After this many dropped tags the rest of the document is reduced to its text in one C-speed pass."""
"""The text of an HTML document is at most `TEXT_GROWTH * len(html) + 4096` characters."""

_DOM_DEPTH = 2 * MAX_TAG_DEPTH  # the standard's tree can be a little deeper than the scan's (reopened formatting)
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
# An `<img>` element only comes from an `<img` or `<image` tag (case-insensitive): without one, the image
# filter (a Python call for every attribute of every element) has nothing to do.
_IMAGE_TAG = re.compile(r"<im", re.I)


def _clean(html: str, allow_remote_images: bool) -> str:
    """`html` sanitized by the shared cleaners."""
    remote = bool(allow_remote_images) or _IMAGE_TAG.search(html) is None
    return _CLEANERS[remote].clean(html)


# Elements that never have content (HTML Living Standard 13.1.2), and elements whose content is raw text.
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track",
     "wbr", "keygen", "frame", "basefont", "bgsound", "image"}
)  # fmt: skip
_RAW_TEXT = frozenset({"script", "style", "xmp", "iframe", "noembed", "noframes", "noscript", "textarea", "title"})
# Start tags that close an open <p> (13.2.6.4.7 "in body"; <table> is left out: it does not in quirks mode).
_CLOSES_P = frozenset(
    {"address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div", "dl", "fieldset",
     "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr",
     "main", "menu", "nav", "ol", "p", "pre", "section", "summary", "ul", "li", "dd", "dt", "listing", "plaintext"}
)  # fmt: skip
# Implied end tags: opening KEY closes the nearest open element in the first set, searching down the stack
# no further than an element of the second set.
_IMPLIED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "li": (frozenset({"li"}), frozenset({"ul", "ol", "menu", "table"})),
    "dt": (frozenset({"dt", "dd"}), frozenset({"dl", "table"})),
    "dd": (frozenset({"dt", "dd"}), frozenset({"dl", "table"})),
    "tr": (frozenset({"tr", "td", "th"}), frozenset({"table", "tbody", "thead", "tfoot"})),
    "td": (frozenset({"td", "th"}), frozenset({"tr", "table"})),
    "th": (frozenset({"td", "th"}), frozenset({"tr", "table"})),
    "tbody": (frozenset({"tbody", "thead", "tfoot", "tr", "td", "th"}), frozenset({"table"})),
    "thead": (frozenset({"tbody", "thead", "tfoot", "tr", "td", "th"}), frozenset({"table"})),
    "tfoot": (frozenset({"tbody", "thead", "tfoot", "tr", "td", "th"}), frozenset({"table"})),
    "option": (frozenset({"option"}), frozenset({"select", "datalist", "optgroup"})),
    "optgroup": (frozenset({"optgroup", "option"}), frozenset({"select"})),
}
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# Start tags that need more than a push onto the stack of open elements.
_SPECIAL_START = frozenset(_IMPLIED) | _HEADINGS | _VOID | _RAW_TEXT

# One token per match, and every alternative always succeeds up to the end of the input, so the scan never
# backtracks over more than one token: a comment (to "-->" or the end), a bogus comment or declaration
# ("<!", "<?", "</" not followed by a letter, to ">" or the end), a tag (group 1: "/", 2: name, 3: attributes;
# a quote opens a value only after "=", as in the HTML tokenizer; an unclosed value runs to the end), text
# (group 4) or a lone "<".
_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"
    r"|<(?:[!?]|/(?![a-zA-Z]))[^>]*>?"
    r"|<(/?)([a-zA-Z][^\t\n\f\r />]*)((?:[^>=]|=\s*\"[^\"]*(?:\"|\Z)|=\s*'[^']*(?:'|\Z)|=)*)(?:>|\Z)"
    r"|([^<]+)"
    r"|<",
    re.S,
)
# The same tokens without text (found by searching for "<"), for the depth limiter alone.
_TAG_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"
    r"|<(?:[!?]|/(?![a-zA-Z]))[^>]*>?"
    r"|<(/?)([a-zA-Z][^\t\n\f\r />]*)((?:[^>=]|=\s*\"[^\"]*(?:\"|\Z)|=\s*'[^']*(?:'|\Z)|=)*)(?:>|\Z)",
    re.S,
)
_TAG_NAME = re.compile(r"<(/?)([a-zA-Z][^\t\n\f\r />]*)")
_RAW_END = {tag: re.compile(rf"</{tag}(?=[\s/>]|\Z)", re.I) for tag in _RAW_TEXT}


@attrs.frozen
class RenderedHTML:
    """What `render_html()` produced from one HTML document.

    Attributes:
        html: The sanitized HTML (`None` when only the text was asked for).
        text: The readable plain text.
        flattened: How many start tags nested deeper than `MAX_TAG_DEPTH` were dropped.
        truncated: Whether the text was cut at `TEXT_GROWTH` times the input length.
    """

    html: str | None
    text: str
    flattened: int = 0
    truncated: bool = False


class _Scan:
    """One pass over an HTML document: depth-limited copy (only built when needed) and text."""

    def __init__(self, html: str, max_depth: int, want_text: bool) -> None:
        self.html = html
        self.max_depth = max_depth
        self.builder = TextBuilder(TEXT_GROWTH * len(html) + 4096) if want_text else None
        self.stack: list[str] = []
        self.open_counts: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.flattened = 0
        self.flatten_after = MAX_FLATTENED  # 1 for a probe: stop at the first dropped tag
        self.out: list[str] | None = None  # pieces of the limited copy, once something was dropped
        self.last = 0  # end of the input already represented in `out`
        self.rest = ""  # the flattened rest of the document (tags replaced by spaces), once cut
        self.rest_text: str | None = None  # that rest with its character references decoded

    def _cut(self, start: int, end: int, replacement: str = "") -> None:
        if self.out is None:
            self.out = []
        self.out.append(self.html[self.last : start])
        if replacement:
            self.out.append(replacement)
        self.last = end

    def _pop_to(self, index: int) -> None:
        """Close the elements above and including `stack[index]`, innermost first."""
        builder = self.builder
        while len(self.stack) > index:
            name = self.stack.pop()
            self.open_counts[name] -= 1
            if builder is not None:
                builder.handle_endtag(name)

    def _find(self, names: frozenset[str], barrier: frozenset[str]) -> int:
        stack = self.stack
        for index in range(len(stack) - 1, -1, -1):
            name = stack[index]
            if name in names:
                return index
            if name in barrier:
                return -1
        return -1

    def start(self, tag: str, attrs: str, start: int, end: int) -> None:
        counts = self.open_counts
        implied = _IMPLIED.get(tag)
        if implied is not None and any(counts.get(name) for name in implied[0]):
            index = self._find(*implied)
            if index >= 0:
                self._pop_to(index)
        if tag in _CLOSES_P and counts.get("p"):
            index = self._find(frozenset({"p"}), frozenset({"button", "table", "td", "th"}))
            if index >= 0:
                self._pop_to(index)
        if tag in _HEADINGS and self.stack and self.stack[-1] in _HEADINGS:
            self._pop_to(len(self.stack) - 1)
        void = tag in _VOID
        if not void:
            if len(self.stack) >= self.max_depth:
                self.dropped[tag] = self.dropped.get(tag, 0) + 1
                self.flattened += 1
                self._cut(start, end)
                return
            self.stack.append(tag)
            counts[tag] = counts.get(tag, 0) + 1
        if self.builder is not None:
            self.builder.handle_starttag(tag, attrs)

    def end(self, tag: str, start: int, end: int) -> None:
        if self.dropped.get(tag):
            self.dropped[tag] -= 1
            self._cut(start, end)
            return
        if tag == "br":  # "</br>" is read as "<br>"
            if self.builder is not None:
                self.builder.handle_starttag("br", "")
            return
        if not self.open_counts.get(tag):
            return  # a stray end tag: the HTML parser ignores it too
        stack = self.stack
        index = len(stack) - 1
        while stack[index] != tag:
            index -= 1
        self._pop_to(index)

    def run_tags(self) -> None:
        """The depth limiter alone: text is skipped by the regular expression search, in C."""
        html = self.html
        length = len(html)
        pos = 0
        search = _TAG_TOKEN.search
        stack = self.stack
        counts = self.open_counts
        dropped = self.dropped
        max_depth = self.max_depth
        tags = 0
        while pos < length:
            match = search(html, pos)
            if match is None:
                break
            start, pos = match.start(), match.end()
            name = match.group(2)
            if name is None:
                continue
            tag = name.lower()
            tags += 1
            if self.flattened >= self.flatten_after or tags > MAX_TAGS:
                if self.flatten_after == MAX_FLATTENED:
                    self.flatten_rest(start)
                return
            if match.group(1):
                if stack and stack[-1] == tag and not dropped.get(tag):
                    stack.pop()  # fast path: the end tag of the innermost element
                    counts[tag] -= 1
                else:
                    self.end(tag, start, pos)
                continue
            if len(stack) < max_depth and tag not in _SPECIAL_START and not (tag in _CLOSES_P and counts.get("p")):
                stack.append(tag)  # fast path: an ordinary element opens
                counts[tag] = counts.get(tag, 0) + 1
                continue
            self.start(tag, "", start, pos)
            if tag in _RAW_TEXT:
                raw_end = _RAW_END[tag].search(html, pos)
                pos = raw_end.start() if raw_end is not None else length

    def run(self) -> None:
        html = self.html
        builder = self.builder
        if builder is None:
            self.run_tags()
            return
        length = len(html)
        pos = 0
        tags = 0
        match_token = _TOKEN.match
        while pos < length:
            match = match_token(html, pos)
            if match is None:  # pragma: no cover - the last alternative matches any "<"
                break
            start, pos = pos, match.end()
            text = match.group(4)
            if text is not None:
                if not builder.skip:
                    text_token(builder, text)
                continue
            name = match.group(2)
            if name is None:
                if builder is not None and match.group(0) == "<":
                    builder.handle_data("<")
                continue
            tag = name.lower()
            tags += 1
            if self.flattened >= MAX_FLATTENED or tags > MAX_TAGS:
                self.flatten_rest(start)
                return
            if match.group(1):
                self.end(tag, start, pos)
                continue
            attrs = match.group(3)
            self.start(tag, attrs, start, pos)
            if tag in _RAW_TEXT:
                pos = self._raw_text(tag, pos, builder)
            elif tag in _BLOCK and tag != "hr" and attrs.rstrip().endswith("/") and builder is not None:
                builder.handle_endtag(tag)  # "<div/>": XHTML-style empty element (html5ever keeps it open)

    def _raw_text(self, tag: str, pos: int, builder: TextBuilder) -> int:
        """Skip the content of a raw-text element (`<script>`, `<textarea>`...); where it ends."""
        raw_end = _RAW_END[tag].search(self.html, pos)
        content_end = raw_end.start() if raw_end is not None else len(self.html)
        if tag in ("textarea", "xmp") and not builder.skip:
            content = self.html[pos:content_end]
            builder.handle_data(unescape(content) if "&" in content else content)
        return content_end

    def flatten_rest(self, pos: int) -> None:
        """Past `MAX_FLATTENED` dropped tags: the rest of the document becomes text, at C speed.

        Raw-text elements (scripts, styles) are removed with their content, then every tag and comment is
        replaced by a space (a space, so that removing a tag cannot join "<" and a name into a new tag).
        """
        rest = strip_raw_blocks(self.html[pos:])
        rest = FLAT_TAG.sub(" ", rest)
        self.flattened += 1
        self._cut(pos, len(self.html))
        self.rest = rest
        builder = self.builder
        if builder is not None and not builder.skip:
            self.rest_text = unescape(rest)
            builder.handle_data(self.rest_text)

    def sanitized(self, allow_remote_images: bool) -> str:
        """The limited copy sanitized: nh3 reads what precedes the flattened rest, which is escaped as text."""
        if not self.rest or self.out is None:
            return _clean(self.limited(), allow_remote_images)
        rest = self.rest_text if self.rest_text is not None else unescape(self.rest)
        return _clean("".join(self.out), allow_remote_images) + _html.escape(rest, quote=False)

    def limited(self) -> str:
        if self.out is None:
            return self.html
        self.out.append(self.html[self.last :])
        return "".join(self.out) + self.rest


def _nests_too_deep(html: str) -> bool:
    """Whether `html` may nest deeper than `MAX_TAG_DEPTH` (a cheap over-estimate, one pass over the tags).

    Every start tag of a non-void element counts one level; an end tag closes one only when an element of
    its name is open. Implied end tags (`<li>`, `<p>`, `<td>`) are not modelled, so the estimate is never
    below the depth the tree builder reaches (which `dom_text` checks again while walking).
    """
    if html.count("<") <= MAX_TAG_DEPTH:
        return False
    depth = 0
    open_counts: dict[str, int] = {}
    for match in _TAG_NAME.finditer(html):  # not findall: a deep nest is known after a hundred tags
        slash, name = match.groups()
        tag = name.lower()
        if slash:
            if open_counts.get(tag):
                open_counts[tag] -= 1
                depth -= 1
        elif tag not in _VOID:
            open_counts[tag] = open_counts.get(tag, 0) + 1
            depth += 1
            if depth > MAX_TAG_DEPTH:
                return True
    return False


_DEEP_PROBE = 4096  # characters of a dense document probed for deep nesting (see `_read_as_text`)


def _read_as_text(html: str) -> bool:
    """Whether `html` is markup-dense (`is_dense`) and does not nest deep from its start.

    Deep nesting costs the depth limiter `MAX_FLATTENED` dropped tags, then the rest goes at C speed.
    """
    return is_dense(html) and not _nests_too_deep(html[:_DEEP_PROBE])


def limit_html_depth(html: str, max_depth: int = MAX_TAG_DEPTH) -> tuple[str, int]:
    """`html` with the tags of elements nested deeper than `max_depth` removed, and how many were removed.

    Content is kept; only the start and end tags beyond the depth go. Linear in `len(html)`.
    """
    if html.count("<") <= max_depth:
        return html, 0
    if max_depth == MAX_TAG_DEPTH and html.count("<") <= MAX_TAGS and not _nests_too_deep(html):
        return html, 0  # the estimate is never below the scan's depth: nothing would be dropped
    scan = _Scan(html, max_depth, want_text=False)
    scan.run()
    return scan.limited(), scan.flattened


def sanitize_html(html: str, *, allow_remote_images: bool = False) -> str:
    """Sanitize an HTML body for display (see the module docstring for what is kept and flattened)."""
    if _read_as_text(html):
        return render_flat(html)[0]
    limited, _flattened = limit_html_depth(html)
    return _clean(limited, allow_remote_images)


def render_html(
    html: str, *, allow_remote_images: bool = False, sanitize: bool = True, text: bool = True
) -> RenderedHTML:
    """Sanitize `html` and build its text in one scan (see the module docstring).

    Args:
        html: An HTML document or fragment, as received.
        allow_remote_images: As for `sanitize_html()`.
        sanitize: False to build the text only (`RenderedHTML.html` is then `None`).
        text: False to sanitize only (`RenderedHTML.text` is then `""`); the depth limit still applies.
    """
    if _read_as_text(html):  # mostly markup: read as text, with escaped paragraphs as its HTML
        flat_html, flat_text = render_flat(html)
        tags = max(1, html.count("<"))
        return RenderedHTML(html=flat_html if sanitize else None, text=flat_text if text else "", flattened=tags)
    if not text:
        limited, flattened = limit_html_depth(html)
        clean = _clean(limited, allow_remote_images) if sanitize else None
        return RenderedHTML(html=clean, text="", flattened=flattened)
    # Spec tree builders (lexbor here, html5ever in nh3) are quadratic in the nesting depth: the depth
    # limiter runs first; a document it leaves as it is gets its text from lexbor's tree, a flattened one
    # from the scan (which reads the flattened rest as text, where a tree builder would read it again).
    if html.count("<") <= MAX_TAGS and not _nests_too_deep(html):
        from_dom = dom_text(html, TEXT_GROWTH * len(html) + 4096, _DOM_DEPTH)
        if from_dom is not None:
            clean = _clean(html, allow_remote_images) if sanitize else None
            return RenderedHTML(html=clean, text=from_dom.result(), truncated=from_dom.truncated)
    scan = _Scan(html, MAX_TAG_DEPTH, want_text=True)
    scan.run()
    builder = scan.builder
    assert builder is not None  # noqa: S101 - want_text=True
    result = builder.result()
    clean = scan.sanitized(allow_remote_images) if sanitize else None
    return RenderedHTML(html=clean, text=result, flattened=scan.flattened, truncated=builder.truncated)


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML document: paragraphs, line breaks, lists, links and quotes kept.

    Reads any HTML (raw mail bodies as well as the output of `sanitize_html()`); linear in its length,
    with the depth and length bounds of the module docstring.
    """
    return render_html(html, sanitize=False).text
