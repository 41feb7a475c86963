"""Header decoding for `ticketmail.parsing.mime`: RFC 2047 encoded words, addresses, ids, parameters.

Why not `email.header.decode_header`/`policy.default`: they are slower (`policy.default` parses every
header into objects, about 3x the compat32 cost) and give up on the malformed words mail clients produce.
This module decodes

* encoded words (RFC 2047 section 2) with `B` and `Q` encodings, joining *adjacent words of the same
  charset before decoding* so that a multi-byte character split across two words (a common bug, RFC 2047
  section 5 forbids it) still decodes; whitespace between adjacent encoded words is dropped (section 6.2);
* encoded words written where RFC 2047 forbids them (inside quoted strings, glued to text, with spaces inside
  `Q` text) since senders do that;
* raw 8-bit header bytes (RFC 6532 allows UTF-8; older clients write their local charset), through
  `ticketmail.parsing.charsets.decode_text()`;
* RFC 2231 parameter values (`filename*0*=utf-8''...`) with charset fallbacks.

Work is linear in the header length; the encoded-word regular expression has no nested quantifiers.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import email.utils
import re
import urllib.parse
from collections.abc import Iterator

from ticketmail.model import Address
from ticketmail.parsing.charsets import decode_text, normalize_charset

__all__ = [
    "decode_8bit",
    "decode_rfc2047",
    "is_valid_mailbox",
    "parse_addresses",
    "parse_date",
    "parse_msgids",
    "parse_params",
]

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([BbQq])\?([^?]*)\?=")
_MSGID = re.compile(r"<([^<>\s]{1,998})>")
_WS_ONLY = re.compile(r"\s*")
_NOT_SIMPLE_LIST = re.compile(r'["(\\;:]')
_NOT_SIMPLE_PARAMS = re.compile(r"[*\\(\r\n]")
_SIMPLE_ANGLE = re.compile(r"([^<>\"(),;:\\]*)<\s*([^<>\s\"(),;:\\@]+@[^<>\s\"(),;:\\@]+)\s*>\s*")
_SIMPLE_BARE = re.compile(r"\s*([^<>\s\"(),;:\\@]+@[^<>\s\"(),;:\\@]+)\s*")
_SIMPLE_PARAM = re.compile(r";[ \t]*([^\s=;\"]+)[ \t]*=[ \t]*(\"[^\"]*\"|[^;\"\s]*)[ \t]*")
_BARE_ADDRESS = re.compile(r"[^\s<>,;:\"()]{1,64}@[^\s<>,;:\"()]{1,255}")
# An encoded word without its "?=" directly before "<address>" (a broken client's display name).
_OPEN_WORD = re.compile(r"=\?([^?\s<>]{1,75})\?([BbQq])\?([^?<>\",]{0,900}?)\s*(?=<[^<>\s]+@[^<>\s]+>)")
_MAILBOX = re.compile(r"[^\s<>()\[\],;:\\\"]+@[^\s<>()\],;:\\\"@]+")
_MAX_ADDRESS_HEADER = 64 * 1024  # characters of one address field parsed; beyond is a defect, not a hang
_MAX_ADDRESSES = 1000
_MAX_UNKNOWN_LABELS = 8  # unknown charset labels of one field resolved by detection


def decode_8bit(raw: bytes, hint: str | None = None) -> tuple[str, bool]:
    """Header bytes to `str`: ASCII, else UTF-8 (RFC 6532), else `hint`, else a sniffed charset.

    `hint` is the charset the message declares for its body: mail clients that write raw 8-bit headers
    write them in that charset (a Shift_JIS subject above a `charset=shift_jis` body). Returns
    `(text, was_8bit)`.
    """
    if raw.isascii():
        return raw.decode("ascii"), False
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        pass
    if hint:
        text, _used, trusted = decode_text(raw, hint)
        if trusted:
            return text, True
    return decode_text(raw, None)[0], True


def _word_bytes(encoding: str, text: str) -> bytes:
    raw = text.encode("ascii", "replace")
    if encoding in "Bb":
        raw = raw.strip()
        missing = -len(raw) % 4
        if missing == 3:  # one stray character cannot be base64; drop it
            raw = raw[:-1]
            missing = 0
        try:
            return binascii.a2b_base64(raw + b"=" * missing)
        except binascii.Error:
            return b""
    return binascii.a2b_qp(raw, header=True)


def decode_rfc2047(value: str) -> str:
    """Decode every RFC 2047 encoded word in `value` (lenient, see the module docstring)."""
    if "=?" not in value:
        return value
    # Segments: [text] with charset None for literal text, [bytes, ...] with a charset for encoded words;
    # adjacent words of one charset collect their bytes in one list (joined once: linear, not quadratic).
    segments: list[tuple[list[str] | list[bytes], str | None]] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        charset = match.group(1).lower().split("*", 1)[0]
        data = _word_bytes(match.group(2), match.group(3))
        last = segments[-1] if segments else None
        if last is not None and last[1] == charset and _WS_ONLY.fullmatch(between):
            last[0].append(data)  # type: ignore[arg-type]
        else:
            if between and not (last is not None and last[1] is not None and _WS_ONLY.fullmatch(between)):
                segments.append(([between], None))
            segments.append(([data], charset))
        pos = match.end()
    if pos < len(value):
        segments.append(([value[pos:]], None))
    return "".join(_decode_segments(segments))


def _decode_segments(segments: list[tuple[list[str] | list[bytes], str | None]]) -> list[str]:
    """Decode the segments of `decode_rfc2047`; adjacent words whose labels name one codec are decoded together.

    An unknown label is resolved once, by decoding its first segment (the codec found is reused for the
    rest), so words alternating between two unknown labels cost one decode, not one per word.
    """
    out: list[str] = []
    resolved: dict[str, str] = {}  # label -> codec it is decoded with
    pending: list[bytes] = []
    pending_codec: str | None = None
    unknown = 0

    def flush() -> None:
        if pending_codec is not None:
            out.append(decode_text(b"".join(pending), pending_codec)[0])
        pending.clear()

    for items, charset in segments:
        if charset is None:
            flush()
            pending_codec = None
            out.append("".join(items))  # type: ignore[arg-type]
            continue
        data = b"".join(items)  # type: ignore[arg-type]
        codec = resolved.get(charset)
        if codec is None:
            # Past a few unknown labels, a new label is read as Western text (cp1252, which also reads
            # UTF-8) without a lookup or a guess: each costs microseconds, and a field can hold thousands.
            known = normalize_charset(charset) if unknown < _MAX_UNKNOWN_LABELS else "cp1252"
            if known is None:
                unknown += 1
                known = decode_text(data, charset)[1]  # detected (or fallback) codec for this label
            resolved[charset] = codec = known
        if codec != pending_codec:
            flush()
            pending_codec = codec
        pending.append(data)
    flush()
    return out


def _idna_domain(domain: str) -> str:
    domain = domain.lower()
    if "xn--" not in domain:
        return domain
    try:
        return domain.encode("ascii").decode("idna")
    except UnicodeError:
        return domain


def _normalize_email(addr: str) -> str:
    addr = addr.strip().strip("<>").strip()
    local, at, domain = addr.rpartition("@")
    if not at:
        return addr
    return f"{local}@{_idna_domain(domain)}"


def _simple_pairs(value: str) -> list[tuple[str, str]] | None:
    """Fast path for the common `Name <a@b>, c@d` lists (no quotes, comments, groups or escapes).

    Without those constructs a comma can only separate addresses, so splitting on it is exact; anything
    else returns `None` and the stdlib parser (about ten times slower) takes over.
    """
    if _NOT_SIMPLE_LIST.search(value):
        return None
    pairs: list[tuple[str, str]] = []
    for piece in value.split(","):
        if not piece.strip():
            continue
        match = _SIMPLE_ANGLE.fullmatch(piece)
        if match is not None:
            pairs.append((" ".join(match.group(1).split()), match.group(2)))
            continue
        match = _SIMPLE_BARE.fullmatch(piece)
        if match is None:
            return None
        pairs.append(("", match.group(1)))
    return pairs


def _quoted_name(match: re.Match[str]) -> str:
    decoded = decode_rfc2047(f"=?{match.group(1)}?{match.group(2)}?{match.group(3)}?=")
    name = " ".join(decoded.replace("\\", "").replace('"', "").split())
    return f'"{name}" '


def _repair_words(value: str) -> str:
    """Close encoded words that a broken client left open right before an `<address>`, as quoted names.

    `=?iso-8859-1?Q?B=FCrling <smith@example.com>` becomes `"Bürling" <smith@example.com>`, so the
    address parser sees a display name and an address instead of one garbled token.
    """
    return _OPEN_WORD.sub(_quoted_name, value)


def is_valid_mailbox(address: str) -> bool:
    """Whether `address` can be a sender: `local@domain`, no whitespace, no encoded-word fragment."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "=?" in address or "?=" in address:
        return False
    return _MAILBOX.fullmatch(address) is not None


