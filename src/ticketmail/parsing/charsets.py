"""Turn the bytes of a text part or an encoded word into `str`, whatever the label says.

Real mailboxes mislabel text constantly, and a helpdesk that trusts labels shows mojibake or drops mail.
The strategy, per declared label (see `docs/email.md`):

* Labels are mapped to the superset codec that mail clients actually emit: `GB2312`/`GBK` ->
  `gb18030`, `KS_C_5601-1987`/`EUC-KR` -> `cp949`, `Shift_JIS` -> `cp932`, `Big5` -> `cp950`,
  `ISO-8859-1`/`US-ASCII` -> `cp1252` (the WHATWG Encoding Standard does the same for the web).
* `ISO-2022-JP` (RFC 1468) is tried strictly first; mail from Windows uses Microsoft's CP50220/CP50221
  extensions (NEC row 13 such as "①" and "㈱", IBM extensions, half-width katakana), which Python's
  `iso2022_jp*` codecs reject. `decode_iso2022jp_superset()` handles those by converting each JIS X 0208
  run to Shift_JIS and decoding it with `cp932` (the repertoire CP50220 is defined over). Mail labeled
  ISO-2022-JP without any escape sequence but with 8-bit bytes is in fact Shift_JIS (or UTF-8).
* A latin-1/ASCII label on bytes that are valid UTF-8 with multi-byte sequences is UTF-8 (valid UTF-8
  by accident is vanishingly rare for Western text).
* Missing or unknown labels are sniffed: ISO-2022 escape sequences, then ASCII, then UTF-8, then
  charset-normalizer on a bounded sample when at least a tenth of it is 8-bit (Cyrillic, Greek, CJK
  legacy encodings), then `cp1252` (which with the latin-1 fallback never fails).

Every function here returns valid `str` (no lone surrogates) and the name of the codec finally used; none
raises on any input. The work is linear in the input size.
"""

from __future__ import annotations

import codecs
import contextlib
import contextvars
import encodings
import encodings.aliases
import functools
import pkgutil
import re
from collections.abc import Iterator

import charset_normalizer

__all__ = [
    "MAX_DETECTIONS",
    "MIN_DETECT_BYTES",
    "decode_iso2022jp_superset",
    "decode_text",
    "detection_budget",
    "normalize_charset",
    "text_codec",
]

MIN_DETECT_BYTES = 32
"""Shorter unlabeled 8-bit text is read as UTF-8 or cp1252: statistical detection needs more evidence."""
MAX_DETECTIONS = 4
"""Statistical detections (about a millisecond each) allowed per message inside `detection_budget()`."""
_DETECTIONS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("ticketmail_detections", default=None)


@contextlib.contextmanager
def detection_budget(count: int = MAX_DETECTIONS) -> Iterator[None]:
    """Allow at most `count` statistical charset detections inside the block (then cp1252 is used).

    `ticketmail.parsing.mime.parse_email()` runs inside one, so a message with thousands of encoded
    words in unknown charsets costs a bounded number of detections.
    """
    token = _DETECTIONS.set([count])
    try:
        yield
    finally:
        _DETECTIONS.reset(token)


def _take_detection() -> bool:
    budget = _DETECTIONS.get()
    if budget is None:
        return True
    if budget[0] <= 0:
        return False
    budget[0] -= 1
    return True


