"""`notification_headers` only for entries of the ticket; `show` numbers entries per ticket; API HTML text."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.cli import main
from ticketmail.errors import InvalidValueError, NotFoundError
from ticketmail.model import Address, MessageBody, Provenance, TicketRequest
from ticketmail.pipeline import Pipeline

T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
KEY = b"k" * 32


def mail(n: int, subject: str, reply_to: str | None = None) -> bytes:
    extra = f"In-Reply-To: <{reply_to}>\r\n" if reply_to else ""
    return (
        f"From: Alice <alice@example.org>\r\nTo: help@desk.example\r\nSubject: {subject}\r\n"
        f"Message-ID: <m{n}@example.org>\r\n{extra}\r\nmessage {n}\r\n"
    ).encode()


def test_notification_headers_refuse_entries_that_are_not_the_tickets() -> None:
    backend = InMemoryBackend()
    pipe = Pipeline(backend, clock=lambda: T0, token_keys=[KEY])
    first = pipe.process_email(mail(1, "printer"), provenance=Provenance("mb", "imap", "1:1"))
    other = pipe.process_email(mail(2, "scanner"), provenance=Provenance("mb", "imap", "1:2"))
    assert first.ticket != other.ticket
    assert first.entry_id is not None
    assert other.entry_id is not None
    for entry in (999, other.entry_id):
        with pytest.raises(NotFoundError, match=f"has no entry {entry}"):
            pipe.notification_headers(first.ticket, entry, domain="desk.example")
    with pytest.raises(InvalidValueError):
        pipe.notification_headers(first.ticket, -1, domain="desk.example")
    ok = pipe.notification_headers(first.ticket, first.entry_id, domain="desk.example")
    assert ok["In-Reply-To"] == "<m1@example.org>"
    # nothing was signed or recorded for the refused calls: only the one outbound id is on the thread
    reply = mail(3, "unrelated subject", reply_to=ok["Message-ID"].strip("<>"))
    assert pipe.process_email(reply, provenance=Provenance("mb", "imap", "1:3")).ticket == first.ticket


def test_show_numbers_entries_per_ticket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.sqlite3"
    backend = SQLiteBackend(db)
    pipe = Pipeline(backend, clock=lambda: T0)
    a = pipe.process_email(mail(1, "printer"), provenance=Provenance("mb", "imap", "1:1"))
    b = pipe.process_email(mail(2, "scanner"), provenance=Provenance("mb", "imap", "1:2"))
    pipe.process_email(mail(3, "Re: scanner", reply_to="m2@example.org"), provenance=Provenance("mb", "imap", "1:3"))
    backend.close()
    assert a.entry_id == 1
    assert b.entry_id == 2
    assert main(["show", b.ticket or "", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "--- #1 message from" in out
    assert "--- #2 reply from" in out
    assert "(id 2)" in out
    assert "#3" not in out
    assert main(["show", b.ticket or "", "--db", str(db), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(e["position"], e["id"]) for e in shown["entries"]] == [(1, 2), (2, 3)]


def test_show_prints_typed_custom_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ticketmail.model import Choice

    db = tmp_path / "t.sqlite3"
    backend = SQLiteBackend(db)
    request = TicketRequest(
        email=Address("alice@example.org", "Alice"),
        subject="Order",
        message=MessageBody("hello", "text/plain"),
        custom_fields={"product": Choice("p2", "Scanner"), "budget": 12.5, "urgent": True},
    )
    outcome = Pipeline(backend, clock=lambda: T0).process_request(request)
    backend.close()
    assert main(["show", outcome.ticket or "", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "product:    Scanner (p2)" in out
    assert "budget:     12.5" in out
    assert "urgent:     true" in out
    assert main(["show", outcome.ticket or "", "--db", str(db), "--json"]) == 0
    fields = json.loads(capsys.readouterr().out)["custom_fields"]
    assert fields == {"product": {"key": "p2", "label": "Scanner"}, "budget": 12.5, "urgent": True}


def test_api_html_message_gets_a_text_body() -> None:
    from ticketmail.parsing.json import parse_json

    payload = {
        "email": "alice@example.org",
        "name": "Alice",
        "subject": "HTML",
        "message": "data:text/html,<p>The <b>printer</b> is broken.</p><ul><li>floor 3</li></ul>",
    }
    request = parse_json(json.dumps(payload).encode())
    assert request.message.content_type == "text/html"
    backend = InMemoryBackend()
    outcome = Pipeline(backend, clock=lambda: T0).process_request(request)
    (entry,) = backend.entries(outcome.ticket or "")
    assert entry.html is not None
    assert "<b>printer</b>" in entry.html
    assert "<" not in entry.body
    assert "The printer is broken." in entry.body
    assert "floor 3" in entry.body
