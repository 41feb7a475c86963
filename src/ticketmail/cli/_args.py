"""Argument types and argument tables shared by the CLI commands.

A command's options are data: a sequence of `(flags, options)` pairs given to `add_arguments`, so that
the registration of a command reads as a table rather than as a long function.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["ArgSpec", "add_arguments", "bounded_float", "positive_int", "since"]

ArgSpec = tuple[Sequence[str], Mapping[str, Any]]
"""One option: its flags (or positional name) and the keyword arguments of `add_argument`."""


def add_arguments(parser: argparse.ArgumentParser | Any, specs: Iterable[ArgSpec]) -> None:
    """Add every option of `specs` to `parser` (a parser or an argument group), in order."""
    for flags, options in specs:
        parser.add_argument(*flags, **options)


def positive_int(what: str) -> Callable[[str], int]:
    """An argparse `type` for an integer >= 1; `what` names it in the error (argparse exits 2 with it)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} (an integer >= 1), got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected {what} (an integer >= 1), got {value}")
        return value

    return parse


def bounded_float(what: str, low: float, high: float) -> Callable[[str], float]:
    """An argparse `type` for a number of seconds from `low` to `high` (argparse exits 2 otherwise)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} (a number), got {text!r}") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"expected {what} from {low:g} to {high:g}, got {text}")
        return value

    return parse


_AGE_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def since(text: str) -> _dt.datetime:
    """An ISO date/time (naive means UTC) or an age such as `90m`, `2h`, `3d`, `1w` before now."""
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in _AGE_UNITS:
        return _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=int(text[:-1]) * _AGE_UNITS[text[-1]])
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date/time or an age like 2h or 3d, got {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)
