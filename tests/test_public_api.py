"""The public API surface and the error contract."""

from __future__ import annotations

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
