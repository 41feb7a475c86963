"""`POST /api/tickets.json`: osTicket's JSON ticket payload (RFC 8259) to a `TicketRequest`.

What is checked here, before the shared validation in `ticketmail.parsing.builder`:

* the size of the body (`Limits.max_payload_bytes`), before anything else;
* the text is UTF-8 (RFC 8259 section 8.1: "JSON text exchanged between systems that are not part of a
  closed ecosystem MUST be encoded using UTF-8"); a UTF-8 byte order mark is tolerated and dropped;
* the nesting depth, *before* `json.loads` runs (the stdlib decoder recurses once per level): an exact
  linear pre-scan (see `_too_deep()`) with memory about the input size, stopping at the first chunk
  that goes too deep (a 6 MB deeply nested document is refused after reading its first megabyte);
* the top level is an object; member names are unique (RFC 8259 section 4 says they SHOULD be; a
  duplicate is ambiguous, so it is refused rather than letting the last one silently win);
* `NaN`/`Infinity` (accepted by Python, not by RFC 8259) are refused.
"""

from __future__ import annotations

import itertools
import json as _json
import operator
from typing import Any, Literal

from ticketmail.errors import InvalidValueError, MalformedJSONError, NestingTooDeepError, PayloadTooLargeError
from ticketmail.model import TicketRequest
from ticketmail.parsing.builder import body_bytes, build_request
from ticketmail.parsing.fields import Form
from ticketmail.parsing.limits import Limits

__all__ = ["check_json_depth", "load_json_object", "parse_json"]

# Every byte that is not a quote, a backslash or a bracket becomes "x" (then is dropped): what is left is
# enough to tell strings from structure.
_SPECIAL_TABLE = bytes(b if b in b'"\\[]{}' else 0x78 for b in range(256))
_STEP_TABLE = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_CHUNK = 1 << 16


def _too_deep(body: bytes, max_depth: int) -> bool:
    """Whether arrays/objects in `body` nest deeper than `max_depth` (brackets in strings do not count).

    Linear time and bounded memory (about the input size once, then 64 KiB chunks): escapes are removed
    with `bytes.replace` (pairs of backslashes first, as a JSON reader pairs them), strings are told
    apart by the parity of the quotes before each chunk, and the depth is a running sum that stops at the
    first chunk that goes too deep.
    """
    marks = body.translate(_SPECIAL_TABLE)
    if b"\\" in marks:
        marks = marks.replace(b"\\\\", b"").replace(b'\\"', b"").replace(b"\\x", b"").replace(b"\\", b"")
    marks = marks.translate(None, b"x")
    depth = 0
    in_string = False
    for offset in range(0, len(marks), _CHUNK):
        pieces = marks[offset : offset + _CHUNK].split(b'"')
        outside = b"".join(pieces[1::2] if in_string else pieces[0::2])
        if len(pieces) % 2 == 0:
            in_string = not in_string
        if not outside:
            continue
        steps = outside.translate(_STEP_TABLE)
        # Each opener adds 2 and each closer 0; the running sum minus the item count is the depth.
        if max(map(operator.sub, itertools.accumulate(steps, initial=depth), itertools.count(0))) > max_depth:
            return True
        opens = steps.count(2)
        depth += opens - (len(steps) - opens)
    return False


def _depth_verdict(body: bytes, max_depth: int) -> Literal["ok", "deep"]:
    """`deep` when `body` nests deeper than `max_depth`; the cheapest test (few openers) first."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return "ok"
    return "deep" if _too_deep(body, max_depth) else "ok"


def check_json_depth(body: bytes, max_depth: int) -> None:
    """Raise `NestingTooDeepError` when arrays/objects in `body` nest deeper than `max_depth`.

    Brackets inside strings do not count. Linear time, memory about the size of `body`.
    """
    if _depth_verdict(body, max_depth) == "deep":
        raise NestingTooDeepError(f"JSON nests deeper than {max_depth} levels")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidValueError(f"member {key[:60]!r} is given more than once", field=key[:60])
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise MalformedJSONError(f"{name} is not valid JSON (RFC 8259 has no NaN or Infinity)")


def load_json_object(body: bytes | bytearray | memoryview | str, limits: Limits) -> dict[str, Any]:
    """Decode `body` into the top-level JSON object, enforcing size, encoding and depth limits."""
    data = body_bytes(body)
    if len(data) > limits.max_payload_bytes:
        raise PayloadTooLargeError(f"payload is {len(data)} bytes; the limit is {limits.max_payload_bytes}")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJSONError(f"JSON must be UTF-8 (invalid byte at offset {exc.start})") from exc
    verdict = _depth_verdict(data, limits.max_depth)
    if verdict == "deep":
        raise NestingTooDeepError(f"JSON nests deeper than {limits.max_depth} levels")
    try:
        value = _json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constants)
    except _json.JSONDecodeError as exc:
        raise MalformedJSONError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:  # the C decoder refuses depth past the recursion limit cleanly
        raise NestingTooDeepError(f"JSON nests deeper than {limits.max_depth} levels") from exc
    except ValueError as exc:  # e.g. an integer with more digits than int() converts
        raise MalformedJSONError(f"malformed JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise MalformedJSONError(f"expected a JSON object at the top level, got {type(value).__name__}")
    return value


def parse_json(
    body: bytes,
    *,
    form: Form | None = None,
    limits: Limits | None = None,
    ignore_unknown_fields: bool = False,
    check_deliverability: bool = False,
) -> TicketRequest:
    """Parse an osTicket JSON ticket payload into a validated `TicketRequest`.

    Args:
        body: The request body (UTF-8 JSON).
        form: The accepted custom fields (default `Form.default()`: `phone` and `notes`).
        limits: Size, count, type and depth limits (default `Limits` ()).
        ignore_unknown_fields: Drop members that are neither core fields nor form fields instead of
            raising `UnsupportedFieldError`.
        check_deliverability: Also check that the email domain can receive mail (DNS lookups).

    Raises:
        TicketmailError: an `InputError` subclass naming the field at fault.
    """
    limits = Limits() if limits is None else limits
    raw = load_json_object(body, limits)
    return build_request(
        raw,
        form=form,
        limits=limits,
        ignore_unknown_fields=ignore_unknown_fields,
        check_deliverability=check_deliverability,
    )
