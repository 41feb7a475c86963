"""The text of an HTML document from lexbor's DOM (through selectolax): a spec-conforming tree, in C.

lexbor builds the tree the HTML Living Standard prescribes (implied end tags, an unclosed `<head>`,
misnested formatting elements, character references), in C; one iterative walk in document order then
feeds `TextBuilder` a start event on entering an element, a text event per text node and an end event on
leaving it (only for the tags whose events change the text). The walk stops as soon as the tree is
deeper than the given depth (the caller then takes the flattening scan of `ticketmail.parsing.html`),
so a deep nest costs at most that many levels of Python.
"""

from __future__ import annotations

from selectolax.lexbor import LexborHTMLParser, LexborNode

from ticketmail.parsing._textbuilder import ACTIVE_TAGS, TextBuilder

__all__ = ["dom_text"]

# Elements that never have content (HTML Living Standard 13.1.2).
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track",
     "wbr", "keygen", "frame", "basefont", "bgsound", "image"}
)  # fmt: skip
_WITH_ATTRIBUTES = frozenset({"a", "img"})


def _text_node(node: LexborNode, builder: TextBuilder) -> None:
    if builder.skip:
        return
    text = node.text_content or ""
    if not builder.pre and text.isspace():
        # Whitespace between tags (most text nodes of real HTML): at most one space.
        if builder.has_text and not builder.current[-1].endswith(" "):
            builder.add(" ")
        return
    builder.handle_data(text)


def dom_text(html: str, budget: int, max_depth: int) -> TextBuilder | None:
    """`TextBuilder` fed from the DOM of `html`, or `None` when the tree nests deeper than `max_depth`."""
    builder = TextBuilder(budget)
    node = LexborHTMLParser(html).root
    open_tags: list[str] = []  # tags of the elements entered and not yet left
    while node is not None:
        tag = node.tag or "-"
        if tag == "-text":
            _text_node(node, builder)
        elif tag[0] != "-":  # "-comment", "-doctype": nothing to read
            if tag in ACTIVE_TAGS:
                builder.handle_starttag(tag, node.attributes if tag in _WITH_ATTRIBUTES else "")
            child = node.child if tag not in _VOID else None
            if child is not None:
                if len(open_tags) >= max_depth:
                    return None
                open_tags.append(tag)
                node = child
                continue
            if tag in ACTIVE_TAGS and tag not in _VOID:
                builder.handle_endtag(tag)
        node = _next(node, open_tags, builder)
    return builder


def _next(node: LexborNode, open_tags: list[str], builder: TextBuilder) -> LexborNode | None:
    """The node after `node` in document order once its subtree is done, closing the elements left."""
    while True:
        following = node.next
        if following is not None:
            return following
        parent = node.parent
        if not open_tags or parent is None:
            return None
        tag = open_tags.pop()
        if tag in ACTIVE_TAGS:
            builder.handle_endtag(tag)
        node = parent
