"""The shared option validators: one error shape, booleans never numbers."""

from __future__ import annotations

import attrs
import pytest

from ticketmail._validators import at_least, one_of, optional, positive
from ticketmail.errors import ConfigError


@attrs.frozen
class _Options:
    count: int = attrs.field(default=1, validator=at_least(1, "demo"))
    delay: float = attrs.field(default=1.0, validator=positive("demo"))
    mode: str = attrs.field(default="a", validator=one_of(("a", "b"), "demo"))
    limit: int | None = attrs.field(default=None, validator=optional(at_least(0, "demo")))


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"count": 0}, "demo.count", "an integer >= 1, got 0"),
        ({"count": True}, "demo.count", "got True"),
        ({"count": 1.5}, "demo.count", "got 1.5"),
        ({"delay": 0}, "demo.delay", "a number > 0, got 0"),
        ({"delay": False}, "demo.delay", "got False"),
        ({"mode": "c"}, "demo.mode", "one of 'a', 'b', got 'c'"),
        ({"limit": -1}, "demo.limit", "an integer >= 0, got -1"),
    ],
)
def test_bad_values_name_the_field_the_expectation_and_the_value(kwargs: dict, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _Options(**kwargs)
    assert info.value.field == field
    assert words in info.value.message
    assert info.value.message.startswith(f"{field} must be ")


def test_good_values_pass() -> None:
    options = _Options(count=3, delay=0.5, mode="b", limit=0)
    assert options.limit == 0
    assert _Options(limit=None).limit is None


def test_a_moved_name_still_resolves_with_a_warning_naming_the_new_place() -> None:
    import types

    from ticketmail._deprecated import moved

    getter = moved("ticketmail.old", {"OldName": "ticketmail.errors:ConfigError"})
    module = types.ModuleType("ticketmail.old")
    module.__getattr__ = getter  # type: ignore[method-assign]
    with pytest.warns(DeprecationWarning, match="import ConfigError from ticketmail.errors"):
        assert module.OldName is ConfigError
    with pytest.raises(AttributeError, match="no attribute 'Other'"):
        module.Other  # noqa: B018
