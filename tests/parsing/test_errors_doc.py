"""docs/errors.md is generated from the error classes; this test keeps it in sync.

Regenerate after adding an error class anywhere in the package::

    .venv/bin/python tests/parsing/test_errors_doc.py --write
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from pathlib import Path

import ticketmail
from ticketmail.errors import TicketmailError

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"

HEADER = """# Error codes

Every error ticketmail raises on purpose is a `ticketmail.TicketmailError`. Each carries a stable
machine-readable `code` (never renamed), the HTTP `status` an API should answer with, the offending input
`field` when there is one (`email`, `attachments[1].data`, `tags[0]`), and a human `message` that never
contains secrets. `error.to_dict()` gives `{"code", "status", "message", "field"}`, the shape the HTTP API
and `ticketmail parse` print.

Catch a branch of the tree rather than a list of leaves: `InputError` (400-415: the caller's bytes are
wrong), `LimitExceededError` (413), `ConfigError` (the operator's configuration), `BackendError` and
`SourceError` (infrastructure). Whether to try again is the class's `retryable` (the "Retry" column): true for
storage or a mailbox that is down (the HTTP API adds `Retry-After`, the poller backs off and returns), false for
bad input, a bad configuration and the permanent storage faults (a schema written by a newer version, a ledger
conflict), which need a person rather than another attempt.

This table is generated from the classes themselves (`tests/parsing/test_errors_doc.py --write`); a test
fails when a code is missing, stale or has another status. Indentation shows the class hierarchy.

| Code | HTTP | Retry | Class | Meaning |
|------|------|-------|-------|---------|
"""


def _load_all_modules() -> None:
    for info in pkgutil.walk_packages(ticketmail.__path__, "ticketmail."):
        if info.name.startswith("ticketmail.__main__"):
            continue
        importlib.import_module(info.name)


def _public_home(cls: type) -> str:
    """Where users import `cls` from: its own module, or (defined in a private one) the public module closest to it."""
    if not any(part.startswith("_") for part in cls.__module__.split(".")):
        return cls.__module__
    homes = [
        name
        for name, module in sys.modules.items()
        if name.startswith("ticketmail")
        and not any(part.startswith("_") for part in name.split("."))
        and getattr(module, cls.__name__, None) is cls
    ]
    assert homes, f"{cls.__module__}.{cls.__name__} is importable from no public module"

    def closeness(name: str) -> tuple[int, int]:
        shared = 0
        for mine, theirs in zip(cls.__module__.split("."), name.split("."), strict=False):
            if mine != theirs:
                break
            shared += 1
        return (shared, name.count("."))

    return max(homes, key=closeness)


def render() -> str:
    """The Markdown page for every loaded TicketmailError subclass, depth first, siblings by name."""
    _load_all_modules()
    rows: list[str] = []

    def walk(cls: type[TicketmailError], depth: int) -> None:
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        name = "&nbsp;&nbsp;" * depth + f"`{cls.__name__}`"
        where = _public_home(cls)
        retry = "yes" if cls.retryable else "no"
        rows.append(
            f"| `{cls.code}` | {cls.status} | {retry} | {name} <small>({where})</small> | {doc.replace('|', '/')} |"
        )
        for sub in sorted(cls.__subclasses__(), key=lambda c: (c.__name__, c.__module__)):
            # Only the package's own classes: test modules may define subclasses of their own.
            if sub.__module__.startswith("ticketmail.") and not sub.__module__.startswith("ticketmail.testing"):
                walk(sub, depth + 1)

    walk(TicketmailError, 0)
    return HEADER + "\n".join(rows) + "\n"


def _codes(markdown: str) -> set[tuple[str, int, str]]:
    rows = set()
    for line in markdown.splitlines():
        match = re.match(r"\| `([a-z0-9_]+)` \| (\d{3}) \| (yes|no) \|", line)
        if match:
            rows.add((match.group(1), int(match.group(2)), match.group(3)))
    return rows


def test_errors_doc_lists_every_code_with_its_status() -> None:
    """Every code of the package is in docs/errors.md with its status and retry flag, and no other code.

    Class names, modules and wording may drift without failing; a new, removed, re-statused code fails, and
    so does one whose `retryable` changed.
    """
    expected = _codes(render())
    documented = _codes(DOC.read_text(encoding="utf-8"))
    hint = "run .venv/bin/python tests/parsing/test_errors_doc.py --write"
    assert not expected - documented, f"undocumented codes {sorted(expected - documented)}: {hint}"
    assert not documented - expected, f"stale codes in docs/errors.md {sorted(documented - expected)}: {hint}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        DOC.write_text(render(), encoding="utf-8")
    else:
        sys.stdout.write(render())
