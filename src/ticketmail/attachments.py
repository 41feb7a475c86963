"""Attachment policy: which files a ticket keeps, for mail and API payloads alike.

A help desk receives files from anyone who can send mail, so what it stores (and later shows to staff) is
checked against an explicit policy:

* allowed and denied media types (patterns such as `image/*`) and file name extensions;
* a per-file size limit, a per-message total and a per-message file count;
* the type is checked twice: as **declared** (the MIME part's `Content-Type`, the payload's `type`) and as
  **sniffed** from the first bytes (magic numbers for executables, archives, office documents, PDF, images,
  HTML and scripts), so `setup.exe` declared as `image/png` is still an executable;
* ZIP archives (and office documents, which are ZIP files) are opened far enough to read their member names,
  and attached messages (`.eml`) are scanned for the file names of their parts: a denied extension inside
  is denied like the container itself.

A file the policy refuses is **dropped** from the ticket, never the ticket: the message is still stored,
with a visible note naming the file and the reason appended to its text, a
`Reason` (`attachment.<code>`) on the outcome and in the audit record, and
(for mail) the raw message is kept whole in the backend's quarantine with reason `attachment_dropped`.
Inline `cid:` images follow the same policy as any other file.

Use it from Python:

```python
policy = AttachmentPolicy(denied_types=("application/x-msdownload",), max_file_size=5 * 1024 * 1024)
result = policy.apply(email.attachments)
result.kept, result.rejected, result.note()
```

The `Pipeline` applies it when given `attachments=policy`; the CLI reads it
from the `[attachments]` table of the configuration file (`docs/configuration.md`).
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ticketmail._validators import at_least, optional
from ticketmail.decision import Reason
from ticketmail.errors import ConfigError
from ticketmail.model import Attachment

__all__ = [
    "DEFAULT_DENIED_EXTENSIONS",
    "DEFAULT_DENIED_TYPES",
    "AttachmentPolicy",
    "PolicyResult",
    "Rejection",
    "sniff",
]

DEFAULT_DENIED_TYPES: tuple[str, ...] = (
    "application/x-msdownload",
    "application/x-dosexec",
    "application/vnd.microsoft.portable-executable",
    "application/x-executable",
    "application/x-elf",
    "application/x-sharedlib",
    "application/x-mach-binary",
    "application/x-msi",
    "application/x-ms-shortcut",
    "application/java-archive",
    "application/java-vm",
    "application/x-sh",
    "text/x-shellscript",
    "application/x-bat",
    "application/hta",
)
"""Executable content refused by default (as sniffed or declared)."""

DEFAULT_DENIED_EXTENSIONS: tuple[str, ...] = (
    "exe", "com", "scr", "pif", "bat", "cmd", "cpl", "dll", "msi", "msp", "jar", "js", "jse", "vbs",
    "vbe", "wsf", "wsh", "hta", "ps1", "psm1", "lnk", "reg", "scf", "sys",
)  # fmt: skip
"""File name extensions refused by default (Windows executables and scripts, the usual malware carriers)."""

_PATTERN_RE = re.compile(r"(?:\*/\*|[!#$%&'+\-.^_`|~0-9a-z]+/(?:\*|[!#$%&'+\-.^_`|~0-9a-z]+))")
_EXT_RE = re.compile(r"[0-9a-z][0-9a-z_+\-]{0,19}")
_ZIP_MEMBER_LIMIT = 10_000
# File names declared inside an attached message (`filename="x.exe"`, `name=x.exe`, RFC 2231 `*0*=`):
# read from the raw text of the message, without parsing it, in one bounded pass.
_NESTED_NAME_RE = re.compile(rb"""(?i)(?:^|[;\s])(?:file)?name(?:\*[0-9]*\*?)?\s*=\s*"?([^"\r\n;]{1,255})""")
_NESTED_NAME_LIMIT = 1000
_OFFICE_TYPES = {
    "word/": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xl/": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt/": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "application/x-executable"),
    (b"\xfe\xed\xfa\xce", "application/x-mach-binary"),
    (b"\xfe\xed\xfa\xcf", "application/x-mach-binary"),
    (b"\xce\xfa\xed\xfe", "application/x-mach-binary"),
    (b"\xcf\xfa\xed\xfe", "application/x-mach-binary"),
    (b"\xca\xfe\xba\xbe", "application/java-vm"),  # also a Mach-O universal binary: executable either way
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"\x1f\x8b", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (b"L\x00\x00\x00\x01\x14\x02\x00", "application/x-ms-shortcut"),
    (b"{\\rtf", "application/rtf"),
    (b"%!PS", "application/postscript"),
    (b"#!", "text/x-shellscript"),
)
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<iframe", b"<meta", b"<hta:")


def _zip_type(data: bytes) -> str:
    names = _zip_names(data)
    if names is None:
        return "application/zip"
    if "META-INF/MANIFEST.MF" in names:
        return "application/java-archive"
    if "[Content_Types].xml" in names:
        for prefix, media in _OFFICE_TYPES.items():
            if any(name.startswith(prefix) for name in names):
                return media
    if "mimetype" in names and "META-INF/manifest.xml" in names:
        return "application/vnd.oasis.opendocument"
    return "application/zip"


def _zip_names(data: bytes) -> list[str] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except Exception:  # any broken archive is just "a zip we cannot list"
        return None
    return [info.filename for info in infos[:_ZIP_MEMBER_LIMIT]]


def _is_message(attachment: Attachment, sniffed: str | None) -> bool:
    return (
        attachment.content_type == "message/rfc822"
        or sniffed == "message/rfc822"
        or (
            _extension(attachment.filename) in ("eml", "msg")
            and attachment.content_type.startswith(("message/", "text/"))
        )
    )


def _nested_names(data: bytes) -> list[str]:
    """File names an attached message declares for its parts (quoted or not; RFC 2231 names undecoded)."""
    names: list[str] = []
    for match in _NESTED_NAME_RE.finditer(data):
        value = match.group(1).strip().decode("latin-1")
        if "''" in value:  # RFC 2231: charset'language'percent-encoded
            from urllib.parse import unquote

            value = unquote(value.split("''", 1)[1], encoding="latin-1")
        names.append(value)
        if len(names) >= _NESTED_NAME_LIMIT:
            break
    return names


def sniff(data: bytes) -> str | None:
    """The media type the content of `data` shows (magic numbers), or `None` when it shows none.

    Recognises Windows (PE, `MZ`), ELF and Mach-O executables, Java classes and archives, Windows
    shortcuts, shell scripts (`#!`), ZIP and the office formats inside it (OOXML, OpenDocument), OLE2
    (legacy Office, MSI), PDF, PNG, JPEG, GIF, WebP, BMP, TIFF, gzip, 7-Zip, RAR, RTF, PostScript, SVG and
    HTML (a document starting with an HTML or script tag, after whitespace and a BOM).
    """
    head = data[:16]
    if head.startswith(b"MZ"):
        return "application/x-msdownload"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_type(data)
    if head.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"BM") and len(data) >= 14 and data[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    for magic, media in _MAGIC:
        if head.startswith(magic):
            return media
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(_HTML_STARTS):
        return "text/html"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "image/svg+xml"
    return None


def _patterns(value: object, *, where: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise ConfigError(f"{where}: expected a list of media types, got {type(value).__name__}", field=where)
    out: list[str] = []
    for item in items:
        text = str(item).strip().lower()
        if not _PATTERN_RE.fullmatch(text):
            raise ConfigError(
                f"{where}: {text!r} is not a media type pattern (type/subtype, type/* or */*)", field=where
            )
        out.append(text)
    return tuple(out)


def _extensions(value: object, *, where: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise ConfigError(f"{where}: expected a list of extensions, got {type(value).__name__}", field=where)
    out: list[str] = []
    for item in items:
        text = str(item).strip().lower().lstrip(".")
        if not _EXT_RE.fullmatch(text):
            raise ConfigError(f"{where}: {str(item)[:40]!r} is not a file name extension", field=where)
        out.append(text)
    return tuple(out)


def _allowed_types(value: object) -> tuple[str, ...]:
    return _patterns(value, where="attachments.allowed_types")


def _denied_types(value: object) -> tuple[str, ...]:
    return _patterns(value, where="attachments.denied_types")


def _allowed_extensions(value: object) -> tuple[str, ...]:
    return _extensions(value, where="attachments.allowed_extensions")


def _denied_extensions(value: object) -> tuple[str, ...]:
    return _extensions(value, where="attachments.denied_extensions")


_SIZE = optional(at_least(0, "attachments"))
"""A limit in bytes or files: an integer >= 0, or `None` for no limit."""


def _matches(media: str, pattern: str) -> bool:
    if pattern == "*/*":
        return True
    if pattern.endswith("/*"):
        return media.partition("/")[0] == pattern[:-2]
    return media == pattern


def _extension(filename: str) -> str:
    base = filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    return ext.lower() if dot and stem else ""


@attrs.frozen
class Rejection:
    """One file the policy dropped.

    Attributes:
        filename: The file's (sanitized) name.
        content_type: Its declared media type.
        sniffed_type: What its content looks like, when recognised.
        size: Its size in bytes.
        code: Why, as a stable code: `type_denied`, `type_not_allowed`, `extension_denied`,
            `extension_not_allowed`, `archive_member_denied`, `too_large`, `message_too_large`,
            `too_many`.
        message: The reason as a sentence.
        inline: Whether it was an inline part (a `cid:` image).
    """

    filename: str
    content_type: str
    sniffed_type: str | None
    size: int
    code: str
    message: str
    inline: bool = False

    def reason(self) -> Reason:
        """The `Reason` recorded on the outcome and in the audit log."""
        return Reason(f"attachment.{self.code}", self.message, value=self.filename)


@attrs.frozen
class PolicyResult:
    """What `AttachmentPolicy.apply()` decided: the files kept, in order, and the files dropped."""

    kept: tuple[Attachment, ...]
    rejected: tuple[Rejection, ...] = ()

    def note(self) -> str:
        """A note for the ticket's text naming every dropped file and why; `""` when nothing was dropped."""
        if not self.rejected:
            return ""
        lines = [f"[ticketmail: {len(self.rejected)} attachment(s) removed by the attachment policy]"]
        lines += [f"- {r.filename} ({r.content_type}, {r.size} bytes): {r.message}" for r in self.rejected]
        return "\n".join(lines)

    def reasons(self) -> tuple[Reason, ...]:
        """One reason per dropped file."""
        return tuple(r.reason() for r in self.rejected)