def parse_addresses(values: list[str]) -> tuple[Address, ...]:
    """Parse address-list header values (undecoded text) into `Address` values, in order.

    The list is split first and display names decoded afterwards, so that a decoded name containing a comma
    or angle brackets cannot break the list. Entries without an address (groups, `undisclosed-recipients:;`)
    are dropped. At most 64 KiB of one field and 1000 addresses are read (bounded work on hostile input).
    """
    out: list[Address] = []
    joined = ", ".join(values)
    if len(joined) > _MAX_ADDRESS_HEADER:
        joined = joined[:_MAX_ADDRESS_HEADER].rpartition(",")[0]
    if "=?" in joined:
        joined = _repair_words(joined)
    try:
        pairs = _simple_pairs(joined)
        if pairs is None:
            pairs = email.utils.getaddresses([joined])
    except (RecursionError, ValueError, IndexError, TypeError):
        # The stdlib parser recurses on nested quotes and comments; fall back to bare addresses.
        pairs = [("", found) for found in _BARE_ADDRESS.findall(joined)]
    for name, addr in pairs[:_MAX_ADDRESSES]:
        if not addr:
            continue
        decoded_name = " ".join(decode_rfc2047(name).split()) if name else ""
        out.append(Address(email=decode_rfc2047(_normalize_email(addr)), name=decoded_name or None))
    return tuple(out)


