r"""Custom fields: the caller's form definition and the typed converters behind it.

osTicket lets an administrator add fields to the contact and ticket forms; its API then accepts a payload
member for every field by its *name*, and rejects anything else ("Unsupported field sent"). ticketmail does the
same with a `Form` the caller supplies: it names the accepted custom fields and their types, and each
value is converted to a typed Python value (see `ticketmail.model.CustomValue`).

The default form is osTicket's default contact form minus what the core contract already carries:
`phone` (a phone number with extension, stored in `TicketRequest.phone`) and `notes` (a memo).
A form that leaves out `phone` makes `phone`/`phone_ext` unsupported, exactly as deleting the field in
osTicket does.

Type rules (the converters below name field, expected and actual value in every error):

=========== ==============================================================================================
`text`    one line of text (surrounding whitespace stripped; a line break is an error)
`memo`    multi-line text (line endings normalized to `\\n`, surrounding whitespace stripped)
`phone`   `3185558634X123`: number, then an extension after a capital `X` (osTicket upper-cases
            the value first, so `x` is accepted too); digits, spaces and `+ - ( ) . /` only
`date`    ISO 8601 date (`2024-05-01`) or Unix epoch seconds -> `datetime.date` (UTC for epoch)
`datetime` ISO 8601 date-time or Unix epoch seconds -> `datetime.datetime`; aware when the text
            carries `Z` or an offset, and for epoch values (UTC); naive otherwise
`choice`  a key or a label of one of the field's choices (key first, then label, case-insensitively)
            -> `Choice`; with `multiple=True` a list -> a tuple of choices
`bool`    JSON `true`/`false` or the strings `"true"`, `"false"`, `"1"`, `"0"`
`number`  a JSON number or a numeric string -> `int` when integral, else `float` (finite only)
=========== ==============================================================================================

A custom value that is `null`, an empty string or an empty list counts as "not given" and is left out of
`TicketRequest.custom_fields` (a `required` field then fails with `missing_field`).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from ticketmail.errors import ConfigError, InvalidValueError, MissingFieldError, TypeMismatchError
from ticketmail.model import Choice, CustomValue, Phone

__all__ = [
    "FIELD_TYPES",
    "FieldType",
    "Form",
    "FormField",
    "clean_text",
    "describe",
    "is_empty",
    "parse_iso8601",
    "parse_phone",
    "to_bool",
    "to_id",
    "to_one_line",
]

FieldType = Literal["text", "memo", "phone", "date", "datetime", "choice", "bool", "number"]
FIELD_TYPES: tuple[str, ...] = ("text", "memo", "phone", "date", "datetime", "choice", "bool", "number")

# Names the core contract owns; a form may not redefine them.
RESERVED_NAMES = frozenset(
    {
        "email", "name", "subject", "message", "alert", "autorespond", "ip", "priority", "priorityId",
        "source", "topicId", "attachments", "phone_ext",
    }
)  # fmt: skip

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
# Characters XML 1.0 cannot carry and no ticket text should: C0 controls except tab/line feed/carriage
# return, unpaired surrogates, and the noncharacters U+FFFE/U+FFFF.
_BAD_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_LINE_BREAK_RE = re.compile("\r\n?|[\x85\u2028\u2029]")
_PHONE_RE = re.compile(r"\+?[0-9 ().\-/]{1,40}")
_EXT_RE = re.compile(r"[0-9]{1,10}")
_INT_RE = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,3})?")
_ISO_RE = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:[Tt ](?P<h>[0-9]{2}):(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?:[.,](?P<f>[0-9]{1,9}))?)?"
    r"(?P<tz>[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_MAX_ID = 2**31 - 1
_MAX_CHOICES = 256


def describe(value: object) -> str:
    """A short, safe description of a raw value's type for error messages (`a list`, `null`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def is_empty(value: object) -> bool:
    """Whether a raw value counts as "not given": `None`, a blank string, an empty list or object."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, Mapping)):
        return len(value) == 0
    return False


def clean_text(value: str, *, field: str, multiline: bool) -> str:
    r"""Validate the characters of `value`, normalize line endings to `\\n` and strip it.

    Raises:
        InvalidValueError: a control character, unpaired surrogate or noncharacter; a line break in
            single-line text.
    """
    bad = _BAD_CHARS_RE.search(value)
    if bad:
        raise InvalidValueError(f"contains the forbidden character U+{ord(bad.group()):04X}", field=field)
    value = _LINE_BREAK_RE.sub("\n", value).strip()
    if not multiline and "\n" in value:
        raise InvalidValueError("must be a single line of text, got a line break", field=field)
    return value


def to_one_line(value: object, *, field: str, required: bool = False) -> str | None:
    """A single line of text (stripped), or `None` when not given (`MissingFieldError` if required)."""
    if is_empty(value):
        if required:
            raise MissingFieldError(f"{field} is required", field=field)
        return None
    if not isinstance(value, str):
        raise TypeMismatchError(f"expected a string, got {describe(value)}", field=field)
    return clean_text(value, field=field, multiline=False)


def to_bool(value: object, *, field: str) -> bool:
    """A boolean: `true`/`false`, `1`/`0` (JSON numbers) or those spelled as strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise TypeMismatchError(f"expected a boolean (true/false/1/0), got {value[:40]!r}", field=field)
    raise TypeMismatchError(f"expected a boolean, got {describe(value)}", field=field)


