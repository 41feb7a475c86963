"""``POST /api/tickets.json``: osTicket's JSON ticket payload (RFC 8259) to a :class:`TicketRequest`.

What is checked here, before the shared validation in :mod:`ticketmail.parsing.builder`:

* the size of the body (``Limits.max_payload_bytes``), before anything else;
* the text is UTF-8 (RFC 8259 section 8.1: "JSON text exchanged between systems that are not part of a
  closed ecosystem MUST be encoded using UTF-8"); a UTF-8 byte order mark is tolerated and dropped;
* the nesting depth, *before* ``json.loads`` runs (the stdlib decoder recurses once per level): a linear
  pre-scan at C speed (see :func:`_depth_verdict`) settles nearly every input; for the rest (unbalanced
  brackets, or a balanced document too deep) the decoder runs and a ``RecursionError`` or a successful
  decode both mean "too deep", while a syntax error is reported as such;
* the top level is an object; member names are unique (RFC 8259 section 4 says they SHOULD be; a
  duplicate is ambiguous, so it is refused rather than letting the last one silently win);
* ``NaN``/``Infinity`` (accepted by Python, not by RFC 8259) are refused.
"""

from __future__ import annotations

import itertools
import json as _json
import operator
import re
from typing import Any, Literal

from ticketmail.errors import InvalidValueError, MalformedJSONError, NestingTooDeepError, PayloadTooLargeError
from ticketmail.model import TicketRequest
from ticketmail.parsing.builder import body_bytes, build_request
from ticketmail.parsing.fields import Form
from ticketmail.parsing.limits import Limits

__all__ = ["check_json_depth", "load_json_object", "parse_json"]

_ESCAPE_RE = re.compile(rb"\\.", re.DOTALL)
_STRING_RE = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_PAREN_TABLE = bytes.maketrans(b"[{]}", b"(())")
_DEPTH_TABLE = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def _depth_verdict(body: bytes, max_depth: int) -> Literal["ok", "deep", "unsure"]:
    """Decide cheaply whether ``body`` nests deeper than ``max_depth``; ``unsure`` only for odd input.

    Brackets inside strings do not count: escapes and strings are removed first (two linear regular
    expressions), then only brackets are kept, as ``(`` and ``)``. Cheapest test first:

    * at most ``max_depth`` openers in all: ``ok``;
    * a run of ``max_depth + 1`` openers: ``deep`` (the depth at the end of the run is at least that);
    * ``max_depth`` passes of deleting adjacent ``()`` pairs (C-speed ``bytes.replace``) remove every pair
      whose subtree is at most ``max_depth`` high, so they empty any balanced document within the limit:
      ``ok``. Otherwise the document is either balanced and too deep, or its brackets are unbalanced
      (malformed JSON): ``unsure``, and the caller lets the decoder tell which.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return "ok"
    stripped = _STRING_RE.sub(b"", _ESCAPE_RE.sub(b"", body))
    brackets = stripped.translate(_PAREN_TABLE, _NOT_BRACKETS)
    if b"(" * (max_depth + 1) in brackets:
        return "deep"
    for _ in range(max_depth):
        reduced = brackets.replace(b"()", b"")
        if len(reduced) == len(brackets):
            break
        brackets = reduced
    return "ok" if not brackets else "unsure"


def check_json_depth(body: bytes, max_depth: int) -> None:
    """Raise :class:`NestingTooDeepError` when arrays/objects in ``body`` nest deeper than ``max_depth``.

    Brackets inside strings do not count. Linear time: the cheap tests of the parser come first; only
    odd input (unbalanced brackets that survive them) gets an exact running-sum count. Input that closes
    more brackets than it opened is malformed and may be reported as too deep.
    """
    verdict = _depth_verdict(body, max_depth)
    if verdict == "ok":
        return
    if verdict == "unsure":
        brackets = _STRING_RE.sub(b"", _ESCAPE_RE.sub(b"", body)).translate(_DEPTH_TABLE, _NOT_BRACKETS)
        # Each opener is 2 and each closer 0; the running sum minus the count of items is the depth.
        depth = max(map(operator.sub, itertools.accumulate(brackets), itertools.count(1)))
        if depth <= max_depth:
            return
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
    """Decode ``body`` into the top-level JSON object, enforcing size, encoding and depth limits."""
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
    if verdict == "unsure":
        # Valid JSON has balanced brackets, so the pre-scan's "unsure" meant "too deep".
        raise NestingTooDeepError(f"JSON nests deeper than {limits.max_depth} levels")
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