# Labels mail clients write, mapped to the codec that decodes what they really send.
_SUPERSETS: dict[str, str] = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "csgb2312": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "cp936": "gb18030",
    "chinese": "gb18030",
    "gb_2312-80": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ks_c_5601-1989": "cp949",
    "ksc5601": "cp949",
    "ksc_5601": "cp949",
    "euc-kr": "cp949",
    "euckr": "cp949",
    "korean": "cp949",
    "windows-949": "cp949",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "iso-8859-9": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "csshiftjis": "cp932",
    "windows-31j": "cp932",
    "big5": "cp950",
    "big-5": "cp950",
    "x-x-big5": "cp950",
    "cn-big5": "cp950",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "unicode": "utf-8",
    "euc-jp": "euc_jis_2004",
    "x-euc-jp": "euc_jis_2004",
    "iso-2022-jp": "iso-2022-jp",
    "csiso2022jp": "iso-2022-jp",
    "iso-2022-jp-1": "iso-2022-jp",
    "iso-2022-jp-2": "iso-2022-jp",
    "iso-2022-jp-3": "iso-2022-jp",
    "iso-2022-jp-2004": "iso-2022-jp",
    "cp50220": "iso-2022-jp",
    "cp50221": "iso-2022-jp",
    "cp50222": "iso-2022-jp",
}
_LATIN_LIKE = frozenset({"cp1252", "cp1254", "cp874"})
# Python codecs that are not character encodings of mail text, or are unsafe to run on labels from strangers.
_LATIN_CODEPAGES = frozenset(
    {
        "cp1250", "cp1252", "cp1254", "cp1257", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4", "iso8859_9",
        "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16", "mac_roman", "mac_latin2", "cp850",
        "cp437",
    }
)  # fmt: skip
_REFUSED = frozenset(
    {"unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined", "mbcs", "oem", "charmap"}
)
_SNIFF_SAMPLE = 64 * 1024
_ASCII_BYTES = bytes(range(128))
_DECODED_NON_ASCII = re.compile("[^\x00-\x7f\ufffd]")
_ESC = 0x1B


def text_codec(label: str | None) -> codecs.CodecInfo | None:
    """The Python codec for a charset label taken from a stranger, or `None` when it is not allowed.

    Allowed: character encodings only (`_is_text_encoding`), labels of at most 40 characters, none of the
    codecs that are not mail text or run arbitrary transformations (`rot13`, `zlib_codec`, `bz2_codec`,
    `quopri`, `base64`, `unicode_escape`, `idna`, `punycode`...). Used for XML declarations, data
    URL charsets and MIME charsets alike.
    """
    if not label or not isinstance(label, str):
        return None
    name = label.strip().strip("\"'").strip().lower()
    if not name or len(name) > 40 or not name.isascii():
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name.replace("-", "_") in _REFUSED:
        return None
    return info


# The codecs Python ships are the modules of the `encodings` package, reached by name or alias. Testing a
# label against them first keeps an unknown label from costing `codecs.lookup` an import attempt along
# `sys.path` (about 15 microseconds, once per distinct label of a hostile header).
_NOT_CODEC_CHAR = re.compile(r"[^A-Za-z0-9.]+")
_ENCODING_MODULES = frozenset(module.name for module in pkgutil.iter_modules(encodings.__path__))


def _may_be_codec(name: str) -> bool:
    """Whether `codecs.lookup(name)` can find one of Python's own codecs (as its search function would)."""
    # What `encodings.normalize_encoding` does, in C for ASCII names.
    ascii_name = name.isascii()
    normalized = _NOT_CODEC_CHAR.sub("_", name).strip("_") if ascii_name else encodings.normalize_encoding(name)
    aliases = encodings.aliases.aliases
    candidates = (aliases.get(normalized), aliases.get(normalized.replace(".", "_")), normalized)
    return any(candidate in _ENCODING_MODULES for candidate in candidates if candidate)


@functools.lru_cache(maxsize=512)
def normalize_charset(label: str | None) -> str | None:
    """Map a declared charset label to the codec name ticketmail decodes it with, or `None` if unusable.

    The result is a superset codec where mail clients are known to write more than the label allows
    (`gb2312` -> `gb18030`), `"iso-2022-jp"` for the ISO-2022-JP family, or Python's canonical codec
    name. Unknown labels and non-text codecs (`rot13`, `zlib`, `unicode_escape`) give `None`.
    """
    if not label:
        return None
    name = label.strip().strip("\"'").strip().lower()
    if "*" in name:  # RFC 2231 language suffix, "utf-8*en"
        name = name.split("*", 1)[0]
    if not name or len(name) > 40:
        return None
    mapped = _SUPERSETS.get(name)
    if mapped is not None:
        return mapped
    if not _may_be_codec(name):
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    canonical = info.name
    if canonical.replace("-", "_") in _REFUSED or not getattr(info, "_is_text_encoding", True):
        return None
    mapped = _SUPERSETS.get(canonical.replace("_", "-"))
    return mapped or canonical


