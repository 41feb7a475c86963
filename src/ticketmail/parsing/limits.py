"""Caller-configurable limits on ticket payloads, with safe defaults.

A public ticket endpoint takes bytes from anyone who has (or steals) an API key, so every dimension a client
controls is bounded *before* work proportional to it is done:

* the payload size is checked before the JSON/XML parser sees a byte,
* the nesting depth is checked before (JSON) or while (XML) the document is built,
* the attachment count is checked before any attachment is decoded,
* each attachment's decoded size is computed from its encoded length before decoding it, against both the
  per-attachment limit and what is left of the total budget,
* the declared media type is matched against an allow-list before decoding.

Misconfigured limits raise `ConfigError` at construction. Exceeding a size or
count limit raises a `LimitExceededError` subclass (HTTP 413);
too deep nesting raises `NestingTooDeepError` (HTTP 400); a type outside the
allow-list raises `AttachmentTypeError` (HTTP 415).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from ticketmail._validators import at_least, positive
from ticketmail.errors import AttachmentTypeError, ConfigError

__all__ = ["MEBIBYTE", "Limits", "media_type_matches"]

MEBIBYTE = 1024 * 1024

_RFC2045_CHARS = r"[!#$%&'+\-.^_`|~0-9A-Za-z]+"
_PATTERN_RE = re.compile(rf"(?:\*/\*|{_RFC2045_CHARS}/\*|{_RFC2045_CHARS}/{_RFC2045_CHARS})")


def _to_patterns(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple, frozenset, set)):
        raise ConfigError(f"Limits.allowed_types must be a list of media type patterns, got {value!r}")
    return tuple(str(item).strip().lower() for item in value)


def _check_patterns(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    for pattern in value:
        if not _PATTERN_RE.fullmatch(pattern):
            raise ConfigError(
                f"Limits.allowed_types: {pattern!r} is not a media type pattern (expected type/subtype, type/* or */*)"
            )


def media_type_matches(media_type: str, pattern: str) -> bool:
    """Whether `media_type` (`type/subtype`, no parameters) matches `pattern` (`*/*`, `image/*`, ...).

    Matching is case-insensitive (RFC 2045 section 5.1: type and subtype names are case-insensitive).
    """
    media_type = media_type.lower()
    pattern = pattern.lower()
    if pattern == "*/*":
        return True
    if pattern.endswith("/*"):
        return media_type.partition("/")[0] == pattern[:-2]
    return media_type == pattern


@attrs.frozen
class Limits:
    """Bounds on one ticket payload. All sizes are in bytes.

    Attributes:
        max_payload_bytes: Size of the whole request body (default 25 MiB).
        max_attachments: Number of attachments (default 20).
        max_attachment_bytes: Decoded size of one attachment (default 10 MiB).
        max_total_attachment_bytes: Decoded size of all attachments together (default 20 MiB).
        allowed_types: Media type patterns an attachment's declared type must match (`image/*`,
            `application/pdf`, `*/*`); default everything, as osTicket does when no type list is set.
        max_depth: Nesting depth of the JSON or XML document (default 16; the contract itself needs 3).
    """

    max_payload_bytes: int = attrs.field(default=25 * MEBIBYTE, validator=positive("limits", integer=True))
    max_attachments: int = attrs.field(default=20, validator=at_least(0, "limits"))
    max_attachment_bytes: int = attrs.field(default=10 * MEBIBYTE, validator=at_least(0, "limits"))
    max_total_attachment_bytes: int = attrs.field(default=20 * MEBIBYTE, validator=at_least(0, "limits"))
    allowed_types: tuple[str, ...] = attrs.field(default=("*/*",), converter=_to_patterns, validator=_check_patterns)
    max_depth: int = attrs.field(default=16, validator=positive("limits", integer=True))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> Limits:
        """Build limits from configuration data (a TOML table): keys are the attribute names.

        Raises:
            ConfigError: an unknown key or a bad value, naming `source` and the key.
        """
        known = {field.name for field in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown limit(s) {unknown} (expected some of {sorted(known)})")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc.message}") from exc

    def type_allowed(self, media_type: str) -> bool:
        """Whether an attachment of `media_type` is allowed."""
        return any(media_type_matches(media_type, pattern) for pattern in self.allowed_types)

    def check_type(self, media_type: str, *, field: str) -> None:
        """Raise `AttachmentTypeError` naming `field` unless `media_type` is allowed."""
        if not self.type_allowed(media_type):
            allowed = ", ".join(self.allowed_types) or "none"
            raise AttachmentTypeError(
                f"attachment type {media_type!r} is not allowed (allowed: {allowed})",
                field=field,
            )
