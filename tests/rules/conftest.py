"""Helpers for the rules tests: turn raw bytes into an InboundEmail.

Uses ``ticketmail.parsing.mime.parse_email`` when it exists; until then a minimal stdlib adapter that fills
only what the rules read (headers, addresses, subject, text, report parts). The adapter is test-only.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from collections.abc import Callable
from email.message import Message

import pytest

from ticketmail.model import Address, InboundEmail, ReportPart


def _addresses(values: list[str]) -> tuple[Address, ...]:
    out = []
    for name, addr in email.utils.getaddresses(values):
        if "@" in addr:
            local, _, domain = addr.rpartition("@")
            out.append(Address(email=f"{local}@{domain.lower()}", name=name or None))
    return tuple(out)


def _text_of(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return str(part.get_payload())
    charset = part.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1")


def _header_block(msg: Message) -> str:
    return "\n".join(f"{k}: {v}" for k, v in msg.items())


def adapter_parse(raw: bytes) -> InboundEmail:
    """Minimal stdlib parse (test-only fallback)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    headers = tuple((k, str(email.header.make_header(email.header.decode_header(v)))) for k, v in msg.items())

    def first(name: str) -> str | None:
        for k, v in headers:
            if k.lower() == name:
                return v
        return None

    text_parts: list[str] = []
    report_parts: list[ReportPart] = []
    stack: list[tuple[Message, bool]] = [(msg, False)]
    while stack:
        part, inside = stack.pop(0)
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            blocks = part.get_payload()
            text = "\n\n".join(_header_block(b) for b in blocks) if isinstance(blocks, list) else str(blocks)
            report_parts.append(ReportPart(content_type=ctype, text=text))
        elif ctype in ("message/rfc822",):
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                report_parts.append(ReportPart(content_type=ctype, text=_header_block(inner[0])))
        elif ctype in ("text/rfc822-headers", "message/feedback-report"):
            report_parts.append(ReportPart(content_type=ctype, text=_text_of(part)))
        elif part.is_multipart():
            stack[0:0] = [(p, inside) for p in part.get_payload()]  # type: ignore[union-attr]
        elif ctype == "text/plain" and not inside:
            text_parts.append(_text_of(part))
    rp = first("return-path")
    mid = (first("message-id") or "").strip().strip("<>")
    frm = _addresses([first("from") or ""])
    return InboundEmail(
        message_id=mid or "generated@local",
        message_id_generated=not mid,
        subject=first("subject") or "",
        from_=frm[0] if frm else None,
        to=_addresses([v for k, v in headers if k.lower() == "to"]),
        cc=_addresses([v for k, v in headers if k.lower() == "cc"]),
        return_path=None if rp is None else rp.strip().strip("<>").strip(),
        text="\n".join(text_parts),
        content_type=msg.get_content_type(),
        report_type=(msg.get_param("report-type") or None) if msg.get_content_type() == "multipart/report" else None,  # type: ignore[arg-type]
        report_parts=tuple(report_parts),
        headers=headers,
        size=len(raw),
    )


def _real_parser() -> Callable[[bytes], InboundEmail] | None:
    try:
        from ticketmail.parsing.mime import parse_email
    except ImportError:
        return None
    return parse_email  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def parse() -> Callable[[bytes], InboundEmail]:
    """Raw bytes -> InboundEmail, with the project's parser when available."""
    return _real_parser() or adapter_parse
