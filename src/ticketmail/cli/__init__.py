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

# Command -> the module that registers it, in help order. A run imports only the module of its command
# (`pipe`, started once per delivered message, does not load the HTTP API or the poller); `--help` and an
# unknown command load them all. A module that is not there is skipped.
_COMMANDS = {
    "parse": "parse",
    "ingest": "ingest",
    "tickets": "_tickets",
    "show": "_tickets",
    "fetch": "fetch",
    "check": "_health",
    "status": "_health",
    "pipe": "_pipe",
    "serve": "serve",
    "apikey": "serve",
    "audit": "audit",
    "quarantine": "quarantine",
    "receive": "receive",
    "oauth": "oauth",
}
_COMMAND_MODULES = tuple(dict.fromkeys(_COMMANDS.values()))
_EX_TEMPFAIL = 75  # sysexits.h


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every available sub-command, or only the one of `command` when known."""
    from ticketmail import __version__

    parser = argparse.ArgumentParser(
        prog="ticketmail", description="Turn email and HTTP API payloads into helpdesk tickets."
    )
    parser.add_argument("--version", action="version", version=f"ticketmail {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = (_COMMANDS[command],) if command in _COMMANDS else _COMMAND_MODULES
    for name in names:
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
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words else None)
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