def parse_msgids(value: str) -> tuple[str, ...]:
    """Message ids in an `In-Reply-To`/`References` value, without angle brackets, in order, deduplicated.

    Ids written without brackets (a common bug) are taken as whitespace-separated tokens.
    """
    found = _MSGID.findall(value)
    if not found:
        found = [token.strip("<>,;") for token in value.split() if "@" in token]
    seen: dict[str, None] = {}
    for item in found:
        if item:
            seen.setdefault(item, None)
    return tuple(seen)


def parse_date(value: str) -> _dt.datetime | None:
    """RFC 5322 date to an aware datetime; `-0000` (unknown zone, section 3.3) is read as UTC. None if bad."""
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed


def _simple_params(value: str) -> tuple[str, dict[str, str]] | None:
    """Fast path for `type/sub; a=b; c="d"` values; `None` sends anything unusual to the stdlib parser."""
    main, sep, rest = value.partition(";")
    params: dict[str, str] = {}
    rest = rest.rstrip(" \t;")
    if sep and rest:
        rest = ";" + rest
        pos = 0
        for match in _SIMPLE_PARAM.finditer(rest):
            if match.start() != pos:
                return None
            pos = match.end()
            key = match.group(1).lower()
            if key not in params:
                params[key] = decode_rfc2047(match.group(2).strip('"'))
        if pos != len(rest):
            return None
    return main.strip().lower(), params


MAX_PARAM_CHARS = 16 * 1024
"""Most characters of one decoded parameter value kept."""
MAX_CONTINUATIONS = 1000
"""Most RFC 2231 continuation segments read for one parameter."""
_PARAM_NAME = re.compile(r'[ \t]*([^\s=;"]*)[ \t]*(=?)[ \t]*')
_COMMENT = re.compile(r"\([^()]*\)")
_SECTION = re.compile(r"(.+?)\*(\d{1,4})(\*?)")


