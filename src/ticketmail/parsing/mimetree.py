"""Split raw message bytes into a tree of MIME entities (RFC 2045/2046), without copying bodies.

Why not `email.parser`: the stdlib feed parser works line by line in Python and keeps every line of a
part as a separate `str` before joining them; a message with a 25 MB attachment costs about 7.7x its
size in memory and two seconds. This splitter works on the raw `bytes` with offsets: boundaries are
found with `bytes.find` (memchr speed), bodies are `memoryview` slices of the input, and transfer
decoding (`binascii`, C) runs once per part, when the part is used. Header fields are read by the same
rules as RFC 5322 section 2.2 (unfolding removes the CRLF only) and parameters by
`ticketmail.parsing.mailheaders.parse_params()`.

Robustness (RFC 2046 section 5.1.1 and what mail servers actually deliver):

* line ends may be CRLF, LF or bare CR, mixed;
* a boundary line is `--boundary` at the start of a line followed only by optional `--` and
  transport padding (whitespace), so a nested boundary that extends an outer one is not mistaken for it;
* a missing close delimiter, a multipart without its boundary, a header block without the blank line,
  a missing boundary parameter, depth/part/header counts beyond the limits: all are recorded as defects and
  parsing goes on with what is there;
* every loop advances through the input, so the work is linear in its size times the (bounded) depth.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping

import attrs

from ticketmail.model import Defect
from ticketmail.parsing.mailheaders import decode_8bit, parse_params

__all__ = ["Limits", "Part", "ParseContext", "decode_transfer", "parse_entity"]

_EOL = re.compile(rb"\r\n?|\n")
# Two line ends in a row; a CR directly followed by LF is one line end, never two.
_BLANK_LINE = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?!\n))")
MAX_HEADER_BYTES = 1024 * 1024
"""Most bytes of one header block read; the rest of the block is skipped."""
MAX_FIELD_BYTES = 64 * 1024
"""Most bytes of one unfolded header field value kept."""
# The line end after which a header field ends: not followed by a continuation line (RFC 5322 section 2.2.3).
_FIELD_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?![ \t])")
_FIELD_START = re.compile(rb"[\x21-\x39\x3b-\x7e]{1,76}[ \t]*:")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext: printable ASCII except ":"
# An unfolded field on one line ending with CRLF or LF: name (group 1) and raw value (group 2).
_SIMPLE_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]{1,200}):([^\r\n\x00]*)(?:\r\n|\n)(?![ \t])")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_SPACE = re.compile(rb"[^ \t\r\n]")
_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary", "7-bit", "8-bit", "none"})
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET)


@attrs.frozen
class Limits:
    """Structural limits applied while splitting (see `EmailOptions`)."""

    max_depth: int
    max_parts: int
    max_headers: int


@attrs.define
class ParseContext:
    """Per-call mutable state: counters and the defects found so far (never shared between calls)."""

    limits: Limits
    parts: int = 0
    defects: list[Defect] = attrs.field(factory=list)
    parts_capped: bool = False
    copies: dict[tuple[int, int, int], tuple[object, bytes]] = attrs.field(factory=dict)

    def defect(self, code: str, message: str, part: str | None = None) -> None:
        """Record a recoverable problem."""
        self.defects.append(Defect(code=code, message=message, part=part))

    def body_bytes(self, part: Part) -> bytes:
        """`bytes(part.body)`, copied once per parse however often the same body is asked for.

        An embedded message is both attached (as an `.eml` file) and parsed, and a forwarded wrapper's inner
        message is read twice (unwrapped and attached): without this, every level of a nest of
        `message/rfc822` parts would keep its own copy of the same bytes.
        """
        view = part.body
        key = (id(view.obj), part.header_end, len(view))
        found = self.copies.get(key)
        if found is None:
            found = self.copies[key] = (view.obj, bytes(view))
        return found[1]


@attrs.frozen
class Part:
    """One MIME entity: its header fields, media type, parameters, body and sub-entities.

    `headers` holds (name, unfolded raw value bytes). `body` is the still transfer-encoded body of a
    leaf (a view into the input). `children` are the parts of a multipart, or the one embedded message of
    a `message/rfc822` part. `path` is the dotted part number used in defects (`"1.2"`).
    """

    headers: tuple[tuple[str, bytes], ...]
    content_type: str
    params: Mapping[str, str]
    body: memoryview
    children: tuple[Part, ...]
    path: str
    header_end: int = 0
    offset: int = 0

    def get(self, name: str) -> bytes | None:
        """The raw value of the first header `name` (case-insensitive), or `None`."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def get_text(self, name: str) -> str:
        """The first header `name` as undecoded text (8-bit bytes read as UTF-8 or sniffed), or `""`."""
        raw = self.get(name)
        return decode_8bit(raw)[0].strip() if raw is not None else ""

    def disposition(self) -> tuple[str, dict[str, str]]:
        """`Content-Disposition` value (lower case, `""` if absent) and its decoded parameters."""
        raw = self.get_text("content-disposition")
        if not raw:
            return "", {}
        return parse_params("content-disposition", raw)

    @property
    def transfer_encoding(self) -> str:
        """`Content-Transfer-Encoding` (lower case, `7bit` when absent)."""
        return self.get_text("content-transfer-encoding").lower().strip("\"' ") or "7bit"


