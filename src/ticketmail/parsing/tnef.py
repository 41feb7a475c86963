"""Unpack Outlook's `winmail.dat` (TNEF, `application/ms-tnef`) into the files it carries.

Outlook and Exchange send "rich text" mail as a TNEF blob (MS-OXTNEF) instead of MIME parts; clients outside
the Microsoft world show a useless `winmail.dat` and the customer's real attachments are lost to the
helpdesk. tnefparse reads the blob; this module turns its attachments into ordinary files and exposes the
message body TNEF may carry (plain text or HTML) for when the MIME parts have none.
"""

from __future__ import annotations

import attrs

__all__ = ["TnefContent", "is_tnef", "unpack_tnef"]

_SIGNATURE = b"\x78\x9f\x3e\x22"


@attrs.frozen
class TnefContent:
    """What a TNEF blob contained: files as `(name, data)` pairs, and optional bodies."""

    files: tuple[tuple[str, bytes], ...] = ()
    text: str | None = None
    html: str | None = None


def is_tnef(content_type: str, filename: str | None, data: bytes) -> bool:
    """True when a part is a TNEF blob (by type, by the `winmail.dat` name, and by its signature)."""
    named = (filename or "").lower() in ("winmail.dat", "win.dat")
    typed = content_type in ("application/ms-tnef", "application/vnd.ms-tnef")
    return (typed or named) and data.startswith(_SIGNATURE)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        for codec in ("utf-8", "cp1252"):
            try:
                return value.decode(codec).rstrip("\x00")
            except UnicodeDecodeError:
                continue
        return value.decode("latin-1").rstrip("\x00")
    if isinstance(value, str):
        return value.rstrip("\x00")
    return None


def unpack_tnef(data: bytes) -> TnefContent | None:
    """Read a TNEF blob; `None` when it cannot be read (the caller keeps `winmail.dat` as it is)."""
    try:
        from tnefparse.tnef import TNEF

        parsed = TNEF(data, do_checksum=False)
        files: list[tuple[str, bytes]] = []
        for attachment in parsed.attachments:
            payload = attachment.data
            if not isinstance(payload, bytes):
                continue
            name = _text(attachment.long_filename()) or _text(attachment.name) or ""
            files.append((name, payload))
        return TnefContent(files=tuple(files), text=_text(parsed.body), html=_text(parsed.htmlbody))
    except Exception:  # tnefparse raises many kinds of errors on bad input; the caller records a defect
        return None
