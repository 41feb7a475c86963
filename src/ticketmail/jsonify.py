"""Turn ticketmail values into JSON-ready data (for the CLI, the API and logs).

Attachment bytes are left out unless asked for (`include_bytes=True`, then base64); everything else of an
attrs value is kept. Datetimes become ISO 8601 strings, tuples lists, mappings objects.
"""

from __future__ import annotations

import base64
import datetime as _dt
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["to_jsonable"]


def to_jsonable(value: object, *, include_bytes: bool = False) -> Any:
    """Convert `value` (attrs instances, tuples, mappings, datetimes, bytes, scalars) to JSON-ready data.

    Fields whose name ends in an underscore (`from_`) are written without it (`from`).
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii") if include_bytes else None
    if attrs.has(type(value)):
        out: dict[str, Any] = {}
        for field in attrs.fields(type(value)):  # type: ignore[arg-type]
            item = getattr(value, field.name)
            if isinstance(item, (bytes, bytearray, memoryview)) and not include_bytes:
                continue
            out[field.name.rstrip("_")] = to_jsonable(item, include_bytes=include_bytes)
        return out
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, include_bytes=include_bytes) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, include_bytes=include_bytes) for v in value]
    return str(value)
