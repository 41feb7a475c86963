"""What every command prints, and where: one set of conventions for a terminal and a pipeline.

* Default (human): a readable table or text on standard output; a command that processes messages
  (`ingest`, `fetch`, `pipe`, `quarantine retry`) prints one summary line per run at the end, such as
  `19 messages: 9 created, 6 appended, 1 duplicate, 3 ignored in 0.8 s`.
* `--json`: one JSON object per line on standard output and nothing else there (the human summary of a run,
  if any, goes to standard error); the fields of each object are listed in `docs/cli.md`.
* `--quiet`: nothing but errors.
* Whatever the mode, an error (a failed message included) is one readable line on standard error, ending with
  its stable code in brackets: `ticketmail: error: <what>: <message> [<code>]`.
* Progress of a long run is drawn on standard error, rewriting one line, only when standard error is a
  terminal and the mode is not `--quiet`.

A reader that goes away (`| head`) ends the output quietly; exit statuses are those of each command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from ticketmail.errors import TicketmailError

__all__ = [
    "ACTION_ORDER",
    "Output",
    "Progress",
    "RunTally",
    "add_output_flags",
    "error_line",
    "format_table",
    "message_line",
    "report_failure",
    "short",
]

ACTION_ORDER = ("created", "appended", "duplicate", "ignored", "rejected", "failed")
"""The order in which a run summary names the outcome actions."""

_ACTION_NOTES = {"failed": " (quarantined)"}


def add_output_flags(parser: argparse.ArgumentParser, *, quiet: bool = True, what: str = "result") -> None:
    """`--json` (one object per `what` per line) and, unless `quiet=False`, `--quiet`; they exclude each other."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--json", action="store_true", help=f"one JSON object per {what} per line on stdout (fields: docs/cli.md)"
    )
    if quiet:
        group.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (on stderr)")


def error_line(what: str | TicketmailError, code: str | None = None, *, subject: str | None = None) -> str:
    """`ticketmail: error: [subject: ]message [code]`: the one shape of every error line."""
    if isinstance(what, TicketmailError):
        message, code = what.message, code or what.code
    else:
        message = what
    head = f"{subject}: " if subject else ""
    tail = f" [{code}]" if code else ""
    return f"ticketmail: error: {head}{message}{tail}"


