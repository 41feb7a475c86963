"""``POST /api/tickets.json``: osTicket's JSON ticket payload (RFC 8259) to a :class:`TicketRequest`.

What is checked here, before the shared validation in :mod:`ticketmail.parsing.builder`:

* the size of the body (``Limits.max_payload_bytes``), before anything else;
* the text is UTF-8 (RFC 8259 section 8.1: "JSON text exchanged between systems that are not part of a
  closed ecosystem MUST be encoded using UTF-8"); a UTF-8 byte order mark is tolerated and dropped;
* the nesting depth, *before* ``json.loads`` runs: the stdlib decoder recurses per level and would raise
  ``RecursionError`` on a few thousand ``[``. The scan removes escapes and strings with two linear regular
  expressions and sums bracket depths at C speed (``itertools.accumulate``), so it is linear even on
  adversarial input;
* the top level is an object; member names are unique (RFC 8259 section 4 says they SHOULD be; a
  duplicate is ambiguous, so it is refused rather than letting the last one silently win);
* ``NaN``/``Infinity`` (accepted by Python, not by RFC 8259) are refused.
"""

from __future__ import annotations

import itertools
import json as _json
import operator
import re
from typing import Any

from ticketmail.errors import InvalidValueError, MalformedJSONError, NestingTooDeepError, PayloadTooLargeError
from ticketmail.model import TicketRequest
from ticketmail.parsing.builder import build_request
from ticketmail.parsing.fields import Form
from ticketmail.parsing.limits import Limits

__all__ = ["check_json_depth", "load_json_object", "parse_json"]

_ESCAPE_RE = re.compile(rb"\\.", re.DOTALL)
_STRING_RE = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_TABLE = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def check_json_depth(body: bytes, max_depth: int) -> None:
    """Raise :class:`NestingTooDeepError` when arrays/objects in ``body`` nest deeper than ``max_depth``.

    Linear time; brackets inside strings do not count.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return
    stripped = _STRING_RE.sub(b"", _ESCAPE_RE.sub(b"", body))
    brackets = stripped.translate(None, _NOT_BRACKETS).translate(_DEPTH_TABLE)
    if not brackets:
        return
    # Each opener is 2 and each closer 0; the running sum minus the count of items is the depth.
    depth = max(map(operator.sub, itertools.accumulate(brackets), itertools.count(1)))
    if depth > max_depth:
        raise NestingTooDeepError(f"JSON nests {depth} levels deep; the limit is {max_depth}")


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
    """Decode ``body`` into the top-level JSON object, enforcing size, encoding and depth limits."""
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    if len(data) > limits.max_payload_bytes:
        raise PayloadTooLargeError(f"payload is {len(data)} bytes; the limit is {limits.max_payload_bytes}")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJSONError(f"JSON must be UTF-8 (invalid byte at offset {exc.start})") from exc
    check_json_depth(data, limits.max_depth)
    try:
        value = _json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constants)
    except _json.JSONDecodeError as exc:
        raise MalformedJSONError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:  # pragma: no cover - the depth check runs first
        raise NestingTooDeepError("JSON nests too deep") from exc
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
    """Parse an osTicket JSON ticket payload into a validated :class:`~ticketmail.model.TicketRequest`.

    Args:
        body: The request body (UTF-8 JSON).
        form: The accepted custom fields (default :meth:`Form.default`: ``phone`` and ``notes``).
        limits: Size, count, type and depth limits (default :class:`Limits` ()).
        ignore_unknown_fields: Drop members that are neither core fields nor form fields instead of
            raising :class:`~ticketmail.errors.UnsupportedFieldError`.
        check_deliverability: Also check that the email domain can receive mail (DNS lookups).

    Raises:
        TicketmailError: an :class:`~ticketmail.errors.InputError` subclass naming the field at fault.
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
