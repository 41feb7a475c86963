r"""Safe attachment file names and content sniffing.

A file name in a MIME header is attacker-controlled: it may hold path separators (`../../etc/passwd`,
`C:\evil.exe`), control characters, bidi overrides that disguise an extension (an RLO character before "gpj.exe"),
Windows reserved device names or thousands of characters. `safe_filename()` keeps what a person would
recognise and removes the rest; a missing name gets a fallback built from the media type
(`attachment-2.png`). `sniff_type()` looks at the first bytes (magic numbers) so that rules can
compare the declared type with what the bytes are.
"""

from __future__ import annotations

import mimetypes
import posixpath
import unicodedata

__all__ = ["extension_for", "safe_filename", "sniff_type"]

_MAX_NAME = 200
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)
_EXTENSIONS = {
    "message/rfc822": ".eml",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/pjpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "application/pdf": ".pdf",
    "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat",
    "text/rfc822-headers": ".txt",
    "message/delivery-status": ".txt",
    "message/feedback-report": ".txt",
    "message/disposition-notification": ".txt",
    "application/pgp-signature": ".asc",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/octet-stream": ".bin",
}
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (b"\x78\x9f\x3e\x22", "application/ms-tnef"),
    (b"{\\rtf", "application/rtf"),
    (b"BEGIN:VCALENDAR", "text/calendar"),
    (b"BEGIN:VCARD", "text/vcard"),
    (b"MZ", "application/x-msdownload"),
    (b"\x7fELF", "application/x-executable"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"%!PS", "application/postscript"),
    (b"<?xml", "application/xml"),
)


def extension_for(content_type: str) -> str:
    """A file extension (with the dot) for a media type; `.bin` when nothing fits."""
    known = _EXTENSIONS.get(content_type)
    if known:
        return known
    guessed = mimetypes.guess_extension(content_type, strict=False)
    return guessed or ".bin"


def _clean_char(ch: str) -> str:
    category = unicodedata.category(ch)
    if category[0] == "C" or category in ("Zl", "Zp"):  # controls, format (bidi overrides), unassigned
        return ""
    if ch in '/\\:*?"<>|':
        return "_"
    if category == "Zs":
        return " "
    return ch


def safe_filename(name: str | None, content_type: str, index: int) -> str:
    r"""Make `name` safe to store and show; a fallback `attachment-<index><ext>` when nothing is left.

    Path components are dropped (both `/` and `\`), control and bidi-format characters removed, other
    reserved characters replaced with `_`, whitespace collapsed, leading dots removed (no hidden files, no
    `..`), Windows device names prefixed, and the length capped at 200 characters keeping the extension.
    """
    if name:
        name = unicodedata.normalize("NFC", name)
        base = posixpath.basename(name.replace("\\", "/"))
        cleaned = "".join(_clean_char(ch) for ch in base)
        cleaned = " ".join(cleaned.split()).strip(" .")
        if cleaned:
            stem, dot, ext = cleaned.rpartition(".")
            if not dot:
                stem, ext = cleaned, ""
            if stem.lower() in _RESERVED:
                cleaned = f"_{cleaned}"
            if len(cleaned) > _MAX_NAME:
                ext = f".{ext[:20]}" if dot else ""
                cleaned = cleaned[: _MAX_NAME - len(ext)].rstrip(" .") + ext
            return cleaned
    return f"attachment-{index}{extension_for(content_type)}"


def sniff_type(data: bytes) -> str | None:
    """The media type the first bytes of `data` announce (magic numbers), or `None` when unknown."""
    head = data[:16]
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    lowered = data[:512].lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    if lowered.startswith(b"from:") or lowered.startswith(b"received:") or lowered.startswith(b"return-path:"):
        return "message/rfc822"
    return None
