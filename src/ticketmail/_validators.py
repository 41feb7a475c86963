"""The attrs validators every option class uses, in one place.

Each factory returns an attrs validator that raises `ConfigError` naming the field as `PREFIX.name`
(`prefix` is the option class's table, such as `"threading"` or `"limits.email"`), what was expected and
what was given. Booleans are never accepted as numbers (`True` is an `int` in Python, never in a config).

Example:
    ```python
    @attrs.frozen
    class PollOptions:
        interval: float = attrs.field(default=60.0, validator=positive("poller"))
        retries: int = attrs.field(default=3, validator=at_least(0, "poller"))
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import attrs

from ticketmail.errors import ConfigError

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

__all__ = ["Validator", "at_least", "at_most", "fail", "field_name", "one_of", "optional", "positive"]


def field_name(prefix: str, attribute: attrs.Attribute[Any]) -> str:
    """`prefix.attribute` (or the bare attribute name when there is no prefix)."""
    return f"{prefix}.{attribute.name}" if prefix else attribute.name


def fail(prefix: str, attribute: attrs.Attribute[Any], expected: str, value: object) -> ConfigError:
    """The one error shape: `"<field> must be <expected>, got <value>"`, with `field` set."""
    name = field_name(prefix, attribute)
    return ConfigError(f"{name} must be {expected}, got {value!r}", field=name)


def _is_number(value: object, *, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def at_least(minimum: int | float, prefix: str = "", *, integer: bool = True) -> Validator:
    """A number (an integer unless `integer=False`) that is `minimum` or more."""
    kind = "an integer" if integer else "a number"

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not _is_number(value, integer=integer) or value < minimum:
            raise fail(prefix, attribute, f"{kind} >= {minimum}", value)

    return check


def at_most(maximum: int | float, prefix: str = "") -> Validator:
    """A number that is `maximum` or less (combine with `at_least` for a range; the type is theirs to check)."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if _is_number(value, integer=False) and value > maximum:
            raise fail(prefix, attribute, f"at most {maximum:g}", value)

    return check


def positive(prefix: str = "", *, integer: bool = False) -> Validator:
    """A number greater than zero (an integer when `integer=True`)."""
    kind = "an integer" if integer else "a number"

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not _is_number(value, integer=integer) or value <= 0:
            raise fail(prefix, attribute, f"{kind} > 0", value)

    return check


def one_of(allowed: Collection[str], prefix: str = "") -> Validator:
    """One of the `allowed` strings."""
    names = ", ".join(repr(item) for item in allowed)

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            raise fail(prefix, attribute, f"one of {names}", value)

    return check


def optional(validator: Validator) -> Validator:
    """`validator`, or `None`."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            validator(instance, attribute, value)

    return check