def _iter_params(rest: str) -> Iterator[tuple[str, str | None]]:
    """(name, raw value or None) of each `;`-separated parameter in `rest`; one linear pass.

    A quoted value ends at the first `"` not escaped by a backslash (an unclosed one runs to the end); an
    unquoted value at the next `;`.
    """
    pos = 0
    length = len(rest)
    while pos < length:
        match = _PARAM_NAME.match(rest, pos)
        assert match is not None  # noqa: S101 - the pattern matches the empty string
        name, pos = match.group(1), match.end()
        value: str | None = None
        if match.group(2):
            if rest.startswith('"', pos):
                scan = pos + 1
                while True:
                    quote = rest.find('"', scan)
                    if quote < 0:
                        value, pos = rest[pos:], length
                        break
                    slashes = quote
                    while slashes > scan and rest[slashes - 1] == "\\":
                        slashes -= 1
                    if (quote - slashes) % 2 == 0:
                        value = rest[pos : quote + 1]
                        pos = quote + 1
                        break
                    scan = quote + 1
            else:
                semi = rest.find(";", pos)
                end = length if semi < 0 else semi
                value, pos = rest[pos:end], end
        semi = rest.find(";", pos)
        pos = length if semi < 0 else semi + 1
        yield name, value


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"'):
        value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
        if "\\" in value:
            # Quoted pairs (RFC 5322 section 3.2.1) undone in C: "\\" is a backslash, "\x" is "x". NUL
            # never reaches here (header NULs are removed), so it is free as a placeholder.
            value = value[: 2 * MAX_PARAM_CHARS].replace("\\\\", "\x00").replace("\\", "").replace("\x00", "\\")
    return value


def _extended_bytes(text: str) -> bytes:
    raw = text.encode("latin-1", "replace")
    return urllib.parse.unquote_to_bytes(raw) if b"%" in raw else raw


def _split_extended(value: str) -> tuple[str | None, str]:
    """`charset'language'text` (RFC 2231 section 4) to (charset, text); no quotes: (None, value)."""
    first = value.find("'")
    second = value.find("'", first + 1) if first >= 0 else -1
    if second < 0:
        return None, value
    return value[:first] or None, value[second + 1 :]


def _add_param(name: str, raw: str, params: dict[str, str], sections: dict[str, list[tuple[int, bool, str]]]) -> None:
    """One `name=value` of a parameter list: a continuation segment, an extended value or a plain one."""
    section = _SECTION.fullmatch(name)
    if section is not None:
        parts = sections.setdefault(section.group(1), [])
        if len(parts) < MAX_CONTINUATIONS:
            parts.append((int(section.group(2)), bool(section.group(3)), _unquote(raw)))
        return
    if name.endswith("*"):
        base = name[:-1]
        if base not in params:
            label, text = _split_extended(_unquote(raw))
            params[base] = decode_text(_extended_bytes(text), label)[0][:MAX_PARAM_CHARS]
        return
    if name not in params:
        params[name] = decode_rfc2047(_unquote(raw)[:MAX_PARAM_CHARS])


def _join_continuations(parts: list[tuple[int, bool, str]]) -> str:
    """The value of RFC 2231 continuations `name*0*=...; name*1=...` (a gap in the numbers ends it)."""
    parts.sort(key=lambda item: item[0])
    charset: str | None = None
    chunks: list[bytes] = []
    extended_any = False
    for index, (number, extended, text) in enumerate(parts):
        if index != number:
            break  # RFC 2231 section 3: a gap ends the value
        if extended:
            extended_any = True
            if number == 0:
                charset, text = _split_extended(text)
            chunks.append(_extended_bytes(text))
        else:
            chunks.append(text.encode("utf-8", "surrogatepass"))
    joined = b"".join(chunks)
    if extended_any:
        return decode_text(joined, charset)[0][:MAX_PARAM_CHARS]
    return decode_rfc2047(decode_text(joined, "utf-8")[0][:MAX_PARAM_CHARS])


def parse_params(header_name: str, value: str) -> tuple[str, dict[str, str]]:
    """Split a `Content-Type`/`Content-Disposition` value into its lower-case main value and parameters.

    Parameters are decoded: RFC 2231 (charset'lang'%XX, continuations `name*0*=`) with charset fallbacks,
    and RFC 2047 words inside quoted values (not allowed by the RFC, written by Outlook and others). Names
    are lower case; the first of a repeated parameter wins. One linear pass (no stdlib `_parseparam`, which
    is quadratic on quotes and backslashes); at most `MAX_CONTINUATIONS` segments per parameter and
    `MAX_PARAM_CHARS` characters per value are kept.
    """
    if not _NOT_SIMPLE_PARAMS.search(value):
        simple = _simple_params(value)
        if simple is not None:
            return simple
    main, sep, rest = value.partition(";")
    if "(" in main:
        main = _COMMENT.sub("", main)
    params: dict[str, str] = {}
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    if sep:
        for raw_name, raw in _iter_params(rest):
            if raw_name and raw is not None:
                _add_param(raw_name.lower(), raw, params, sections)
    for base, parts in sections.items():
        if base not in params:
            params[base] = _join_continuations(parts)
    return main.strip().lower(), params
