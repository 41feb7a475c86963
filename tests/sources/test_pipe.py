"""``ticketmail pipe``: one message on stdin -> sysexits, against a real SQLite file in a real subprocess."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticketmail.errors import BackendError, MalformedEmailError, PolicyRejectedError
from ticketmail.model import MailboxContext, Provenance
from ticketmail.pipeline import Outcome
from ticketmail.sources.pipe import EX_DATAERR, EX_NOPERM, EX_OK, EX_TEMPFAIL, deliver, exit_code_for

RULES = """
[[rules]]
name = "no-spam"
conditions = [{ field = "subject", op = "contains", value = "BUY NOW" }]
actions = { reject = true, reject_reason = "spam" }

[[filters]]
name = "noise"
type = "ignore"
keywords = ["ignore-me"]
"""


def mail(subject: str = "printer broken", body: str = "It jams.", sender: str = "alice@example.com") -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: help@desk.example\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash((subject, body, sender)))}@example.com>\r\n\r\n{body}\r\n"
    ).encode()


def run_pipe(stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ticketmail", "pipe", *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def tickets(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM tickets").fetchone()
    return int(n)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return path


@pytest.mark.integration
@pytest.mark.parametrize(
    ("stdin", "code", "word"),
    [
        (mail(), EX_OK, "ok: created"),
        (mail("hello", "please ignore-me"), EX_OK, "ok: ignored"),
        (mail("BUY NOW cheap"), EX_OK, "ok: rejected, kept in the quarantine"),
        (b"", EX_DATAERR, "data error"),
        (os.urandom(2000).replace(b"\n", b"").replace(b":", b""), EX_DATAERR, "data error"),
    ],
)
def test_exit_codes(tmp_path: Path, rules: Path, stdin: bytes, code: int, word: str) -> None:
    db = tmp_path / "t.sqlite3"
    proc = run_pipe(stdin, "--db", str(db), "--rules", str(rules))
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"ticketmail: {word}")
    assert "Traceback" not in proc.stderr.decode()


@pytest.mark.integration
def test_refused_mail_is_not_bounced_and_kept_with_its_bytes(tmp_path: Path, rules: Path) -> None:
    db = tmp_path / "t.sqlite3"
    raw = mail("BUY NOW cheap watches", sender="forged@victim.example")
    proc = run_pipe(raw, "--db", str(db), "--rules", str(rules))
    assert proc.returncode == EX_OK, proc.stderr
    nosender = b"To: help@desk.example\r\nSubject: hi\r\n\r\nno From header\r\n"
    assert run_pipe(nosender, "--db", str(db)).returncode == EX_OK
    with sqlite3.connect(db) as conn:
        kept = conn.execute("SELECT raw, reason_code FROM quarantine ORDER BY id").fetchall()
        audit = [a for (a,) in conn.execute("SELECT action FROM audit ORDER BY id")]
    assert kept == [(raw, "rejected"), (nosender, "rejected")]
    assert audit == ["rejected", "rejected"]
    assert tickets(db) == 0


@pytest.mark.integration
def test_spam_flagged_upstream_is_dropped_silently(tmp_path: Path) -> None:
    rules = tmp_path / "spam.toml"
    rules.write_text(
        '[[rules]]\nname = "spam"\nconditions = [{ field = "header:x-spam-flag", op = "equals", value = "yes" }]\n'
        'actions = { drop = true, drop_reason = "marked as spam by the mail server" }\n'
    )
    db = tmp_path / "t.sqlite3"
    spam = mail("You won", sender="prize@forged.example").replace(b"\r\n\r\n", b"\r\nX-Spam-Flag: YES\r\n\r\n", 1)
    proc = run_pipe(spam, "--db", str(db), "--rules", str(rules))
    assert proc.returncode == EX_OK, proc.stderr
    assert proc.stderr.decode().startswith("ticketmail: ok: ignored")
    with sqlite3.connect(db) as conn:
        (reasons,) = conn.execute("SELECT reasons FROM audit WHERE action = 'ignored'").fetchone()
        assert conn.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
    assert "rule.drop" in reasons
    assert "marked as spam by the mail server" in reasons
    assert tickets(db) == 0


@pytest.mark.integration
def test_redelivery_after_success_is_a_duplicate_not_a_second_ticket(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite3"
    assert run_pipe(mail(), "--db", str(db)).returncode == EX_OK
    again = run_pipe(mail(), "--db", str(db))
    assert again.returncode == EX_OK
    assert b"duplicate" in again.stderr
    assert tickets(db) == 1


@pytest.mark.integration
def test_backend_unavailable_is_tempfail(tmp_path: Path) -> None:
    proc = run_pipe(mail(), "--db", str(tmp_path / "missing-dir" / "t.sqlite3"))
    assert proc.returncode == EX_TEMPFAIL
    assert proc.stderr.decode().count("\n") == 1
    assert "Traceback" not in proc.stderr.decode()


@pytest.mark.integration
def test_locked_database_is_tempfail_and_the_retry_succeeds(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite3"
    assert run_pipe(mail("first"), "--db", str(db)).returncode == EX_OK
    conn = sqlite3.connect(db, timeout=0)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ticketmail", "pipe", "--db", str(db)],
            input=mail("second"),
            capture_output=True,
            timeout=120,
            check=False,
        )
    finally:
        conn.rollback()
        conn.close()
    assert proc.returncode == EX_TEMPFAIL, proc.stderr
    assert "Traceback" not in proc.stderr.decode()
    assert run_pipe(mail("second"), "--db", str(db)).returncode == EX_OK  # the MTA's retry
    assert tickets(db) == 2


@pytest.mark.integration
def test_bad_config_is_tempfail_so_mail_waits_for_the_admin(tmp_path: Path) -> None:
    cfg = tmp_path / "tm.toml"
    cfg.write_text("[storage\n")
    proc = run_pipe(mail(), "--config", str(cfg))
    assert proc.returncode == EX_TEMPFAIL
    assert "not valid TOML" in proc.stderr.decode()


@pytest.mark.integration
def test_config_gives_database_and_mailbox_context(tmp_path: Path) -> None:
    cfg = tmp_path / "tm.toml"
    cfg.write_text(
        '[storage]\nsqlite = "db.sqlite3"\n[[mailboxes]]\nname = "sales"\nprotocol = "maildir"\npath = "md"\n'
        'department = "Sales"\n'
    )
    proc = run_pipe(mail(), "--config", str(cfg), "--mailbox", "sales")
    assert proc.returncode == EX_OK, proc.stderr
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
        assert conn.execute("SELECT mailbox, department FROM tickets").fetchall() == [("sales", "Sales")]


@pytest.mark.integration
def test_oversize_is_dataerr(tmp_path: Path) -> None:
    proc = run_pipe(mail(body="x" * 5000), "--db", str(tmp_path / "t.sqlite3"), "--max-size", "1000")
    assert proc.returncode == EX_DATAERR


# -- the mapping, with stub pipelines -------------------------------------------------------------------


class Stub:
    def __init__(self, result: Outcome | BaseException) -> None:
        self.result = result

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def is_processed(self, provenance: Provenance) -> bool:
        return False


@pytest.mark.parametrize(
    ("result", "code"),
    [
        (Outcome("created", ticket="A1"), EX_OK),
        (Outcome("appended", ticket="A1"), EX_OK),
        (Outcome("ignored"), EX_OK),
        (Outcome("duplicate", already_processed=True), EX_OK),
        (Outcome("rejected", error=PolicyRejectedError("spam")), EX_OK),
        (Outcome("failed", error=MalformedEmailError("no headers")), EX_OK),
        (Outcome("failed", error=PolicyRejectedError("no")), EX_OK),
        (Outcome("failed"), EX_TEMPFAIL),
        (BackendError("database is locked"), EX_TEMPFAIL),
        (RuntimeError("bug"), EX_TEMPFAIL),
        (MemoryError(), EX_TEMPFAIL),
    ],
)
def test_mapping(result: Outcome | BaseException, code: int) -> None:
    got = deliver(mail(), Stub(result))
    assert got.code == code
    assert "\n" not in got.message
    if isinstance(result, Outcome):
        assert exit_code_for(result) == code


@settings(max_examples=50, deadline=None)
@given(raw=st.binary(max_size=2000))
def test_any_bytes_give_a_sysexits_code(raw: bytes) -> None:
    from ticketmail.backends.memory import InMemoryBackend
    from ticketmail.pipeline import Pipeline

    result = deliver(raw, Pipeline(InMemoryBackend()))
    assert result.code in (EX_OK, EX_DATAERR, EX_TEMPFAIL)
    assert result.code != EX_NOPERM  # a bounce would go to an unverified sender
    assert "\n" not in result.message
