"""Argument types shared by the CLI commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["positive_int"]


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
