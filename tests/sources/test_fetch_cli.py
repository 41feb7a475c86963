"""``ticketmail fetch/check/status`` as real subprocesses against the real Dovecot and real SQLite files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ticketmail.sources.lock import MailboxLock

pytestmark = pytest.mark.integration


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))


def imap_block(dovecot: Any, user: str, name: str, **extra: Any) -> str:
    fields: dict[str, Any] = {
        "name": name,
        "protocol": "imap",
        "host": dovecot.host,
        "port": dovecot.ports["imaps"],
        "security": "ssl",
        "ca_file": dovecot.ca_file,
        "username": user,
        "password": dovecot.password,
        "after": "delete",
        "timeout": 10,
    }
    fields.update(extra)
    return "[[mailboxes]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items())


def write_config(tmp_path: Path, *blocks: str) -> Path:
    cfg = tmp_path / "ticketmail.toml"
    cfg.write_text('[storage]\nsqlite = "tickets.sqlite3"\n\n' + "\n".join(blocks))
    return cfg


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ticketmail", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_fetch_once_prints_a_line_per_message_and_drains(
    tmp_path: Path, dovecot: Any, mail_user: str, make_message: Callable[..., bytes]
) -> None:
    dovecot.append_many(mail_user, [make_message(i) for i in range(6)])
    cfg = write_config(tmp_path, imap_block(dovecot, mail_user, "support"))
    proc = cli("fetch", "--json", "--config", str(cfg), "--once")
    assert proc.returncode == 0, proc.stderr
    out = lines(proc.stdout)
    assert len(out) == 6
    assert {o["action"] for o in out} == {"created"}
    assert {o["mailbox"] for o in out} == {"support"}
    assert all(o["source"].startswith("imap:support/") and o["ticket"] for o in out)
    assert "support: 6 created" in proc.stderr
    assert dovecot.state(mail_user) == []
    again = cli("fetch", "--json", "--config", str(cfg))
    assert again.returncode == 0
    assert again.stdout == ""


def test_one_dead_mailbox_does_not_stop_the_others_and_status_shows_it(
    tmp_path: Path, dovecot: Any, mail_user: str, make_message: Callable[..., bytes]
) -> None:
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    cfg = write_config(
        tmp_path,
        imap_block(dovecot, mail_user, "dead", port=dovecot.closed_port),
        imap_block(dovecot, "nobody", "badpw", password="wrong"),
        imap_block(dovecot, mail_user, "good"),
    )
    proc = cli("fetch", "--json", "--config", str(cfg), "--once")
    assert proc.returncode == 1
    assert len(lines(proc.stdout)) == 3
    assert "dead: FAILED at connect" in proc.stderr
    assert "dead: unreachable (connect)" in proc.stderr  # the health event, once per transition
    assert "badpw: FAILED at auth" in proc.stderr
    assert "wrong" not in proc.stderr  # never the password
    status = cli("status", "--config", str(cfg), "--json")
    assert status.returncode == 1
    health = {h["name"]: h for h in lines(status.stdout)}
    assert health["dead"]["state"] == "unreachable"
    assert health["dead"]["last_error"]["stage"] == "connect"
    assert health["badpw"]["last_error"]["stage"] == "auth"
    assert health["good"]["state"] == "ok"
    assert health["good"]["last_processed"] == 3
    assert health["good"]["waiting"] in (0, None)
    table = cli("status", "--config", str(cfg))
    assert table.stdout.splitlines()[0].split()[:2] == ["MAILBOX", "STATE"]
    assert any(line.startswith("dead") and "unreachable" in line for line in table.stdout.splitlines())
    assert (tmp_path / "tickets.sqlite3.state" / "health.json").exists()


def test_check_reports_ok_with_capabilities_and_failing_stages(tmp_path: Path, dovecot: Any, mail_user: str) -> None:
    cfg = write_config(
        tmp_path,
        imap_block(dovecot, mail_user, "good"),
        imap_block(dovecot, mail_user, "badpw", password="wrong"),
        imap_block(dovecot, mail_user, "nofolder", folder="Does/Not/Exist"),
        imap_block(dovecot, mail_user, "closed", port=dovecot.closed_port),
    )
    proc = cli("check", "--config", str(cfg), "--json")
    assert proc.returncode == 1
    results = {r["mailbox"]: r for r in lines(proc.stdout)}
    assert results["good"]["ok"] is True
    assert "IDLE" in results["good"]["capabilities"]
    assert (results["badpw"]["ok"], results["badpw"]["stage"]) == (False, "auth")
    assert (results["nofolder"]["ok"], results["nofolder"]["stage"]) == (False, "folder")
    assert (results["closed"]["ok"], results["closed"]["stage"]) == (False, "connect")
    text = cli("check", "--config", str(cfg), "--mailbox", "good")
    assert text.returncode == 0
    assert text.stdout.startswith("good: ok")


def test_busy_mailbox_is_skipped(
    tmp_path: Path, dovecot: Any, mail_user: str, make_message: Callable[..., bytes]
) -> None:
    dovecot.append(mail_user, make_message(1))
    cfg = write_config(tmp_path, imap_block(dovecot, mail_user, "support"))
    lock = MailboxLock(tmp_path / "tickets.sqlite3.state", "support")
    assert lock.acquire()
    try:
        proc = cli("fetch", "--config", str(cfg))
    finally:
        lock.release()
    assert proc.returncode == 0
    assert "support: skipped, another fetch is running" in proc.stderr
    assert len(dovecot.state(mail_user)) == 1


def test_watch_with_idle_delivers_in_real_time_and_stops_on_sigterm(
    tmp_path: Path, dovecot: Any, mail_user: str, make_message: Callable[..., bytes]
) -> None:
    cfg = write_config(tmp_path, imap_block(dovecot, mail_user, "support", idle=True, poll_interval=300))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticketmail", "fetch", "--json", "--config", str(cfg), "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # connected and idling
        sent = time.monotonic()
        dovecot.append(mail_user, make_message(7))
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        latency = time.monotonic() - sent
        assert line["action"] == "created"
        assert latency < 5, latency
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert dovecot.state(mail_user) == []


def test_bad_config_is_usage_error(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[[mailboxes]]\nname = "x"\nprotocol = "imap"\nport = "993"\n')
    proc = cli("fetch", "--config", str(cfg))
    assert proc.returncode == 2
    assert "mailboxes[0]" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_maildir_and_mbox_mailboxes_through_the_cli(tmp_path: Path, make_message: Callable[..., bytes]) -> None:
    import mailbox

    md = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    for i in range(3):
        (md / "new" / f"{i}.test").write_bytes(make_message(i))
    box = mailbox.mbox(tmp_path / "spool", create=True)
    for i in range(3, 5):
        box.add(make_message(i))
    box.flush()
    box.close()
    cfg = write_config(
        tmp_path,
        '[[mailboxes]]\nname = "md"\nprotocol = "maildir"\npath = "Maildir"\nafter = "move:Done"\n',
        '[[mailboxes]]\nname = "spool"\nprotocol = "mbox"\npath = "spool"\nafter = "delete"\n',
    )
    proc = cli("fetch", "--json", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    out = lines(proc.stdout)
    assert sorted(o["mailbox"] for o in out) == ["md", "md", "md", "spool", "spool"]
    assert os.listdir(md / "new") == []
    assert len(os.listdir(md / ".Done" / "cur")) == 3
    assert (tmp_path / "spool").read_bytes() == b""


def test_poller_table_is_validated(tmp_path: Path) -> None:
    (tmp_path / "md" / "new").mkdir(parents=True)
    (tmp_path / "md" / "cur").mkdir()
    (tmp_path / "md" / "tmp").mkdir()
    base = '[storage]\nsqlite = "t.sqlite3"\n[[mailboxes]]\nname = "md"\nprotocol = "maildir"\npath = "md"\n'
    cfg = tmp_path / "t.toml"
    cfg.write_text(base + "[poller]\ntime_budgte = 5\n")
    proc = cli("fetch", "--config", str(cfg))
    assert proc.returncode == 2
    assert "[poller] time_budgte: unknown key; did you mean 'time_budget'?" in proc.stderr
    cfg.write_text(base + '[poller]\ntime_budget = "soon"\n')
    proc = cli("fetch", "--config", str(cfg))
    assert proc.returncode == 2
    assert "poller.time_budget must be a number >= 0" in proc.stderr
    cfg.write_text(base + "[poller]\ntime_budget = 30\nbackoff_cap = 60\n")
    assert cli("fetch", "--config", str(cfg)).returncode == 0


def test_state_dir_from_storage_table(tmp_path: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "md" / sub).mkdir(parents=True)
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        '[storage]\nsqlite = "t.sqlite3"\nstate_dir = "var/state"\n'
        '[[mailboxes]]\nname = "md"\nprotocol = "maildir"\npath = "md"\n'
    )
    assert cli("fetch", "--config", str(cfg)).returncode == 0
    assert (tmp_path / "var" / "state" / "health.json").exists()
    status = cli("status", "--config", str(cfg), "--json")
    assert status.returncode == 0
    assert lines(status.stdout)[0]["state"] == "ok"


def test_sigterm_during_fetch_once_finishes_the_message_in_hand(tmp_path: Path) -> None:
    md = tmp_path / "md"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    for i in range(600):
        (md / "new" / f"{1700000000 + i}.x{i}").write_bytes(
            f"From: c{i}@example.org\r\nSubject: s{i}\r\nMessage-ID: <t{i}@x>\r\n\r\nbody\r\n".encode()
        )
    cfg = write_config(tmp_path, '[[mailboxes]]\nname = "md"\nprotocol = "maildir"\npath = "md"\nmax_per_run = 1000\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticketmail", "fetch", "--json", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # it is processing
    proc.send_signal(signal.SIGTERM)
    # Read the rest through the same buffered stream: communicate() reads the raw pipe and would miss the
    # lines readline() already pulled into the buffer.
    out = proc.stdout.read()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 0, err
    assert "interrupted by a signal" in err
    done = 1 + len(out.splitlines())
    assert 0 < done < 600
    assert len(os.listdir(md / "cur")) == done  # exactly the processed ones were acknowledged
    assert len(os.listdir(md / "new")) == 600 - done
