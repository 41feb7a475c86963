"""The `ticketmail` console script.

Each command group lives in its own module with a `register(subparsers)` function that adds its
sub-commands and sets `func` (a callable taking the parsed namespace and returning an exit code).
What they print follows one set of conventions (`ticketmail.cli._output`): readable by default, one JSON
object per line with `--json` (fields in `ticketmail.cli._schemas`), nothing but errors with `--quiet`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Command modules, in help order. A module that is not there yet is skipped.
_COMMAND_MODULES = ("parse", "ingest", "fetch", "serve", "audit", "quarantine", "receive", "oauth")
_EX_TEMPFAIL = 75  # sysexits.h


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    from ticketmail import __version__

    parser = argparse.ArgumentParser(
        prog="ticketmail", description="Turn email and HTTP API payloads into helpdesk tickets."
    )
    parser.add_argument("--version", action="version", version=f"ticketmail {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"ticketmail.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ticketmail.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:
        # An MTA treats exit 2 as a permanent failure and bounces the mail; a broken alias command line
        # is the operator's mistake, so `pipe` answers EX_TEMPFAIL and the MTA keeps retrying meanwhile.
        if exc.code == 2 and "pipe" in words[:1]:
            return _EX_TEMPFAIL
        raise
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    result: int = func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