def _has_utf8_multibyte(data: bytes) -> bool:
    """True when `data` is valid UTF-8 and contains at least one non-ASCII character."""
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _cp1252_or_latin1(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        # Five bytes are undefined in cp1252; latin-1 maps them to C1 controls and never fails.
        return data.decode("latin-1"), "iso-8859-1"


def _jis_to_sjis(j1: int, j2: int) -> tuple[int, int]:
    """Convert one JIS X 0208 code (row/cell bytes 0x21..0x7E) to its Shift_JIS bytes."""
    if j1 & 1:
        s2 = j2 + 0x1F
        if s2 >= 0x7F:
            s2 += 1
    else:
        s2 = j2 + 0x7E
    s1 = ((j1 - 0x21) >> 1) + 0x81
    if s1 > 0x9F:
        s1 += 0x40
    return s1, s2


_ISO2022_TOKEN = re.compile(rb"\x1b(?:\$[B@]|\([BJHI]|\$\([DQO])?|[\x0e\x0f]|[\r\n]|[^\x1b\x0e\x0f\r\n]+")
_JIS_PAIRS = re.compile(rb"((?:[\x21-\x7e][\x21-\x7e])+)|(.)", re.S)
_KANA_TABLE = bytes(b + 0x80 if 0x21 <= b <= 0x5F else b for b in range(256))
_JIS_TABLE: dict[int, str] = {}
_DENSE_ESCAPES_MIN = 4096


def _jis_table() -> dict[int, str]:
    """JIS X 0208 code (row byte << 8 | cell byte) -> the character cp932 gives its Shift_JIS bytes."""
    if not _JIS_TABLE:
        for j1 in range(0x21, 0x7F):
            for j2 in range(0x21, 0x7F):
                _JIS_TABLE[j1 << 8 | j2] = bytes(_jis_to_sjis(j1, j2)).decode("cp932", "replace")
    return _JIS_TABLE


def _jis_run(run: bytes, out: list[str]) -> None:
    for match in _JIS_PAIRS.finditer(run):
        pairs = match.group(1)
        if pairs is not None:
            # Each pair read as one UTF-16 code unit, then mapped in C by str.translate.
            out.append(pairs.decode("utf-16-be").translate(_jis_table()))
        else:
            byte = match.group(2)[0]
            out.append(chr(byte) if byte < 0x80 else "\ufffd")


def decode_iso2022jp_superset(data: bytes) -> str:
    """Decode ISO-2022-JP the way Microsoft's CP50220/CP50221 do: a superset of RFC 1468.

    Two-byte runs (`ESC $ B`, `ESC $ @`) are converted to Shift_JIS and decoded with `cp932`, so NEC
    row 13 ("①", "㈱", "№") and the IBM extensions decode; `ESC ( I` and SO/SI runs are half-width katakana;
    `ESC ( J` is JIS-Roman (read as ASCII). Undecodable bytes and unknown escapes become U+FFFD. Linear in
    `len(data)`: the input is cut into escape sequences and runs by one regular expression, and each run
    is converted in bulk (`bytes.translate`, `str.translate`), not byte by byte. Text of more than 4 KiB
    with more than one escape per 8 bytes is noise: Python's lenient `iso2022_jp_ext` decodes it.
    """
    if len(data) > _DENSE_ESCAPES_MIN and data.count(b"\x1b") * 8 > len(data):
        # More than one escape sequence per 8 bytes is not Japanese text but noise (or an attack on the
        # per-run work below): the C codec, lenient, decodes it at once.
        return data.decode("iso2022_jp_ext", "replace")
    out: list[str] = []
    mode = "ascii"
    shifted = False
    for match in _ISO2022_TOKEN.finditer(data):
        token = match.group(0)
        first = token[0]
        if first == _ESC:
            seq = token[1:]
            if seq in (b"$B", b"$@", b"$(D", b"$(Q", b"$(O"):
                mode = "jis"  # JIS X 0212/0213 designations: best effort through cp932
            elif seq == b"(I":
                mode = "kana"
            elif seq in (b"(B", b"(J", b"(H"):
                mode = "ascii"
            else:
                out.append("\ufffd")
        elif first == 0x0E:
            shifted = True
        elif first == 0x0F:
            shifted = False
        elif first in (0x0A, 0x0D):
            # Line ends reset to ASCII in well-formed text; tolerate writers that forget ESC ( B.
            out.append(chr(first))
            mode = "ascii"
        elif shifted or mode == "kana":
            out.append(token.translate(_KANA_TABLE).decode("cp932", "replace"))
        elif mode == "jis":
            _jis_run(token, out)
        else:
            out.append(token.decode("cp932", "replace"))
    return "".join(out)


def _decode_iso2022jp(data: bytes) -> tuple[str, str]:
    if _ESC not in data and not data.isascii():
        # Labeled ISO-2022-JP but 8-bit: the sender meant Shift_JIS (or UTF-8).
        if _has_utf8_multibyte(data):
            return data.decode("utf-8"), "utf-8"
        try:
            return data.decode("cp932"), "cp932"
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("iso2022_jp"), "iso-2022-jp"
    except UnicodeDecodeError:
        pass
    return decode_iso2022jp_superset(data), "cp50220"


def _sniff(data: bytes) -> tuple[str, str]:
    if _ESC in data:
        if b"\x1b$B" in data or b"\x1b$@" in data or b"\x1b(I" in data:
            return _decode_iso2022jp(data)
        if b"\x1b$)C" in data:
            try:
                return data.decode("iso2022_kr"), "iso2022_kr"
            except UnicodeDecodeError:
                pass
    if data.isascii():
        return data.decode("ascii"), "us-ascii"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    sample = data[:_SNIFF_SAMPLE]
    high = len(sample.translate(None, _ASCII_BYTES))
    if high < 8 or high * 10 < len(sample) or len(sample) < MIN_DETECT_BYTES or not _take_detection():
        # Mostly ASCII with a few 8-bit bytes: detectors guess wildly (cp1006, mac_cyrillic) on so little
        # evidence, while Western text with a few accents is by far the common case. Short samples and an
        # exhausted per-message budget take the same path.
        return _cp1252_or_latin1(data)
    best = charset_normalizer.from_bytes(sample).best()
    if best is not None:
        encoding = normalize_charset(best.encoding)
        if encoding is not None and encoding.replace("-", "_") in _LATIN_CODEPAGES:
            # Telling Latin code pages apart on a short text is guesswork; Western mail is cp1252 by far.
            return _cp1252_or_latin1(data)
        if encoding is not None and encoding != "iso-2022-jp":
            try:
                return data.decode(encoding), encoding
            except (UnicodeDecodeError, LookupError):
                pass
    return _cp1252_or_latin1(data)


def _valid(text: str) -> str:
    """Replace lone surrogates (some codecs, e.g. UTF-7, can produce them) so the result encodes as UTF-8."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def decode_text(data: bytes, declared: str | None) -> tuple[str, str, bool]:
    """Decode `data` labeled `declared` (or unlabeled) to text.

    Returns `(text, codec_used, trusted)`: `trusted` is false when the declared label was missing,
    unknown or wrong and the codec was found by a fallback. Never raises.
    """
    codec = normalize_charset(declared)
    if codec is None:
        text, used = _sniff(data)
        return _valid(text), used, False
    if data.isascii() and codec != "iso-2022-jp" and not codec.startswith(("utf-16", "utf-32", "utf_16", "utf_32")):
        return data.decode("ascii"), codec, True
    if codec == "iso-2022-jp":
        text, used = _decode_iso2022jp(data)
        return _valid(text), used, used in ("iso-2022-jp", "cp50220")
    if codec in _LATIN_LIKE and _has_utf8_multibyte(data):
        return data.decode("utf-8"), "utf-8", False
    try:
        return _valid(data.decode(codec)), codec, True
    except (UnicodeError, LookupError):
        pass
    if codec == "utf-8":
        # Mostly UTF-8 with a few broken sequences (a truncated line, a bad copy/paste): keep UTF-8.
        text = data.decode("utf-8", "replace")
        if _DECODED_NON_ASCII.search(text):
            return _valid(text), "utf-8", False
    if codec in _LATIN_LIKE:
        text, used = _cp1252_or_latin1(data)
        return text, used, False
    text, used = _sniff(data)
    return _valid(text), used, False
