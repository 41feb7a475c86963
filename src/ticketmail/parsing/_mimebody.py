"""Bodies of a MIME tree (RFC 2046): text parts, alternatives, related resources, reports, files.

`BodyBuilder` walks a `ticketmail.parsing.mimetree.Part` tree once and fills a `Collector`:
`multipart/alternative` keeps both the plain and the HTML alternative; `multipart/related` maps `cid:`
resources (RFC 2392) to inline attachments; `multipart/mixed` concatenates the body parts in order;
`multipart/report` (RFC 6522) fills `report_parts`; `message/rfc822` parts become `.eml` attachments
and are parsed by the caller's `InnerBuilder`; `winmail.dat` is unpacked; `text/plain; format=flowed`
(RFC 3676) is unwrapped; text/enriched is reduced to its text.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable
from typing import Literal

import attrs

from ticketmail.model import Attachment, InboundEmail, ReportPart
from ticketmail.parsing.charsets import decode_text
from ticketmail.parsing.filenames import safe_filename, sniff_type
from ticketmail.parsing.mimetree import ParseContext, Part, decode_transfer
from ticketmail.parsing.tnef import is_tnef, unpack_tnef

__all__ = ["BodyBuilder", "Collector", "InnerBuilder", "Segment", "clean_text"]

_REPORT_TYPES = frozenset(
    {"message/delivery-status", "message/feedback-report", "message/disposition-notification", "text/rfc822-headers"}
)
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.I)
_BODY_TYPES = frozenset({"text/plain", "text/html", "text/enriched", "text/richtext"})
_ENRICHED_PARAM = re.compile(r"<param>[^<]*</param>", re.I)
_ENRICHED_TAG = re.compile(r"</?[A-Za-z0-9-]{1,60}>")
_ENRICHED_BREAKS = re.compile(r"\n+")

InnerBuilder = Callable[[Part, "bytes | memoryview", int], InboundEmail]
"""Builds the `InboundEmail` of an embedded message: (its part, its bytes, the attached depth left)."""

Segment = tuple[Literal["plain", "html"], str]


@attrs.define
class Collector:
    text_segments: list[Segment] = attrs.field(factory=list)
    html_segments: list[Segment] = attrs.field(factory=list)
    attachments: list[Attachment] = attrs.field(factory=list)
    attached: list[InboundEmail] = attrs.field(factory=list)
    charsets: list[str] = attrs.field(factory=list)
    report_parts: list[ReportPart] = attrs.field(factory=list)
    report_type: str | None = None
    tnef_text: str | None = None
    tnef_html: str | None = None

    def add_body(self, kind: Literal["plain", "html"], text: str) -> None:
        self.text_segments.append((kind, text))
        self.html_segments.append((kind, text))

    def absorb_files(self, other: Collector) -> None:
        self.attachments.extend(other.attachments)
        self.attached.extend(other.attached)
        self.charsets.extend(other.charsets)
        self.report_parts.extend(other.report_parts)
        self.report_type = self.report_type or other.report_type
        self.tnef_text = self.tnef_text or other.tnef_text
        self.tnef_html = self.tnef_html or other.tnef_html


def clean_text(text: str, ctx: ParseContext, path: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
        ctx.defect("nul_in_body", "NUL characters removed from a text part", path)
    return text


def _unflow(text: str, delsp: bool) -> str:
    """Undo RFC 3676 format=flowed: join soft-broken lines of the same quote depth, remove space-stuffing.

    The pieces of a paragraph are collected in a list and joined once, so the work is linear in the text.
    """
    out: list[str] = []
    pending: list[str] = []
    pending_depth = 0

    def flush() -> None:
        out.append(">" * pending_depth + (" " if pending_depth else "") + "".join(pending))
        pending.clear()

    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        if pending and depth != pending_depth:
            flush()
        if flowed:
            if not pending:
                pending_depth = depth
            pending.append(content)
            continue
        if pending:
            pending.append(content)
            flush()
            continue
        out.append(">" * depth + (" " if depth and content else "") + content)
    if pending:
        flush()
    return "\n".join(out)


def _enriched_to_text(text: str) -> str:
    """Plain text of RFC 1896 text/enriched (and the older text/richtext): commands dropped, lines unfolded.

    In text/enriched a single line break is a space and n consecutive breaks are n-1 breaks; "<<" is "<".
    """
    text = text.replace("<<", "\x00")  # NUL never survives _clean_text, so it is free as a placeholder
    text = _ENRICHED_PARAM.sub("", text)
    text = _ENRICHED_TAG.sub("", text).replace("\x00", "<")
    return _ENRICHED_BREAKS.sub(lambda m: " " if len(m.group(0)) == 1 else "\n" * (len(m.group(0)) - 1), text)


class BodyBuilder:
    """Walks a `Part` tree once and collects bodies, files and reports (one per parse call)."""

    def __init__(self, prefer: str, ctx: ParseContext, depth_budget: int, build_inner: InnerBuilder) -> None:
        self.prefer = prefer
        self.ctx = ctx
        self.depth_budget = depth_budget
        self.build_inner = build_inner
        self.file_index = 0

    def _next_index(self) -> int:
        self.file_index += 1
        return self.file_index

    def text_of(self, part: Part, out: Collector) -> str:
        data = decode_transfer(part, self.ctx)
        declared = part.params.get("charset")
        if not declared and part.content_type == "text/html":
            # HTML parts often carry their charset only in <meta charset> / http-equiv (HTML Living Standard).
            meta = _META_CHARSET.search(data[:4096])
            declared = meta.group(1).decode("ascii") if meta else None
        text, used, trusted = decode_text(data, declared)
        if declared and not trusted:
            self.ctx.defect(
                "charset_fallback", f"declared charset {declared[:40]!r} did not fit; used {used}", part.path
            )
        elif not declared and used not in ("us-ascii",):
            self.ctx.defect("charset_missing", f"no charset declared; detected {used}", part.path)
        out.charsets.append(used)
        return clean_text(text, self.ctx, part.path)

    def walk(self, part: Part, out: Collector, *, inline_resource: bool = False) -> None:
        ctype = part.content_type
        if ctype.startswith("multipart/"):
            if part.children:  # none when the part limit was reached before its first child
                self._multipart(part, out)
        elif ctype in ("message/rfc822", "message/global"):
            self._message(part, out)
        else:
            self._leaf(part, out, inline_resource=inline_resource)

    def _multipart(self, part: Part, out: Collector) -> None:
        subtype = part.content_type.partition("/")[2]
        children = part.children
        if subtype == "alternative":
            self._alternative(children, out)
        elif subtype == "related":
            self._related(part, out)
        elif subtype == "report":
            self._report(part, out)
        elif subtype in ("signed", "encrypted"):
            # The signed content is read; signatures and encrypted parts are kept as files.
            if subtype == "signed":
                self.walk(children[0], out)
            for child in children[1:] if subtype == "signed" else children:
                self._leaf(child, out, force_attachment=True)
        else:
            for child in children:
                self.walk(child, out)

    def _related(self, part: Part, out: Collector) -> None:
        """The root part (`start`, else the first) is the body; the others are its inline resources."""
        start = part.params.get("start", "").strip().strip("<>")
        children = part.children
        root = next((c for c in children if start and c.get_text("content-id").strip("<> ") == start), None)
        root = root or children[0]
        for child in children:
            self.walk(child, out, inline_resource=child is not root)

    def _report(self, part: Part, out: Collector) -> None:
        """RFC 6522: the machine-readable parts go to `report_parts`, the rest is read as usual."""
        out.report_type = out.report_type or (part.params.get("report-type") or "").lower() or None
        for child in part.children:
            if child.content_type in _REPORT_TYPES:
                data = decode_transfer(child, self.ctx)
                text = decode_text(data, child.params.get("charset"))[0]
                out.report_parts.append(ReportPart(child.content_type, clean_text(text, self.ctx, child.path)))
            else:
                self.walk(child, out)

    def _alternative(self, children: tuple[Part, ...], out: Collector) -> None:
        subs: list[Collector] = []
        for child in children:
            sub = Collector()
            self.walk(child, sub)
            subs.append(sub)
            out.absorb_files(sub)
        with_html = [s for s in subs if any(kind == "html" for kind, _ in s.html_segments)]
        with_plain = [
            s for s in subs if s.text_segments and all(kind == "plain" for kind, _ in s.text_segments)
            and any(text.strip() for _, text in s.text_segments)
        ]  # fmt: skip
        html_choice = with_html[-1] if with_html else None
        if self.prefer == "html" and html_choice is not None:
            text_choice: Collector | None = html_choice
        else:
            text_choice = with_plain[-1] if with_plain else html_choice
        if text_choice is None:
            text_choice = next((s for s in reversed(subs) if s.text_segments), None)
        if text_choice is not None:
            out.text_segments.extend(text_choice.text_segments)
        html_source = html_choice or text_choice
        if html_source is not None:
            out.html_segments.extend(html_source.html_segments)

    def _message(self, part: Part, out: Collector) -> None:
        data = self.ctx.body_bytes(part)
        disposition, dparams = part.disposition()
        name = dparams.get("filename") or part.params.get("name")
        inner: InboundEmail | None = None
        if part.children and self.depth_budget > 0:
            inner = self.build_inner(part.children[0], data, self.depth_budget - 1)
            out.attached.append(inner)
        if not name:
            subject = inner.subject if inner is not None else ""
            name = f"{subject[:80]}.eml" if subject.strip() else None
        filename = safe_filename(name, "message/rfc822", self._next_index())
        if not filename.lower().endswith(".eml"):
            filename += ".eml"
        out.attachments.append(
            Attachment(
                filename=filename,
                content_type=part.content_type,
                data=data,
                disposition="inline" if disposition == "inline" else "attachment",
                sniffed_type=sniff_type(data),
            )
        )
        if out.report_type is not None and part.children:
            child = part.children[0]
            head = decode_text(data[: child.header_end - child.offset], None)[0]
            out.report_parts.append(ReportPart(part.content_type, clean_text(head, self.ctx, part.path).strip()))

    def _leaf(
        self, part: Part, out: Collector, *, inline_resource: bool = False, force_attachment: bool = False
    ) -> None:
        ctype = part.content_type
        disposition, dparams = part.disposition()
        name = dparams.get("filename") or part.params.get("name") or None
        if (
            not force_attachment
            and ctype in _BODY_TYPES
            and disposition != "attachment"
            and not name
            and not inline_resource
        ):
            text = self.text_of(part, out)
            if ctype in ("text/enriched", "text/richtext"):
                text = _enriched_to_text(text)
                if text.strip():
                    out.add_body("plain", text)
            elif ctype == "text/plain":
                if part.params.get("format", "").lower() == "flowed":
                    text = _unflow(text, part.params.get("delsp", "").lower() == "yes")
                if text.strip():
                    out.add_body("plain", text)
            elif text.strip():
                out.add_body("html", text)
            return
        data = decode_transfer(part, self.ctx)
        if is_tnef(ctype, name, data):
            content = unpack_tnef(data)
            if content is not None and (content.files or content.text or content.html):
                for file_name, payload in content.files:
                    guessed = mimetypes.guess_type(file_name, strict=False)[0] or "application/octet-stream"
                    out.attachments.append(self._attachment(file_name, guessed, payload, None))
                out.tnef_text = out.tnef_text or content.text
                out.tnef_html = out.tnef_html or content.html
                return
            self.ctx.defect(
                "invalid_tnef", "winmail.dat could not be unpacked (or was empty); kept as it is", part.path
            )
        content_id = part.get_text("content-id").strip().strip("<>").strip() or None
        inline = disposition == "inline" or (inline_resource and content_id is not None and disposition != "attachment")
        charset = part.params.get("charset") if ctype.startswith("text/") else None
        out.attachments.append(self._attachment(name, ctype, data, charset, content_id, inline))

    def _attachment(
        self,
        name: str | None,
        content_type: str,
        data: bytes,
        charset: str | None,
        content_id: str | None = None,
        inline: bool = False,
    ) -> Attachment:
        sniffed = sniff_type(data)
        return Attachment(
            filename=safe_filename(name, content_type, self._next_index()),
            content_type=content_type,
            data=data,
            charset=charset.lower() if charset else None,
            content_id=content_id,
            disposition="inline" if inline else "attachment",
            sniffed_type=sniffed,
        )