@attrs.frozen
class AttachmentPolicy:
    """Which attachments a ticket keeps. The defaults refuse executables and scripts and keep the rest.

    A file is kept only when every check passes; each check looks at the declared type **and** the sniffed
    type (a type that is not recognised from the content is not checked a second time).

    Attributes:
        allowed_types: Media type patterns a file's types must match (`image/*`, `application/pdf`);
            default `*/*` (everything not denied).
        denied_types: Media type patterns that are refused even when allowed (default: executables,
            `DEFAULT_DENIED_TYPES`).
        allowed_extensions: When not empty, only names with one of these extensions are kept (no dot,
            case-insensitive); a name without an extension is then refused.
        denied_extensions: Extensions refused (default `DEFAULT_DENIED_EXTENSIONS`).
        max_file_size: Largest file kept, in bytes; `None`: no limit.
        max_message_size: Total bytes of the files kept per message; files that no longer fit are dropped
            (in message order); `None`: no limit.
        max_files: Files kept per message; `None`: no limit.
        sniff_content: Check the type the content shows as well as the declared one (default true).
        inspect_archives: Refuse a ZIP archive, or an attached message (`message/rfc822`), holding a file
            with a denied extension (default true).
        keep_raw: When a file of a mail was dropped, keep the raw message in the backend's quarantine
            (reason code `attachment_dropped`) so an administrator can recover a false positive; the
            message itself is processed and acknowledged as usual (default true).
    """

    allowed_types: tuple[str, ...] = attrs.field(default=("*/*",), converter=_allowed_types)
    denied_types: tuple[str, ...] = attrs.field(default=DEFAULT_DENIED_TYPES, converter=_denied_types)
    allowed_extensions: tuple[str, ...] = attrs.field(default=(), converter=_allowed_extensions)
    denied_extensions: tuple[str, ...] = attrs.field(default=DEFAULT_DENIED_EXTENSIONS, converter=_denied_extensions)
    max_file_size: int | None = attrs.field(default=None, validator=_SIZE)
    max_message_size: int | None = attrs.field(default=None, validator=_SIZE)
    max_files: int | None = attrs.field(default=None, validator=_SIZE)
    sniff_content: bool = True
    inspect_archives: bool = True
    keep_raw: bool = True

    @classmethod
    def allow_all(cls) -> AttachmentPolicy:
        """A policy that keeps every file (no type, extension or size checks)."""
        return cls(denied_types=(), denied_extensions=(), inspect_archives=False, sniff_content=False)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> AttachmentPolicy:
        """A policy from configuration data (the `[attachments]` table); keys are the attribute names.

        Raises:
            ConfigError: an unknown key or a bad value, naming `source`, the table and the key.
        """
        known = [f.name for f in attrs.fields(cls)]
        for key, value in data.items():
            if key not in known:
                from ticketmail.config import did_you_mean

                raise ConfigError(
                    f"{source}: [attachments] {key}: unknown key{did_you_mean(key, known)}",
                    field=f"attachments.{key}",
                )
            if key in ("sniff_content", "inspect_archives", "keep_raw") and not isinstance(value, bool):
                raise ConfigError(
                    f"{source}: [attachments] {key}: expected true or false, got {type(value).__name__}",
                    field=f"attachments.{key}",
                )
        try:
            return cls(**dict(data))
        except ConfigError as exc:
            raise ConfigError(f"{source}: [attachments] {exc.message}", field=exc.field) from exc

    # -- checks ------------------------------------------------------------------------------------------

    def _type_problem(self, media: str, what: str) -> tuple[str, str] | None:
        if any(_matches(media, p) for p in self.denied_types):
            return "type_denied", f"{what} type {media} is not accepted"
        if not any(_matches(media, p) for p in self.allowed_types):
            return "type_not_allowed", f"{what} type {media} is not among the allowed types"
        return None

    def _ext_problem(self, filename: str, ext: str, what: str) -> tuple[str, str] | None:
        if ext and ext in self.denied_extensions:
            return "extension_denied", f"{what} extension .{ext} is not accepted"
        if self.allowed_extensions and ext not in self.allowed_extensions:
            shown = f".{ext}" if ext else "(none)"
            return "extension_not_allowed", f"{what} extension {shown} is not among the allowed extensions"
        return None

    def check(self, attachment: Attachment) -> tuple[str, str] | None:
        """Why `attachment` is refused on its own (`(code, message)`), or `None` when it may be kept.

        Counts and the per-message total are checked by `apply()`, which sees every file of a message.
        """
        return self._check(attachment)[0]

    def _check(self, attachment: Attachment) -> tuple[tuple[str, str] | None, str | None]:
        sniffed = sniff(attachment.data) if self.sniff_content else attachment.sniffed_type
        if self.max_file_size is not None and attachment.size > self.max_file_size:
            limit = self.max_file_size
            return ("too_large", f"{attachment.size} bytes is more than the limit of {limit} per file"), sniffed
        problem = self._ext_problem(attachment.filename, _extension(attachment.filename), "file name")
        if problem is None:
            problem = self._type_problem(attachment.content_type, "declared")
        if problem is None and self.sniff_content and sniffed is not None and sniffed != attachment.content_type:
            problem = self._type_problem(sniffed, "content")
        if problem is None and self.inspect_archives and _is_message(attachment, sniffed):
            for name in _nested_names(attachment.data):
                member = self._ext_problem(name, _extension(name), f"attached message's file {name[:80]!r}:")
                if member is not None and member[0] == "extension_denied":
                    problem = ("archive_member_denied", member[1])
                    break
        if problem is None and self.inspect_archives and attachment.data[:4] == b"PK\x03\x04":
            for name in _zip_names(attachment.data) or ():
                member = self._ext_problem(name, _extension(name), f"archive member {name[:80]!r}:")
                if member is not None and member[0] == "extension_denied":
                    problem = ("archive_member_denied", member[1])
                    break
        return problem, sniffed

    def apply(self, attachments: Iterable[Attachment]) -> PolicyResult:
        """Split `attachments` into the files kept and the files dropped (with reasons), in order."""
        kept: list[Attachment] = []
        rejected: list[Rejection] = []
        total = 0
        for attachment in attachments:
            problem, sniffed = self._check(attachment)
            if problem is None and self.max_files is not None and len(kept) >= self.max_files:
                problem = ("too_many", f"more than {self.max_files} files in one message")
            if (
                problem is None
                and self.max_message_size is not None
                and total + attachment.size > self.max_message_size
            ):
                problem = (
                    "message_too_large",
                    f"the files of this message would exceed {self.max_message_size} bytes together",
                )
            if problem is None:
                kept.append(attachment)
                total += attachment.size
                continue
            rejected.append(
                Rejection(
                    filename=attachment.filename,
                    content_type=attachment.content_type,
                    sniffed_type=sniffed,
                    size=attachment.size,
                    code=problem[0],
                    message=problem[1],
                    inline=attachment.disposition == "inline",
                )
            )
        return PolicyResult(tuple(kept), tuple(rejected))
