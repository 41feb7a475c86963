"""Field values of delivery reports as MTAs write them (addresses, status codes, actions) and the size limits.

Every pattern here is linear: no nested repetition, one way to match any string.
"""

from __future__ import annotations

import re

__all__ = [
    "ACTION_ALIASES",
    "ADDRESS",
    "MAX_CHARS",
    "MAX_LINE",
    "MAX_LINES",
    "SMTP_CODE",
    "clean_address",
    "status_code",
    "typed_value",
]

MAX_LINES = 400
"""How many lines of a bounce's human-readable text are scanned for failed recipients."""

MAX_LINE = 1000
"""Each scanned line is cut to this many characters (RFC 5322 section 2.1.1 allows 998)."""

MAX_CHARS = 256 * 1024
"""Only this many characters of a report part or bounce text are looked at."""

# An address as MTAs print it. Linear: the local-part class has no '@', every domain label repetition
# starts with a literal '.', so there is exactly one way to match any string.
ADDRESS = re.compile(r"[A-Za-z0-9._%+\-=/!#$&'*^`{|}~]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){1,10}")
STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
SMTP_CODE = re.compile(r"\b([45])\d\d\b")


def typed_value(value: str) -> str:
    """`rfc822; user@example.com` -> `user@example.com` (the address-type or diagnostic-type prefix)."""
    _, semi, rest = value.partition(";")
    return (rest if semi else value).strip()


def clean_address(value: str) -> str:
    value = value.strip().strip("<>").strip()
    match = ADDRESS.search(value)
    return match.group(0) if match else value


def status_code(value: str | None) -> str | None:
    if not value:
        return None
    match = STATUS.search(value)
    return match.group(0) if match else None


ACTION_ALIASES = {"failure": "failed", "fail": "failed", "delay": "delayed", "deliver": "delivered"}