def to_id(value: object, *, field: str) -> int:
    """A non-negative integer id (a JSON integer or a string of digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeMismatchError(f"expected an integer id, got {describe(value)}", field=field)
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 10:
            raise TypeMismatchError(f"expected an integer id, got {value[:40]!r}", field=field)
        value = int(text)
    if not 0 <= value <= _MAX_ID:
        raise InvalidValueError(f"expected an id between 0 and {_MAX_ID}, got {value}", field=field)
    return value


def parse_phone(value: object, *, field: str, ext: object = None) -> Phone:
    """A `Phone` from `"3185558634X123"` (or `number` plus a separate `ext`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise TypeMismatchError(f"expected a phone number string, got {describe(value)}", field=field)
    text = clean_text(value, field=field, multiline=False).upper()
    number, sep, embedded = text.partition("X")
    number = number.strip()
    embedded_ext = embedded.strip() if sep else None
    if not _PHONE_RE.fullmatch(number) or not any(ch.isdigit() for ch in number):
        raise InvalidValueError(f"expected a phone number like 3185558634X123, got {value[:40]!r}", field=field)
    separate: str | None = None
    if not is_empty(ext):
        if isinstance(ext, int) and not isinstance(ext, bool):
            ext = str(ext)
        if not isinstance(ext, str):
            raise TypeMismatchError(f"expected an extension string, got {describe(ext)}", field=f"{field}_ext")
        separate = ext.strip()
        if not _EXT_RE.fullmatch(separate):
            raise InvalidValueError(f"expected digits for the extension, got {ext[:20]!r}", field=f"{field}_ext")
    if embedded_ext is not None and not _EXT_RE.fullmatch(embedded_ext):
        raise InvalidValueError(f"expected digits after 'X' (extension), got {embedded_ext[:20]!r}", field=field)
    if embedded_ext is not None and separate is not None and embedded_ext != separate:
        raise InvalidValueError(
            f"extension {embedded_ext!r} in the number conflicts with {field}_ext {separate!r}", field=f"{field}_ext"
        )
    return Phone(number=number, ext=embedded_ext or separate)


def parse_iso8601(text: str, *, field: str) -> _dt.datetime | _dt.date:
    """Parse an ISO 8601 calendar date or date-time (extended format).

    Returns a `datetime.date` for a date alone; a datetime otherwise, aware when the text carries
    `Z` or an offset. Works the same on Python 3.10 (whose `fromisoformat` lacks `Z`).
    """
    match = _ISO_RE.fullmatch(text.strip())
    if not match:
        raise InvalidValueError(f"expected an ISO 8601 date or date-time, got {text[:40]!r}", field=field)
    g = match.groupdict()
    try:
        if g["h"] is None:
            return _dt.date(int(g["y"]), int(g["mo"]), int(g["d"]))
        tz: _dt.tzinfo | None = None
        if g["tz"]:
            if g["tz"] in ("Z", "z"):
                tz = _dt.timezone.utc
            else:
                digits = g["tz"][1:].replace(":", "")
                offset = _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
                tz = _dt.timezone(-offset if g["tz"][0] == "-" else offset)
        micro = int((g["f"] or "0").ljust(6, "0")[:6])
        return _dt.datetime(
            int(g["y"]), int(g["mo"]), int(g["d"]), int(g["h"]), int(g["mi"]), int(g["s"] or 0), micro, tzinfo=tz
        )
    except ValueError as exc:
        raise InvalidValueError(f"not a valid date or time: {text[:40]!r} ({exc})", field=field) from exc


def _epoch(value: int | float | str, *, field: str) -> _dt.datetime:
    try:
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError("not finite")
        return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidValueError(f"epoch seconds out of range: {str(value)[:40]!r}", field=field) from exc


def _to_number(value: object, *, field: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeMismatchError(f"expected a number, got {describe(value)}", field=field)
    if isinstance(value, str):
        text = value.strip()
        if _INT_RE.fullmatch(text):
            return int(text)
        if not _FLOAT_RE.fullmatch(text):
            raise TypeMismatchError(f"expected a number, got {value[:40]!r}", field=field)
        value = float(text)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValueError("expected a finite number", field=field)
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
    return value


def _to_choices(value: object) -> tuple[Choice, ...]:
    if isinstance(value, Mapping):
        return tuple(Choice(key=str(k), label=str(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            if isinstance(item, Choice):
                out.append(item)
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                out.append(Choice(key=str(item[0]), label=str(item[1])))
            else:
                raise ConfigError(f"FormField.choices: expected Choice or (key, label) pairs, got {item!r}")
        return tuple(out)
    raise ConfigError(f"FormField.choices must be a mapping key -> label or a sequence of pairs, got {value!r}")


@attrs.frozen
class FormField:
    """One custom field of a `Form`.

    Attributes:
        name: The payload member name (`notes`, `department_code`).
        type: One of `text`, `memo`, `phone`, `date`, `datetime`, `choice`, `bool`, `number`.
        label: A human label (documentation only).
        required: Whether a request without it is refused (`missing_field`).
        choices: For `choice`: the allowed values, as `Choice` (a mapping
            key -> label is accepted).
        multiple: For `choice`: whether a list of choices is accepted (value: a tuple of choices).
        max_length: For `text`/`memo`: maximum length in characters.
    """

    name: str
    type: FieldType = "text"
    label: str | None = None
    required: bool = False
    choices: tuple[Choice, ...] = attrs.field(default=(), converter=_to_choices)
    multiple: bool = False
    max_length: int | None = None

    def __attrs_post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise ConfigError(f"form field name {self.name!r} must be 1-64 letters, digits, '_', '.' or '-'")
        if self.type not in FIELD_TYPES:
            raise ConfigError(f"form field {self.name!r}: unknown type {self.type!r} (expected one of {FIELD_TYPES})")
        if self.type == "choice" and not self.choices:
            raise ConfigError(f"form field {self.name!r}: a choice field needs choices")
        if self.multiple and self.type != "choice":
            raise ConfigError(f"form field {self.name!r}: only choice fields may be multiple")

    def convert(self, value: object, *, field: str | None = None) -> CustomValue:
        """Convert a raw payload value to this field's type; `None` when the value is empty.

        Raises:
            MissingFieldError: empty and `required`.
            TypeMismatchError, InvalidValueError: naming `field` (default: the field name).
        """
        where = field or self.name
        if is_empty(value):
            if self.required:
                raise MissingFieldError(f"{where} is required", field=where)
            return None
        kind = self.type
        if kind in ("text", "memo"):
            if not isinstance(value, str):
                raise TypeMismatchError(f"expected a string, got {describe(value)}", field=where)
            text = clean_text(value, field=where, multiline=kind == "memo")
            if self.max_length is not None and len(text) > self.max_length:
                raise InvalidValueError(f"at most {self.max_length} characters, got {len(text)}", field=where)
            return text
        if kind == "phone":
            return parse_phone(value, field=where)
        if kind == "bool":
            return to_bool(value, field=where)
        if kind == "number":
            return _to_number(value, field=where)
        if kind in ("date", "datetime"):
            return self._convert_date(value, where)
        return self._convert_choice(value, where)

    def _convert_date(self, value: object, where: str) -> _dt.date | _dt.datetime:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            expected = "an ISO 8601 string or epoch seconds"
            raise TypeMismatchError(f"expected {expected}, got {describe(value)}", field=where)
        if isinstance(value, str) and not _FLOAT_RE.fullmatch(value.strip()):
            parsed = parse_iso8601(value, field=where)
        else:
            parsed = _epoch(value, field=where)
        if self.type == "date":
            return parsed.date() if isinstance(parsed, _dt.datetime) else parsed
        if not isinstance(parsed, _dt.datetime):
            return _dt.datetime(parsed.year, parsed.month, parsed.day)
        return parsed

    def _convert_choice(self, value: object, where: str) -> Choice | tuple[Choice, ...]:
        if self.multiple:
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            if len(items) > _MAX_CHOICES:
                raise InvalidValueError(f"at most {_MAX_CHOICES} choices, got {len(items)}", field=where)
            picked: list[Choice] = []
            for index, item in enumerate(items):
                choice = self._one_choice(item, f"{where}[{index}]" if isinstance(value, (list, tuple)) else where)
                if choice not in picked:
                    picked.append(choice)
            return tuple(picked)
        return self._one_choice(value, where)

    def _one_choice(self, value: object, where: str) -> Choice:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise TypeMismatchError(f"expected a choice key or label, got {describe(value)}", field=where)
        wanted = value.strip()
        for choice in self.choices:
            if choice.key == wanted:
                return choice
        folded = wanted.casefold()
        for choice in self.choices:
            if choice.label.casefold() == folded:
                return choice
        keys = ", ".join(repr(c.key) for c in self.choices[:10])
        raise InvalidValueError(f"{value[:40]!r} is not one of the choices (keys: {keys})", field=where)


def _to_fields(value: Iterable[FormField]) -> tuple[FormField, ...]:
    return tuple(value)


@attrs.frozen
class Form:
    """The set of custom fields a payload may carry. `Form.default()` is `phone` + `notes`."""

    fields: tuple[FormField, ...] = attrs.field(factory=tuple, converter=_to_fields)

    def __attrs_post_init__(self) -> None:
        seen: set[str] = set()
        for item in self.fields:
            if not isinstance(item, FormField):
                raise ConfigError(f"Form.fields must hold FormField values, got {item!r}")
            if item.name in RESERVED_NAMES:
                raise ConfigError(f"form field {item.name!r} is a core ticket field and cannot be redefined")
            if item.name in seen:
                raise ConfigError(f"form field {item.name!r} is defined twice")
            if item.name == "phone" and item.type != "phone":
                raise ConfigError("form field 'phone' must have type 'phone'")
            seen.add(item.name)

    @classmethod
    def default(cls) -> Form:
        """The default form, as osTicket's default contact form: `phone` (type phone) and `notes` (type memo)."""
        return cls((FormField("phone", "phone", label="Phone Number"), FormField("notes", "memo", label="Notes")))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> Form:
        """Build a form from configuration data: `{"fields": [{"name": ..., "type": ..., ...}, ...]}`.

        Raises:
            ConfigError: naming `source` and the offending entry.
        """
        entries = data.get("fields", ())
        if not isinstance(entries, (list, tuple)):
            raise ConfigError(f"{source}: 'fields' must be a list of tables")
        fields = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{source}: fields[{index}] must be a table")
            unknown = set(entry) - {f.name for f in attrs.fields(FormField)}
            if unknown:
                raise ConfigError(f"{source}: fields[{index}] has unknown keys {sorted(unknown)}")
            try:
                fields.append(FormField(**entry))
            except ConfigError as exc:
                raise ConfigError(f"{source}: fields[{index}]: {exc.message}") from exc
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{source}: fields[{index}]: {exc}") from exc
        return cls(tuple(fields))

    def get(self, name: str) -> FormField | None:
        """The field called `name`, or `None`."""
        for item in self.fields:
            if item.name == name:
                return item
        return None

    def with_fields(self, *fields: FormField) -> Form:
        """A copy with `fields` added (e.g. `Form.default().with_fields(FormField("team", "text"))`)."""
        return Form((*self.fields, *fields))
