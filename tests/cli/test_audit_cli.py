"""`ticketmail audit` and `ticketmail quarantine` on a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.cli import main
from ticketmail.errors import MalformedEmailError
from ticketmail.model import InboundEmail, Provenance
from ticketmail.pipeline import Pipeline

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

MAIL = (
    b"From: Carol <carol@example.net>\r\nTo: support@example.com\r\nSubject: =?utf-8?q?Caf=C3=A9_machine?=\r\n"
    b"Message-ID: <cafe-1@example.net>\r\n\r\nThe coffee machine is broken.\r\n"
)


def _broken(raw: bytes) -> InboundEmail:
    raise MalformedEmailError("cannot read this one")


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    path = str(tmp_path / "t.sqlite3")
    assert main(["ingest", "--db", path, "--no-progress", str(EXAMPLES / "mail")]) == 0
    capsys.readouterr()
    return path


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_audit_lists_newest_first_with_reasons_and_file_names(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--db", db, "--json", "--limit", "0"]) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert len(rows) >= 5
    ids = [row["id"] for row in rows]
    assert ids == sorted(ids, reverse=True)  # type: ignore[type-var]
    assert all(str(row["origin"]).startswith("file ") and str(row["origin"]).endswith(".eml") for row in rows)
    assert {row["outcome"] for row in rows} >= {"created", "appended"}
    created = next(row for row in rows if row["outcome"] == "created")
    assert created["sender"]
    assert created["subject"]
    assert created["ticket"]
    assert main(["audit", "--db", db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(rows)
    assert str(created["subject"])[:20] in "\n".join(lines)


def test_audit_filters(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["audit", "--db", db, "--json", "--limit", "0"])
    rows = _json_lines(capsys.readouterr().out)
    ticket = next(str(row["ticket"]) for row in rows if row["outcome"] == "appended")
    assert main(["audit", "--db", db, "--json", "--ticket", ticket]) == 0
    about = _json_lines(capsys.readouterr().out)
    assert about
    assert all(row["ticket"] == ticket for row in about)
    assert main(["audit", "--db", db, "--json", "--outcome", "created", "--limit", "2"]) == 0
    created = _json_lines(capsys.readouterr().out)
    assert len(created) == 2
    assert all(row["outcome"] == "created" for row in created)
    sender = str(rows[0]["sender"])
    assert main(["audit", "--db", db, "--json", "--sender", sender.upper()]) == 0
    assert all(row["sender"] == sender for row in _json_lines(capsys.readouterr().out))
    mid = str(rows[0]["message_id"])
    assert main(["audit", "--db", db, "--json", "--message-id", f"<{mid}>"]) == 0
    assert [row["message_id"] for row in _json_lines(capsys.readouterr().out)] == [mid]
    assert main(["audit", "--db", db, "--json", "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out == ""


def test_audit_show(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["audit", "--db", db, "--json", "--outcome", "appended", "--limit", "1"])
    (row,) = _json_lines(capsys.readouterr().out)
    assert main(["audit", "show", str(row["id"]), "--db", db]) == 0
    text = capsys.readouterr().out
    assert f"decision {row['id']}: appended" in text
    assert "threading:" in text
    assert "thread." in text
    assert "headers:" in text
    assert "From:" in text
    assert main(["audit", "show", "999999", "--db", db]) == 1
    assert "no decision 999999" in capsys.readouterr().err


def test_audit_of_a_missing_database_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--db", str(tmp_path / "none.sqlite3")]) == 2
    assert "no ticket database" in capsys.readouterr().err


@pytest.fixture
def quarantined(tmp_path: Path) -> str:
    path = str(tmp_path / "q.sqlite3")
    backend = SQLiteBackend(path)
    pipeline = Pipeline(backend, parser=_broken)
    pipeline.process_email(MAIL, provenance=Provenance("support", "imap", "3:1"))
    pipeline.process_email(MAIL.replace(b"cafe-1", b"cafe-2"), provenance=Provenance("support", "imap", "3:2"))
    backend.close()
    return path


def test_quarantine_list_show_export(quarantined: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quarantine", "list", "--db", quarantined, "--json"]) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert [row["subject"] for row in rows] == ["Caf\u00e9 machine", "Caf\u00e9 machine"]
    assert rows[0]["reason_code"] == "malformed_email"
    assert rows[0]["attempts"] == 1
    first = str(rows[0]["id"])
    assert main(["quarantine", "list", "--db", quarantined]) == 0
    assert "2 quarantined message(s)" in capsys.readouterr().out
    assert main(["quarantine", "show", first, "--db", quarantined]) == 0
    assert "cannot read this one [malformed_email]" in capsys.readouterr().out
    out = tmp_path / "one.eml"
    assert main(["quarantine", "export", first, "--db", quarantined, "-o", str(out)]) == 0
    assert out.read_bytes() == MAIL
    folder = tmp_path / "all"
    folder.mkdir()
    assert main(["quarantine", "export", first, str(rows[1]["id"]), "--db", quarantined, "-o", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"quarantine-{row['id']}.eml" for row in rows)
    assert main(["quarantine", "show", "4242", "--db", quarantined]) == 1


def test_quarantine_retry_and_discard(quarantined: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["quarantine", "list", "--db", quarantined, "--json"])
    first, second = (str(row["id"]) for row in _json_lines(capsys.readouterr().out))
    assert main(["quarantine", "retry", first, "--db", quarantined, "--json"]) == 0
    (result,) = _json_lines(capsys.readouterr().out)
    assert result["action"] == "created"
    assert result["ticket"]
    assert main(["quarantine", "discard", second, "--db", quarantined]) == 0
    capsys.readouterr()
    assert main(["quarantine", "list", "--db", quarantined, "--json"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["quarantine", "retry", first, "--db", quarantined]) == 1  # gone now
    assert main(["audit", "--db", quarantined, "--json", "--outcome", "discarded"]) == 0
    capsys.readouterr()
    backend = SQLiteBackend(quarantined)
    try:
        assert len(backend.list_tickets()) == 1
        assert [r.action for r in backend.audit_log()][-2:] == ["created", "discarded"]
    finally:
        backend.close()
    assert main(["quarantine", "retry", "--db", quarantined]) == 2


def test_tickets_filters_newest_first(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tickets", "--db", db, "--json"]) == 0
    every = _json_lines(capsys.readouterr().out)
    assert [t["created"] for t in every] == sorted((t["created"] for t in every), reverse=True)  # type: ignore[type-var]
    assert main(["tickets", "--db", db, "--json", "--oldest-first", "--limit", "3"]) == 0
    oldest = _json_lines(capsys.readouterr().out)
    assert [t["number"] for t in oldest] == [t["number"] for t in every[::-1][:3]]
    assert main(["tickets", "--db", db, "--json", "--limit", "2"]) == 0
    assert [t["number"] for t in _json_lines(capsys.readouterr().out)] == [t["number"] for t in every[:2]]
    requester = str(every[0]["requester"])
    assert main(["tickets", "--db", db, "--json", "--requester", requester.split("@")[0].upper()]) == 0
    assert {t["requester"] for t in _json_lines(capsys.readouterr().out)} == {requester}
    assert main(["tickets", "--db", db, "--json", "--mailbox", "no-such-mailbox"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["tickets", "--db", db, "--json", "--since", "1h"]) == 0
    assert len(_json_lines(capsys.readouterr().out)) == len(every)
    assert main(["tickets", "--db", db, "--json", "--since", "2999-01-01T00:00"]) == 0
    assert capsys.readouterr().out == ""
