"""RFC 2397 `data:` URLs, as osTicket's JSON API uses them for messages and attachments.

Grammar (RFC 2397 section 3)::

    dataurl    := "data:" [ mediatype ] [ ";base64" ] "," data
    mediatype  := [ type "/" subtype ] *( ";" parameter )
    data       := *urlchar
    parameter  := attribute "=" value

Rules implemented here, and why:

* "If <mediatype> is omitted, it defaults to text/plain;charset=US-ASCII" (section 2). The default applies
  only when the type is omitted; `data:;charset=utf-8,x` is `text/plain` with charset `utf-8`.
* The data (and parameter values) are percent-decoded (section 2: "the data ... is represented using
  ASCII encoding for octets inside the range of safe URL characters and using the standard %xx hex
  encoding of URLs for octets outside that range"). A `%` not followed by two hex digits is an error
  (RFC 3986 section 2.1), not silently kept. Characters outside ASCII (JSON strings may carry them
  unescaped) stand for their UTF-8 octets, as a browser would encode them.
* With `;base64` the percent-decoded data is base64 (RFC 4648 section 4). ASCII whitespace is ignored and
  missing `=` padding is tolerated, as in the WHATWG "forgiving-base64 decode"; any other character
  outside the alphabet is an `InvalidBase64Error`.
* Media type and parameter names are tokens (RFC 2045 section 5.1) and compared case-insensitively; they
  are normalized to lower case, as is the charset value.

Decoded sizes are bounded before decoding: the caller passes `check_size`, called with a lower bound of
the decoded size before anything is allocated and with the exact size before the bytes are produced, so a
1 GB base64 string is refused without decoding it. Every regular expression here is linear: no nested
quantifiers, anchored alternatives over disjoint character classes.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Callable
from urllib.parse import unquote, unquote_to_bytes

import attrs

from ticketmail.errors import InvalidBase64Error, InvalidDataURLError, InvalidValueError
from ticketmail.parsing.charsets import text_codec

__all__ = [
    "DataURL",
    "decode_base64",
    "decode_text",
    "format_data_url",
    "parse_data_url",
    "parse_media_type",
    "percent_decode",
]

SizeCheck = Callable[[int], None]

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_B64_ALPHABET_RE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_B64_ALPHABET_STR_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE = b" \t\r\n\f"
_WHITESPACE_STR = " \t\r\n\f"
_WHITESPACE_BYTES = (b" ", b"\t", b"\r", b"\n", b"\f")
_WHITESPACE_MAP = dict.fromkeys(map(ord, _WHITESPACE_STR))
_DEFAULT_TYPE = "text/plain"
_DEFAULT_CHARSET = "us-ascii"


@attrs.frozen
class DataURL:
    """A parsed `data:` URL.

    Attributes:
        media_type: `type/subtype` in lower case (`text/plain` when omitted).
        params: Media type parameters as `(name, value)` pairs in order; names lower case, values
            percent-decoded (the charset value lower case).
        base64: Whether the `;base64` flag was present.
        data: The decoded bytes.
        type_omitted: Whether the URL omitted the media type (so the RFC default applied).
    """

    media_type: str
    params: tuple[tuple[str, str], ...]
    base64: bool
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    type_omitted: bool = False

    @property
    def charset(self) -> str | None:
        """The `charset` parameter; `us-ascii` when the whole media type was omitted (RFC 2397 default)."""
        for name, value in self.params:
            if name == "charset":
                return value
        return _DEFAULT_CHARSET if self.type_omitted else None

    def text(self, *, field: str = "data") -> str:
        """The data decoded with `charset` (UTF-8 when none; see `decode_text()`)."""
        return decode_text(self.data, self.charset, field=field)


def decode_text(data: bytes, charset: str | None, *, field: str) -> str:
    """Decode `data` with `charset` into `str`.

    `None` means UTF-8. `us-ascii` (RFC 2397's default, and a label many clients add without thinking)
    is decoded as UTF-8, its superset, so a mislabeled UTF-8 message is not rejected; a text in any other
    charset is decoded strictly with it.

    Raises:
        InvalidValueError: unknown charset, or bytes that are not valid in it.
    """
    name = (charset or "utf-8").strip().lower()
    found = text_codec(name)
    if found is None:
        raise InvalidValueError(f"unknown charset {str(charset)[:40]!r} (or not a text encoding)", field=field)
    info = found
    if info.name == "ascii":
        info = codecs.lookup("utf-8")
    if info.name in ("utf-8", "utf-16", "utf-32") and data[:3] == b"\xef\xbb\xbf":
        info = codecs.lookup("utf-8-sig")
    try:
        return info.decode(data)[0]
    except (UnicodeError, ValueError, TypeError, LookupError) as exc:
        raise InvalidValueError(f"text is not valid {name}", field=field) from exc


def percent_decode(text: str, *, field: str) -> bytes:
    """Percent-decode `text` (RFC 3986 section 2.1) to bytes; non-ASCII characters become UTF-8 octets.

    Raises:
        InvalidDataURLError: a `%` not followed by two hex digits, or an unpaired surrogate.
    """
    if "%" in text and _BAD_PERCENT_RE.search(text):
        raise InvalidDataURLError("'%' must be followed by two hex digits", field=field)
    try:
        return unquote_to_bytes(text) if "%" in text else text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidDataURLError("data contains an unpaired surrogate", field=field) from exc


def decode_base64(data: str | bytes, *, field: str, check_size: SizeCheck | None = None) -> bytes:
    """Decode base64 (RFC 4648 section 4), ignoring ASCII whitespace and tolerating missing padding.

    `check_size` is called with the exact decoded size *before* decoding (and with a lower bound before
    any copy of the text is made), so limits are enforced without allocating the result.

    Raises:
        InvalidBase64Error: characters outside the alphabet, misplaced padding, or a truncated quantum.
    """
    compact: str | bytes
    if isinstance(data, str):
        if not data.isascii():
            raise InvalidBase64Error("base64 data contains non-ASCII characters", field=field)
        # ASCII text is decoded as is: no bytes copy of a possibly large string, and a copy without
        # whitespace only when there is whitespace (after a lower-bound size check).
        text = data
        if any(ch in data for ch in _WHITESPACE_STR):
            if check_size is not None:
                spaces = sum(data.count(ch) for ch in _WHITESPACE_STR)
                check_size(max(0, (len(data) - spaces) * 3 // 4 - 2))
            text = data.translate(_WHITESPACE_MAP)
        valid = _B64_ALPHABET_STR_RE.fullmatch(text) is not None
        padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
        compact = text
    else:
        raw = bytes(data)
        raw = raw.translate(None, _WHITESPACE) if any(ch in raw for ch in _WHITESPACE_BYTES) else raw
        valid = _B64_ALPHABET_RE.fullmatch(raw) is not None
        padding = 2 if raw.endswith(b"==") else 1 if raw.endswith(b"=") else 0
        compact = raw
    if not valid:
        raise InvalidBase64Error("base64 data contains characters outside the base64 alphabet", field=field)
    significant = len(compact) - padding
    if significant % 4 == 1 or (padding and len(compact) % 4 != 0):
        raise InvalidBase64Error("base64 data is truncated or wrongly padded", field=field)
    if check_size is not None:
        check_size(significant * 3 // 4)
    missing = -significant % 4 if not padding else 0
    try:
        # Alphabet and padding were checked above, so the non-validating C decoder is safe here.
        if missing:
            compact = compact + "=" * missing if isinstance(compact, str) else compact + b"=" * missing
        return binascii.a2b_base64(compact)
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - the checks above make this unreachable
        raise InvalidBase64Error("base64 data does not decode", field=field) from exc


def _media_type(type_part: str, field: str) -> str:
    main, slash, sub = type_part.partition("/")
    if not slash or not _TOKEN_RE.fullmatch(main) or not _TOKEN_RE.fullmatch(sub):
        raise InvalidDataURLError(f"invalid media type {type_part[:80]!r} (expected type/subtype)", field=field)
    return type_part.lower()


def _parameter(raw_param: str, field: str) -> tuple[str, str]:
    """One `;name=value` of the media type: percent-decoded (strict UTF-8), unquoted; charsets lower case."""
    name, eq, value = raw_param.partition("=")
    name = name.strip().lower()
    if not eq or not _TOKEN_RE.fullmatch(name):
        raise InvalidDataURLError(f"invalid media type parameter {raw_param[:80]!r}", field=field)
    if "%" in value and _BAD_PERCENT_RE.search(value):
        raise InvalidDataURLError("'%' must be followed by two hex digits", field=field)
    try:
        value = unquote(value, errors="strict").strip() if "%" in value else value.strip()
    except UnicodeDecodeError as exc:
        raise InvalidDataURLError("a media type parameter is not valid UTF-8", field=field) from exc
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return name, value.lower() if name == "charset" else value


def _payload(payload: str, is_base64: bool, field: str, check_size: SizeCheck | None) -> bytes:
    """The data of the URL, its decoded size checked before the work that decoding costs."""
    escaped = "%" in payload
    if is_base64:
        encoded: str | bytes = payload
        if escaped:
            if check_size is not None:  # a lower bound, before percent-decoding copies the payload
                check_size(max(0, (len(payload) - 2 * payload.count("%")) * 3 // 4 - 2))
            encoded = percent_decode(payload, field=field)
        return decode_base64(encoded, field=field, check_size=check_size)
    if check_size is not None:
        check_size(len(payload) - 2 * payload.count("%") if escaped else len(payload))
    data = percent_decode(payload, field=field)
    if check_size is not None:
        check_size(len(data))
    return data


def parse_data_url(
    text: str,
    *,
    field: str = "data",
    check_size: SizeCheck | None = None,
    check_type: Callable[[str], None] | None = None,
) -> DataURL:
    """Parse an RFC 2397 `data:` URL.

    Args:
        text: The URL (`data:[<mediatype>][;base64],<data>`); the scheme is case-insensitive.
        field: The input field named in errors.
        check_size: Called with the decoded size before decoding (raise to refuse).
        check_type: Called with the media type before decoding (raise to refuse).

    Raises:
        InvalidDataURLError: not a data URL, bad media type or parameter, bad percent-encoding.
        InvalidBase64Error: the `;base64` data does not decode.
    """
    if not isinstance(text, str):
        raise InvalidDataURLError(f"expected a data: URL string, got {type(text).__name__}", field=field)
    if text[:5].lower() != "data:":
        raise InvalidDataURLError("expected a URL starting with 'data:'", field=field)
    comma = text.find(",", 5)
    if comma < 0:
        raise InvalidDataURLError("a data: URL needs a ',' before its data", field=field)
    header, payload = text[5:comma], text[comma + 1 :]  # one copy of a possibly large payload
    parts = header.split(";")
    is_base64 = len(parts) > 1 and parts[-1].strip().lower() == "base64"
    if is_base64:
        parts = parts[:-1]
    type_part = parts[0].strip()
    type_omitted = not type_part
    media_type = _media_type(type_part, field) if not type_omitted else _DEFAULT_TYPE
    params = [_parameter(raw_param, field) for raw_param in parts[1:]]
    if type_omitted and not any(name == "charset" for name, _ in params):
        params.insert(0, ("charset", _DEFAULT_CHARSET))
    if check_type is not None:
        check_type(media_type)
    data = _payload(payload, is_base64, field, check_size)
    return DataURL(media_type=media_type, params=tuple(params), base64=is_base64, data=data, type_omitted=type_omitted)


def parse_media_type(text: str, *, field: str) -> tuple[str, str | None]:
    """Parse `type/subtype; charset=x` (RFC 2045 section 5.1) into the lower-case type and the charset.

    Raises:
        InvalidValueError: not `type/subtype`.
    """
    main_part, _, rest = text.partition(";")
    main, slash, sub = main_part.strip().partition("/")
    if not slash or not _TOKEN_RE.fullmatch(main) or not _TOKEN_RE.fullmatch(sub):
        raise InvalidValueError(f"expected a media type like text/plain, got {text[:80]!r}", field=field)
    charset: str | None = None
    for param in rest.split(";"):
        name, eq, value = param.partition("=")
        if eq and name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower() or None
    return f"{main}/{sub}".lower(), charset


def format_data_url(data: bytes, media_type: str = "text/plain", *, charset: str | None = None) -> str:
    """Build a base64 `data:` URL for `data` (the inverse of `parse_data_url()`)."""
    header = media_type
    if charset:
        header += f";charset={charset}"
    return f"data:{header};base64,{base64.b64encode(data).decode('ascii')}"