def _eol(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(end of the line starting at pos, start of the next line), for CRLF, LF or bare CR.

    One regex search stops at the first line end, so reading a header block is linear even when the
    input uses bare CRs only (two `find` calls would rescan to the next LF for every line).
    """
    match = _EOL.search(data, pos, end)
    if match is None:
        return end, end
    return match.start(), match.end()


def _is_field_name(line: bytes) -> int:
    """Position of the colon when `line` starts a header field (RFC 5322 ftext name), else -1."""
    colon = line.find(b":")
    if colon <= 0 or colon > 200:
        return -1
    name = line[:colon].rstrip(b" \t")  # "Subject :" is obsolete syntax (RFC 5322 section 4.5) but seen
    return colon if _FIELD_NAME.fullmatch(name) else -1


def _skip_header_block(data: bytes, pos: int, end: int) -> int:
    """Where the body starts when the rest of a header block (from the line start `pos`) is skipped."""
    blank = _EOL.match(data, pos, end)
    if blank is not None:
        return blank.end()
    found = _BLANK_LINE.search(data, pos, end)
    return found.end() if found is not None else end


def _read_headers(
    data: bytes, start: int, end: int, ctx: ParseContext, path: str, is_message: bool
) -> tuple[list[tuple[str, bytes]], int]:
    """The header fields of the entity at `start` (name, unfolded raw value) and where its body starts.

    One regular expression search finds the end of a whole field with its continuation lines (C speed,
    however often it is folded). Bounds: at most `max_headers` fields and `MAX_HEADER_BYTES` of header
    block are read; the rest of the block is skipped with one search for the blank line. A value longer than
    `MAX_FIELD_BYTES` is cut (`References` keeps its end, the most recent ids). A line that is not a
    header field is skipped with a `malformed_header_line` defect when the next line is a field again (a
    leading junk line, a broken field); otherwise the body starts there (`missing_header_body_separator`).
    """
    headers: list[tuple[str, bytes]] = []
    max_headers = ctx.limits.max_headers
    first = _EOL.match(data, start, end)
    if first is not None:
        return headers, first.end()
    limit = min(end, start + MAX_HEADER_BYTES)
    pos = start
    index = 0
    while pos < end:
        pos, index = _simple_fields(data, pos, limit, headers, max_headers, index)
        if pos >= end:
            break
        if pos >= limit:
            ctx.defect("headers_truncated", f"header block longer than {MAX_HEADER_BYTES} bytes; rest skipped", path)
            return headers, _skip_header_block(data, pos, end)
        found = _FIELD_END.search(data, pos, end)
        field_end, nxt = (found.start(), found.end()) if found is not None else (end, end)
        if field_end == pos:  # a blank line: the body follows
            return headers, nxt
        raw = data[pos:field_end]
        line_index, index = index, index + 1
        if raw[0] in b" \t":
            ctx.defect("leading_whitespace", "header block starts with a continuation line", path)
            pos = nxt
            continue
        if line_index == 0 and is_message and raw.startswith(b"From "):
            pos = nxt  # mbox "From " envelope line, also seen at the start of attached messages
            continue
        colon = _is_field_name(raw)
        if colon < 0:
            if nxt < end and _FIELD_START.match(data, nxt, end) is not None and (headers or line_index == 0):
                ctx.defect("malformed_header_line", f"skipped a line that is not a header field: {raw[:40]!r}", path)
                pos = nxt
                continue
            if headers or line_index:
                ctx.defect("missing_header_body_separator", "no blank line between header and body", path)
            return headers, pos
        if len(headers) >= max_headers:
            ctx.defect("too_many_headers", f"more than {max_headers} header fields; rest ignored", path)
            return headers, _skip_header_block(data, pos, end)
        name = raw[:colon].rstrip(b" \t").decode("ascii")
        headers.append((name, _field_value(name, raw[colon + 1 :], ctx, path)))
        pos = nxt
    return headers, end


def _simple_fields(
    data: bytes, pos: int, limit: int, headers: list[tuple[str, bytes]], max_headers: int, index: int
) -> tuple[int, int]:
    """Read the one-line `Name: value` fields (no NUL) from `pos` on, most of a header block, one match each.

    Returns where the first other line starts and the line count so far; the caller reads that line.
    """
    match = _SIMPLE_FIELD.match
    while len(headers) < max_headers:
        simple = match(data, pos, limit)
        if simple is None or simple.end(2) - simple.start(2) > MAX_FIELD_BYTES:
            break
        headers.append((simple.group(1).decode("ascii"), simple.group(2).strip(b" \t")))
        pos = simple.end()
        index += 1
    return pos, index


def _field_value(name: str, value: bytes, ctx: ParseContext, path: str) -> bytes:
    """A raw field value unfolded, cut at `MAX_FIELD_BYTES`, stripped, without NUL bytes."""
    if len(value) > MAX_FIELD_BYTES:
        ctx.defect("header_too_long", f"header {name[:40]} longer than {MAX_FIELD_BYTES} bytes; cut", path)
        # `References` keeps its end (the most recent ids), other fields their start.
        references = name.lower() == "references"
        value = value[-MAX_FIELD_BYTES:].partition(b" ")[2] if references else value[:MAX_FIELD_BYTES]
    if b"\n" in value or b"\r" in value:
        value = _EOL.sub(b"", value)
    value = value.strip(b" \t")
    if b"\x00" in value:
        value = value.replace(b"\x00", b"")
        ctx.defect("nul_in_header", f"NUL bytes removed from header {name}", path)
    return value


_NEAR_MISSES = 64
"""Lines starting like the boundary without being a delimiter, before the search switches to a regex."""


def _delimiter_patterns(boundary: bytes) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """Delimiter lines of `boundary`: after a CR or LF, and at the very start of a body (group 1: the line)."""
    line = b"--" + re.escape(boundary) + rb"(--)?[ \t]*(?=[\r\n]|\Z)"
    return re.compile(rb"[\r\n](" + line + b")"), re.compile(b"(" + line + b")")


class _Delimiters:
    """Finds the delimiter lines of one boundary: `bytes.find` for the marker, then a check of the line.

    After `_NEAR_MISSES` lines that only start like the boundary (hostile input), the rest is searched
    with a regular expression that skips near misses in C; ordinary mail never compiles one.
    """

    def __init__(self, data: bytes, boundary: bytes, end: int) -> None:
        self.data = data
        self.boundary = boundary
        self.marker = b"--" + boundary
        self.end = end
        self.misses = 0
        self.pattern: re.Pattern[bytes] | None = None

    def find(self, pos: int, at_start: bool) -> tuple[int, int, bool] | None:
        """(start, end, is_close) of the next delimiter line from `pos`, or `None`."""
        data, end = self.data, self.end
        while self.pattern is None:
            idx = data.find(self.marker, pos, end)
            if idx < 0:
                return None
            if (idx == pos and at_start) or (idx > 0 and data[idx - 1] in b"\r\n"):
                after = idx + len(self.marker)
                close = data[after : after + 2] == b"--"
                cursor = after + 2 if close else after
                while cursor < end and data[cursor] in b" \t":
                    cursor += 1
                if cursor >= end or data[cursor] in b"\r\n":
                    return idx, cursor, close
            self.misses += 1
            if self.misses >= _NEAR_MISSES:
                self.pattern = _delimiter_patterns(self.boundary)[0]
            pos = idx + 1
            at_start = False
        if at_start:
            first = _delimiter_patterns(self.boundary)[1].match(data, pos, end)
            if first is not None:
                return first.start(), first.end(), bool(first.group(2))
        # The line end before the delimiter is part of the match (a leading character class is searched
        # for in C; a lookbehind would be tried at every position), so the search starts one byte back.
        found = self.pattern.search(data, max(pos - 1, 0), end)
        while found is not None and found.start(1) < pos:
            found = self.pattern.search(data, found.start(1), end)
        return None if found is None else (found.start(1), found.end(), bool(found.group(2)))


def _find_boundaries(data: bytes, start: int, end: int, boundary: bytes) -> tuple[list[tuple[int, int]], bool, bool]:
    """Ranges of the body parts between delimiter lines; (ranges, saw_close, saw_any)."""
    delimiters = _Delimiters(data, boundary, end)
    ranges: list[tuple[int, int]] = []
    part_start: int | None = None
    found = delimiters.find(start, True)
    while found is not None:
        idx, line_end, close = found
        if part_start is not None:
            body_end = idx
            if body_end > part_start and data[body_end - 1] == 0x0A:
                body_end -= 1
                if body_end > part_start and data[body_end - 1] == 0x0D:
                    body_end -= 1
            elif body_end > part_start and data[body_end - 1] == 0x0D:
                body_end -= 1
            ranges.append((part_start, body_end))
        if close:
            return ranges, True, True
        part_start = _eol(data, line_end, end)[1]
        found = delimiters.find(max(part_start, line_end), False)
    if part_start is not None:
        ranges.append((part_start, end))
    return ranges, False, part_start is not None


def decode_transfer(part: Part, ctx: ParseContext) -> bytes:
    """The body of a leaf with its Content-Transfer-Encoding undone (RFC 2045 section 6), best effort."""
    encoding = part.transfer_encoding
    body = part.body
    if encoding == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            cleaned = bytes(body).translate(None, _NOT_B64)
            extra = len(cleaned) % 4
            if extra == 1:
                cleaned = cleaned[:-1]
            elif extra:
                cleaned += b"=" * (4 - extra)
            ctx.defect("invalid_base64", "base64 body is truncated or malformed; decoded what was there", part.path)
            try:
                return binascii.a2b_base64(cleaned)
            except binascii.Error:  # pragma: no cover - cleaned input always decodes
                return b""
    if encoding in ("quoted-printable", "quoted_printable"):
        try:
            return binascii.a2b_qp(body)
        except (binascii.Error, ValueError):  # pragma: no cover - a2b_qp is lenient
            ctx.defect("invalid_quoted_printable", "quoted-printable body does not decode", part.path)
            return bytes(body)
    if encoding in ("x-uuencode", "uuencode", "x-uue"):
        return _uudecode(bytes(body), ctx, part.path)
    if encoding not in ("7bit", "8bit", "binary", "7-bit", "8-bit", "none"):
        ctx.defect("unknown_transfer_encoding", f"unknown Content-Transfer-Encoding {encoding[:40]!r}", part.path)
    return bytes(body)


def _uudecode(body: bytes, ctx: ParseContext, path: str) -> bytes:
    out: list[bytes] = []
    started = False
    for line in body.splitlines():
        if not started:
            started = line.startswith(b"begin ")
            continue
        if line.strip() in (b"end", b"`"):
            break
        try:
            out.append(binascii.a2b_uu(line))
        except binascii.Error:
            ctx.defect("invalid_uuencode", "uuencoded line does not decode", path)
    return b"".join(out)


def parse_entity(
    data: bytes,
    start: int,
    end: int,
    ctx: ParseContext,
    *,
    depth: int = 0,
    path: str = "",
    default_type: str = "text/plain",
    is_message: bool = True,
) -> Part:
    """Parse the entity `data[start:end]` (header block and body) into a `Part` tree.

    `is_message` is true for a whole message (top level or embedded), where an mbox `From ` line may
    precede the header block.
    """
    ctx.parts += 1
    headers, body_start = _read_headers(data, start, end, ctx, path, is_message)
    content_type, params = _media_type(headers, default_type, ctx, path)
    view = memoryview(data)
    body = view[body_start:end]
    children: tuple[Part, ...] = ()
    if content_type.startswith("multipart/"):
        content_type, params, parts = _multipart(data, body_start, end, ctx, depth, path, content_type, params)
        if parts is not None:
            children, body = parts, view[0:0]
    elif content_type in ("message/rfc822", "message/global") and depth < ctx.limits.max_depth:
        leaf = Part(tuple(headers), content_type, params, body, (), path)
        inner_path = f"{path}.1" if path else "1"
        if leaf.transfer_encoding in _IDENTITY_ENCODINGS:
            # No decoding needed: the embedded message is parsed in place (offsets into the same bytes),
            # so nesting costs no copy per level.
            if _NOT_SPACE.search(data, body_start, end) is not None:
                children = (parse_entity(data, body_start, end, ctx, depth=depth + 1, path=inner_path),)
        else:
            inner = decode_transfer(leaf, ctx)
            if inner.strip():
                child = parse_entity(inner, 0, len(inner), ctx, depth=depth + 1, path=inner_path)
                body = memoryview(inner)
                children = (child,)
                headers = [(k, v) for k, v in headers if k.lower() != "content-transfer-encoding"]
    return Part(tuple(headers), content_type, params, body, children, path, body_start, start)


def _media_type(
    headers: list[tuple[str, bytes]], default_type: str, ctx: ParseContext, path: str
) -> tuple[str, dict[str, str]]:
    """The entity's `type/subtype` and parameters (`default_type` when absent or unusable)."""
    raw_type = next((value for key, value in headers if key.lower() == "content-type"), None)
    if raw_type is None:
        return default_type, {}
    main, params = parse_params("content-type", decode_8bit(raw_type)[0])
    if main.count("/") == 1 and all(main.split("/")):
        return main, params
    ctx.defect("invalid_content_type", f"unusable Content-Type {main[:60]!r}; using {default_type}", path)
    return default_type, {k: v for k, v in params.items() if k == "charset"}


def _multipart(
    data: bytes,
    body_start: int,
    end: int,
    ctx: ParseContext,
    depth: int,
    path: str,
    content_type: str,
    params: dict[str, str],
) -> tuple[str, dict[str, str], tuple[Part, ...] | None]:
    """The parts of a multipart body; `None` for one that cannot be split, read as a leaf of the new type."""
    boundary = params.get("boundary", "").encode("utf-8", "replace")
    if depth >= ctx.limits.max_depth:
        ctx.defect("nesting_too_deep", f"MIME nesting deeper than {ctx.limits.max_depth}; kept as a file", path)
        return "application/octet-stream", params, None
    if not boundary or len(boundary) > 200:
        ctx.defect("missing_boundary", "multipart without a usable boundary; body read as text", path)
        return "text/plain", params, None
    ranges, closed, found = _find_boundaries(data, body_start, end, boundary)
    if not found:
        ctx.defect("boundary_not_found", "no part delimiter found; body read as text", path)
        return "text/plain", {}, None
    if not closed:
        ctx.defect("missing_close_boundary", "multipart has no close delimiter", path)
    kids: list[Part] = []
    child_default = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
    for index, (s, e) in enumerate(ranges, 1):
        if ctx.parts >= ctx.limits.max_parts:
            if not ctx.parts_capped:
                ctx.parts_capped = True
                ctx.defect("too_many_parts", f"more than {ctx.limits.max_parts} MIME parts; rest ignored")
            break
        child_path = f"{path}.{index}" if path else str(index)
        is_message = child_default == "message/rfc822"
        kids.append(
            parse_entity(
                data, s, e, ctx, depth=depth + 1, path=child_path, default_type=child_default, is_message=is_message
            )
        )
    return content_type, params, tuple(kids)
