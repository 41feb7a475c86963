"""`ticketmail ingest` / `tickets` / `show`: the README main job, outputs, exit codes, progress line."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from ticketmail.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_main_job_on_the_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "ingest", "--json", str(EXAMPLES))
    assert code == 0
    assert (tmp_path / "tickets.sqlite3").exists()  # the default database
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 19
    for line in lines:
        assert list(line)[:4] == ["source", "action", "ticket", "reasons"]
    by_source = {Path(line["source"].split("#")[0]).name + line["source"].partition("#")[2]: line for line in lines}
    assert by_source["01-printer-broken.eml"]["action"] == "created"
    printer = by_source["01-printer-broken.eml"]["ticket"]
    assert by_source["03-re-printer-broken.eml"]["ticket"] == printer
    assert by_source["08-printer-broken-again.eml"]["action"] == "duplicate"
    assert by_source["05-auto-reply-bob.eml"]["action"] == "appended"
    assert by_source["05-auto-reply-bob.eml"]["autorespond"] is False
    assert by_source["09-bounce.eml"]["action"] == "ignored"
    assert by_source["11-re-invoice-new-subject.eml"]["ticket"] == by_source["04-invoice-question.eml"]["ticket"]
    assert by_source["maildir1772535600.M202P2202.mx.helpdesk.example"]["ticket"] == printer
    assert err.startswith("19 messages: 10 created, 6 appended, 1 duplicate, 2 ignored in ")  # with --json: stderr
    assert "\r" not in err  # no progress line when stderr is not a terminal

    code, out, _ = run(capsys, "tickets", "--json")
    assert code == 0
    tickets = [json.loads(line) for line in out.splitlines()]
    assert len(tickets) == 10
    for ticket in tickets:
        assert {"number", "subject", "requester", "status", "entries", "created", "updated"} <= set(ticket)
    by_number = {t["number"]: t for t in tickets}
    assert by_number[printer]["entries"] == 3
    assert by_number[printer]["requester"] == "alice@example.org"

    code, out, _ = run(capsys, "tickets")
    assert code == 0
    assert printer in out
    assert "NUMBER" in out.splitlines()[0]
    code, out, _ = run(capsys, "tickets", "--json", "--status", "closed")
    assert (code, out) == (0, "")
    code, out, _ = run(capsys, "tickets", "--json", "--status", "open", "--limit", "2")
    assert len(out.splitlines()) == 2

    code, out, _ = run(capsys, "show", printer, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["number"] == printer
    assert [e["kind"] for e in shown["entries"]] == ["message", "reply", "reply"]
    assert shown["entry_count"] == 3
    code, out, _ = run(capsys, "show", printer)
    assert code == 0
    assert "Printer on 3rd floor prints blank pages" in out
    assert "Rolling back the driver fixed it" in out

    # running the same ingest again changes nothing; by default one summary line on stdout
    code, out, err = run(capsys, "ingest", str(EXAMPLES))
    assert code == 0
    assert out.startswith("19 messages: 19 duplicate in ")
    assert out.count("\n") == 1
    assert err == ""
    code, out, err = run(capsys, "ingest", "--quiet", str(EXAMPLES))
    assert (code, out, err) == (0, "", "")
    code, out, _ = run(capsys, "ingest", "--json", str(EXAMPLES))
    assert code == 0
    again = [json.loads(line) for line in out.splitlines()]
    assert {line["action"] for line in again} == {"duplicate"}
    assert all(line["already_processed"] for line in again)


def test_threading_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.sqlite3")
    code, out, _ = run(capsys, "ingest", "--json", "--db", db, "--unknown-sender", "reject", str(EXAMPLES / "mail"))
    assert code == 0
    dana = next(json.loads(line) for line in out.splitlines() if "07-re-vpn-from-dana" in line)
    assert dana["action"] == "rejected"
    assert dana["reasons"][-1]["code"] == "thread.unknown_sender_reject"


def test_rules_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.sqlite3")
    rules = str(EXAMPLES / "rules.toml")
    code, out, _ = run(capsys, "ingest", "--json", "--db", db, "--rules", rules, str(EXAMPLES / "mail"))
    assert code == 0
    newsletter = next(json.loads(line) for line in out.splitlines() if "06-newsletter" in line)
    assert newsletter["action"] == "ignored"
    code, out, _ = run(capsys, "tickets", "--db", db, "--json")
    departments = {json.loads(line)["department"] for line in out.splitlines()}
    assert {"Billing", "IT"} <= departments


def test_errors_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.sqlite3")
    code, _, err = run(capsys, "tickets", "--db", db)
    assert code == 2
    assert "no ticket database" in err
    assert not Path(db).exists()  # reading never creates a database
    bad_rules = tmp_path / "rules.toml"
    bad_rules.write_text("[[filters]]\nname = 1\n")
    code, _, err = run(capsys, "ingest", "--db", db, "--rules", str(bad_rules), str(EXAMPLES / "mail"))
    assert code == 2
    assert "rules.toml" in err
    code, _, err = run(capsys, "ingest", "--db", db, str(tmp_path / "missing"))
    assert code == 2
    code, _, err = run(capsys, "ingest", "--db", db, "--subject-tag", "no placeholder", str(EXAMPLES / "mail"))
    assert code == 2
    assert "subject_tag" in err
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    code, out, err = run(capsys, "ingest", "--json", "--db", db, str(bad), str(empty))
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["action"] for line in lines] == ["failed", "failed"]
    assert lines[0]["error"]["code"] == "malformed_json"
    assert lines[1]["error"]["code"] == "malformed_email"
    # each failure is one readable line on stderr with its stable code, in every mode
    failures = [line for line in err.splitlines() if line.startswith("ticketmail: error: ")]
    assert len(failures) == 2
    assert failures[0].startswith(f"ticketmail: error: {bad}: failed, quarantined: ")
    assert failures[0].endswith("[malformed_json]")
    assert "2 messages: 2 failed (quarantined) in " in err
    from ticketmail.backends.sqlite import SQLiteBackend

    with SQLiteBackend(db) as backend:
        assert sorted(q.reason_code for q in backend.quarantined()) == ["malformed_email", "malformed_json"]
    for mode in ([], ["--quiet"]):
        bad.write_text("{still not json " + str(len(mode)))
        code, out, err = run(capsys, "ingest", *mode, "--db", db, str(bad))
        assert code == 1  # the exit status does not depend on the mode
        assert out == "" if mode else out.startswith("1 message: 1 failed (quarantined) in ")
        assert err.startswith(f"ticketmail: error: {bad}: failed, quarantined: ")
        assert "[malformed_json]" in err
    code, _, err = run(capsys, "show", "NOPE1234", "--db", db)
    assert code == 1
    assert "NOPE1234" in err


@pytest.mark.integration
def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    db = str(tmp_path / "t.sqlite3")
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ticketmail", "ingest", "--json", "--db", db, str(EXAMPLES)],
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=120,
            check=True,
        )
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    shown = b"".join(chunks).decode()
    assert "\r[" in shown
    assert "19/19" in shown
    assert "19 messages: 10 created" in shown  # the summary, on stderr with --json
    # stdout stays machine-readable
    assert all(json.loads(line)["action"] for line in proc.stdout.decode().splitlines())