def short(text: str | None, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "\u2026"


def format_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """`rows` (the first is the header) as lines of left-aligned columns two spaces apart."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


class Output:
    """The output of one command run in the mode its flags chose (`--json`, `--quiet`, or human).

    Args:
        args: The parsed arguments; `json` and `quiet` are read when present.
        out: Standard output (default `sys.stdout`).
        err: Standard error (default `sys.stderr`).
    """

    def __init__(
        self, args: argparse.Namespace | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None
    ):
        self.json: bool = bool(getattr(args, "json", False))
        self.quiet: bool = bool(getattr(args, "quiet", False)) and not self.json
        self.out: IO[str] = out if out is not None else sys.stdout
        self.err: IO[str] = err if err is not None else sys.stderr
        self._closed = False

    @property
    def gone(self) -> bool:
        """The reader of stdout went away; a run stops after the message in hand."""
        return self._closed

    @property
    def human(self) -> bool:
        """Neither `--json` nor `--quiet`."""
        return not (self.json or self.quiet)

    def _write(self, stream: IO[str], text: str) -> None:
        if self._closed and stream is self.out:
            return
        try:
            stream.write(text + "\n")
            stream.flush()
        except BrokenPipeError:
            if stream is not self.out:
                raise
            self.reader_gone()

    def record(self, data: Mapping[str, Any]) -> None:
        """One JSON object on its own line (only with `--json`)."""
        if self.json:
            self._write(self.out, json.dumps(data, ensure_ascii=False))

    def text(self, line: str = "") -> None:
        """A line of the human output (not with `--json` or `--quiet`)."""
        if self.human:
            self._write(self.out, line)

    def lines(self, lines: Iterable[str]) -> None:
        """Several lines of the human output."""
        for line in lines:
            self.text(line)

    def table(self, rows: Sequence[Sequence[str]]) -> None:
        """A table of the human output; `rows[0]` is the header (printed only when there are rows)."""
        if len(rows) > 1:
            self.lines(format_table(rows))

    def summary(self, line: str) -> None:
        """A run's summary line: on stdout by default, on stderr with `--json`, nowhere with `--quiet`."""
        if self.json:
            self._write(self.err, line)
        elif not self.quiet:
            self._write(self.out, line)

    def note(self, line: str) -> None:
        """Information for a person on stderr (not with `--quiet`)."""
        if not self.quiet:
            self._write(self.err, line)

    def stderr(self, line: str) -> None:
        """A line on stderr in every mode (for a command whose own report is one line there)."""
        self._write(self.err, line)

    def error(self, what: str | TicketmailError, code: str | None = None, *, subject: str | None = None) -> None:
        """An error line on stderr, in every mode."""
        self._write(self.err, error_line(what, code, subject=subject))

    def reader_gone(self) -> None:
        """The reader of stdout went away (`| head`): send further output to /dev/null so exit is quiet."""
        self._closed = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.out.fileno())
        except (OSError, ValueError, AttributeError):  # not a real file (tests): just stop writing
            pass
        finally:
            os.close(devnull)

    def progress(self, total: int | None = None, *, enabled: bool = True) -> Progress:
        """A progress line on stderr, drawn only on a terminal and never with `--quiet`."""
        on = enabled and not self.quiet and _isatty(self.err)
        return Progress(self.err, total, on)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """One line on a terminal, rewritten at most ten times a second; silent when not enabled."""

    def __init__(self, stream: IO[str], total: int | None, enabled: bool) -> None:
        self._stream = stream
        self._total = total
        self.enabled = enabled
        self._last = 0.0
        self._start = time.monotonic()

    def update(self, done: int, counts: Mapping[str, int]) -> None:
        """Show `done` messages so far with their `counts` per action."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done != self._total:
            return
        self._last = now
        rate = done / max(now - self._start, 1e-6)
        if self._total:
            width = 30
            filled = int(width * done / self._total)
            head = f"[{'#' * filled}{'-' * (width - filled)}] {done}/{self._total}"
        else:
            head = f"{done} messages"
        detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        self._stream.write(f"\r{head} {rate:,.0f}/s {detail}\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        """Erase the line."""
        if self.enabled:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


class RunTally:
    """The counts of one run, per outcome action, and the summary line made of them."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()

    @property
    def total(self) -> int:
        """Messages counted so far."""
        return sum(self.counts.values())

    def add(self, action: str, count: int = 1) -> None:
        """Count `count` messages with outcome `action`."""
        self.counts[action] += count

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def parts(self) -> str:
        """`9 created, 6 appended, 1 failed (quarantined)`, or `nothing` for an empty run."""
        known = [a for a in ACTION_ORDER if self.counts[a]]
        others = sorted(a for a in self.counts if a not in ACTION_ORDER and self.counts[a])
        text = ", ".join(f"{self.counts[a]} {a}{_ACTION_NOTES.get(a, '')}" for a in (*known, *others))
        return text or "nothing"

    def line(self, *, dry_run: bool = False, verb: str = "") -> str:
        """`19 messages: 9 created, ... in 0.8 s` (a dry run says what would have happened).

        `verb` follows the count (`3 messages retried: ...`).
        """
        total = self.total
        noun = ("message" if total == 1 else "messages") + (f" {verb}" if verb else "")
        head = f"dry run: {total} {noun} would be" if dry_run else f"{total} {noun}"
        tail = "; nothing was stored" if dry_run else ""
        return f"{head}: {self.parts()} in {self.elapsed():.1f} s{tail}"


def message_line(source: str, data: Mapping[str, Any]) -> str:
    """One processed message for people: action, ticket, source and the reasons in words."""
    reasons = "; ".join(str(r.get("message", "")) for r in data.get("reasons") or () if r.get("message"))
    ticket = data.get("ticket") or "-"
    return f"{data.get('action', '?'):<9}  {ticket:<10}  {source}" + (f"  ({short(reasons, 100)})" if reasons else "")


def report_failure(output: Output, source: str, data: Mapping[str, Any]) -> None:
    """The stderr line of a message that failed (kept in the quarantine), in every mode."""
    if data.get("action") != "failed":
        return
    error = data.get("error") or {}
    message = error.get("message") or "processing failed"
    output.error(f"failed, quarantined: {message}", error.get("code") or "processing_failed", subject=source)
