"""The public API surface and the error contract."""

from __future__ import annotations

import os

import pytest

import ticketmail
from ticketmail.errors import TicketmailError, error_classes


def test_all_is_sorted_and_importable() -> None:
    assert ticketmail.__all__ == sorted(ticketmail.__all__)
    for name in ticketmail.__all__:
        assert hasattr(ticketmail, name), name


def test_error_codes_are_unique_and_have_status() -> None:
    import ticketmail.cli  # noqa: F401  (load modules that may define more errors)

    codes: dict[str, type[TicketmailError]] = {}
    for cls in error_classes():
        assert cls.code not in codes, f"{cls.__name__} reuses code {cls.code!r} of {codes.get(cls.code)}"
        codes[cls.code] = cls
        assert 400 <= cls.status <= 599


def test_error_to_dict_names_field() -> None:
    err = ticketmail.MissingFieldError("email is required", field="email")
    assert err.to_dict() == {"code": "missing_field", "status": 400, "message": "email is required", "field": "email"}
    assert "email" in str(err)


def test_import_does_not_load_imap_tools() -> None:
    """imap-tools patches imaplib on import; only the IMAP adapter may load it, and only when used."""
    import subprocess
    import sys

    code = "import sys, ticketmail; print('imap_tools' in sys.modules, 'imaplib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert ticketmail.ImapSource.__name__ == "ImapSource"


def test_all_is_a_literal_list() -> None:
    """Type checkers read `__all__` only when it is a literal; a computed one hides every re-export."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(ticketmail.__file__).read_text(encoding="utf-8"))
    assigned = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    ]
    assert len(assigned) == 1
    assert isinstance(assigned[0], ast.List)
    assert all(isinstance(elt, ast.Constant) and isinstance(elt.value, str) for elt in assigned[0].elts)


_IMPORT_PROBE = """
import sys

heavy = sorted(m for m in ("nh3", "charset_normalizer", "imap_tools", "imaplib", "regex", "email_validator",
    "defusedxml", "tnefparse", "sqlite3", "asyncio", "http.server", "fcntl") if m in sys.modules)
print(len(sys.modules), ",".join(heavy) or "-")
"""


def test_import_is_light() -> None:
    """`import ticketmail` loads only the package itself; the heavy parts load on first use."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, check=True).stdout
    count, heavy = out.split()
    assert int(count) <= 160
    assert heavy == "-"


def test_user_program_type_checks_against_the_top_level(tmp_path: object) -> None:
    """A user's `mypy --strict` program sees every main name as an explicit export of `ticketmail`."""
    from pathlib import Path

    prog = Path(str(tmp_path)) / "user_program.py"
    prog.write_text(
        "import ticketmail\n"
        "from ticketmail import (ImapSource, InMemoryBackend, Pipeline, SQLiteBackend, TicketmailError,\n"
        "    classify_automatic, evaluate, load_rules, parse_email, parse_json)\n\n\n"
        "def run(raw: bytes) -> str:\n"
        "    try:\n"
        "        email = parse_email(raw)\n"
        "    except TicketmailError as exc:\n"
        "        return exc.code\n"
        "    automatic = classify_automatic(email)\n"
        "    pipeline: Pipeline = ticketmail.Pipeline(InMemoryBackend())\n"
        "    backend: type[SQLiteBackend] = SQLiteBackend\n"
        "    source: type[ImapSource] = ImapSource\n"
        "    del pipeline, backend, source, automatic, evaluate, load_rules, parse_json\n"
        "    return email.subject or ''\n",
        encoding="utf-8",
    )
    mypy = pytest.importorskip("mypy.api")
    stdout, stderr, status = mypy.run(["--strict", "--no-incremental", "--cache-dir", os.devnull, str(prog)])
    assert status == 0, stdout + stderr


def test_retryable_says_whether_to_try_again() -> None:
    """Storage or a mailbox that is down is worth retrying; bad input, a bad config or a permanent fault is not."""
    from ticketmail.backends.base import LedgerConflictError, TicketNumberTakenError
    from ticketmail.backends.sqlite_schema import BackendLockedError, SchemaVersionError

    assert ticketmail.BackendError("down").retryable
    assert BackendLockedError("locked").retryable
    assert TicketNumberTakenError("taken").retryable
    assert ticketmail.SourceError("refused", stage="connect").retryable
    assert not SchemaVersionError("newer").retryable
    assert not LedgerConflictError("conflict").retryable
    assert not ticketmail.MalformedJSONError("bad").retryable
    assert not ticketmail.ConfigError("bad").retryable


def test_api_answers_retry_after_only_for_retryable_errors() -> None:
    from ticketmail.api.handler import ApiHandler
    from ticketmail.backends.sqlite_schema import SchemaVersionError

    down = ApiHandler.error_response(ticketmail.BackendError("disk gone at /var/x"))
    assert down.status == 503
    assert ("Retry-After", "30") in down.headers
    assert b"/var/x" not in down.body
    newer = ApiHandler.error_response(SchemaVersionError("schema 9 is newer than this code"))
    assert newer.status == 500
    assert all(name != "Retry-After" for name, _ in newer.headers)


# Implementation modules whose names a package re-exports: internal, as docs/reference.md says.
_INTERNAL_MODULES = {
    "ticketmail.jsonify",
    "ticketmail.tokens",
    "ticketmail.backends.postgres_keys",
    "ticketmail.backends.postgres_leases",
    "ticketmail.backends.postgres_schema",
    "ticketmail.backends.sqlite_schema",
    "ticketmail.sources.lock",
    "ticketmail.sources.oauth",
}
_INTERNAL_PACKAGES = ("ticketmail.cli.", "ticketmail.parsing.", "ticketmail.rules.", "ticketmail.oauth.")


def test_every_public_module_is_in_the_reference_or_declared_internal() -> None:
    import pkgutil
    import re
    from pathlib import Path

    import ticketmail

    page = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: (\S+)", page, flags=re.MULTILINE))
    undeclared = []
    for info in pkgutil.walk_packages(ticketmail.__path__, "ticketmail."):
        name = info.name
        if any(part.startswith("_") for part in name.split(".")) or info.ispkg or name in documented:
            continue
        if name in _INTERNAL_MODULES or name.startswith(_INTERNAL_PACKAGES):
            continue
        undeclared.append(name)
    assert not undeclared, f"document these in docs/reference.md or declare them internal there: {undeclared}"
    assert not (documented & _INTERNAL_MODULES), "a module cannot be both documented and internal"
