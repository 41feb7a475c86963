"""HTML character references decoded at C speed: `unescape` gives what `html.unescape` gives.

`html.unescape` calls a Python function for every reference, so a text made of references costs about a
microsecond per reference (tag soup full of `&#99999999;`). Long texts with many references are decoded
by lexbor instead (through selectolax), which follows the same HTML Living Standard rules (13.2.5.72
"character reference state": named references with and without the semicolon, numeric references,
the windows-1252 remapping of C1 controls, U+FFFD for invalid code points) at a few nanoseconds per byte.
The text is handed over as the data of a `<body>`: a leading letter keeps the tree builder from dropping
leading whitespace, and `<` is written as `&lt;` so that no tag can start. Where the standard keeps a
control character or a noncharacter that a reference names, `html.unescape` drops it; those are removed
from lexbor's result too, so both give the same text. Texts that hold such characters literally, or CR
or NUL (which the tree builder rewrites), and short texts go through `html.unescape`.
"""

from __future__ import annotations

import html as _html
import re

from selectolax.lexbor import LexborHTMLParser

__all__ = ["unescape"]

# Characters `html.unescape` drops when a reference names them (its `_invalid_codepoints`, less the C1
# controls its `_invalid_charrefs` table keeps), which lexbor keeps as the standard says. The 32 astral
# noncharacters are tested with `in` (free on a text without astral characters): a regular expression
# class holding them is an order of magnitude slower than one of BMP characters only.
_KEPT_C1 = "\x81\x8d\x8f\x90\x9d"
_DROPPED_BMP = "\x01-\x08\x0b\x0e-\x1f\x7f-\x80\x82-\x8c\x8e\x91-\x9c\x9e\x9f\ufdd0-\ufdef\ufffe\uffff"
_ASTRAL_NONCHARACTERS = tuple(chr(plane * 0x10000 + low) for plane in range(1, 17) for low in (0xFFFE, 0xFFFF))
_DROPPED = re.compile(f"[{_DROPPED_BMP}]")
# A text holding these literally is left to `html.unescape` (the tree builder rewrites CR and NUL).
_LITERAL = re.compile(f"[\x00\r{_KEPT_C1}{_DROPPED_BMP}]")


def _has_astral_noncharacter(text: str) -> bool:
    return any(char in text for char in _ASTRAL_NONCHARACTERS)


_NATIVE_MIN_REFS = 16
"""Below this many `&` the standard library is faster than building a lexbor document."""


def unescape(text: str) -> str:
    """`html.unescape(text)`, decoded natively when the text holds many character references."""
    if "&" not in text:
        return text
    if text.count("&") < _NATIVE_MIN_REFS or _LITERAL.search(text) is not None or _has_astral_noncharacter(text):
        return _html.unescape(text)
    tree = LexborHTMLParser("x" + text.replace("<", "&lt;"))
    body = tree.body
    decoded = body.text(deep=True) if body is not None else None
    if not decoded or decoded[0] != "x":  # pragma: no cover - the body always holds the text node
        return _html.unescape(text)
    decoded = decoded[1:]
    if _DROPPED.search(decoded) is not None:
        decoded = _DROPPED.sub("", decoded)
    if _has_astral_noncharacter(decoded):
        decoded = "".join(char for char in decoded if char not in _ASTRAL_NONCHARACTERS)
    return decoded
