"""``ticketmail apikey`` and ``ticketmail serve`` as real subprocesses."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.integration


def tm(*args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "ticketmail", *args], capture_output=True, text=True, check=check, timeout=60
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_apikey_add_list_revoke(tmp_path):
    db = str(tmp_path / "tickets.sqlite3")
    out = tm("apikey", "add", "--db", db, "--ip", "127.0.0.1", "--ip", "10.0.0.0/8", "--name", "monitoring").stdout
    secret = out.rstrip("\n").splitlines()[-1]
    assert secret.startswith("tm_")
    assert " " not in secret
    key_id = secret.split("_")[1]
    listing = [json.loads(line) for line in tm("apikey", "list", "--db", db, "--json").stdout.splitlines()]
    assert listing == [
        {
            "key_id": key_id,
            "name": "monitoring",
            "networks": ["127.0.0.1/32", "10.0.0.0/8"],
            "permissions": ["create_tickets", "submit_email"],
            "active": True,
            "created": listing[0]["created"],
        }
    ]
    table = tm("apikey", "list", "--db", db).stdout
    assert key_id in table
    assert secret not in table
    assert tm("apikey", "revoke", "--db", db, key_id).stdout.strip() == f"API key {key_id} revoked"
    assert json.loads(tm("apikey", "list", "--db", db, "--json").stdout.splitlines()[0])["active"] is False


def test_apikey_errors(tmp_path):
    db = str(tmp_path / "tickets.sqlite3")
    bad = tm("apikey", "add", "--db", db, "--ip", "10.0.0.1/8", check=False)
    assert bad.returncode == 1
    assert "10.0.0.1/8" in bad.stderr
    assert tm("apikey", "revoke", "--db", db, "nope", check=False).returncode == 1
    assert tm("apikey", "add", "--db", db, "--ip", "::1", "--permission", "root", check=False).returncode == 2
    assert "no API keys" in tm("apikey", "list", "--db", db).stdout


def test_serve_end_to_end(tmp_path):
    db = str(tmp_path / "tickets.sqlite3")
    secret = tm("apikey", "add", "--db", db, "--ip", "127.0.0.1").stdout.splitlines()[-1]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticketmail", "serve", "--db", db, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "serving the ticket API" in proc.stdout.readline()
        raw = b"From: a@example.com\r\nTo: help@example.net\r\nSubject: Hello\r\nMessage-ID: <1@x>\r\n\r\nHi\r\n"
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/tickets.email", data=raw, headers={"X-API-Key": secret}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 201
            number = resp.read().decode()
        assert number
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/api/tickets.json", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=10)
        assert info.value.code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    lines = [line for line in err.splitlines() if "ticketmail.api.access" in line]
    assert len(lines) == 2
    assert "POST /api/tickets.email 201" in lines[0]
    assert "POST /api/tickets.json 401" in lines[1]
    assert secret not in err
    from ticketmail.backends.sqlite import SQLiteBackend

    backend = SQLiteBackend(db)
    assert [t.number for t in backend.list_tickets()] == [number]
    backend.close()


def test_serve_port_in_use_fails_cleanly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = tm("serve", "--db", str(tmp_path / "t.sqlite3"), "--port", str(port), check=False)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_cron_fetches_a_maildir(tmp_path):
    """POST /api/tasks/cron on `serve --config` runs the real poller over a real Maildir."""
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1700000000.1.host").write_bytes(
        b"From: carol@example.com\r\nTo: help@example.net\r\nSubject: From the maildir\r\n"
        b"Message-ID: <maildir-1@example.com>\r\n\r\nPlease help.\r\n"
    )
    db = tmp_path / "tickets.sqlite3"
    config = tmp_path / "ticketmail.toml"
    config.write_text(
        f'[storage]\nsqlite = "{db}"\n\n[[mailboxes]]\nname = "local"\nprotocol = "maildir"\n'
        f'path = "{maildir}"\nafter = "delete"\n'
    )
    cron_key = tm("apikey", "add", "--db", str(db), "--ip", "127.0.0.1", "--permission", "run_cron").stdout
    cron_key = cron_key.splitlines()[-1]
    ticket_key = tm("apikey", "add", "--db", str(db), "--ip", "127.0.0.1").stdout.splitlines()[-1]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticketmail", "serve", "--db", str(db), "--port", str(port), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.stdout.readline()
        url = f"http://127.0.0.1:{port}/api/tasks/cron"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, data=b"", headers={"X-API-Key": ticket_key}), timeout=30)
        assert info.value.code == 403
        req = urllib.request.Request(url, data=b"", headers={"X-API-Key": cron_key}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert (resp.status, resp.read()) == (200, b"Completed")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    from ticketmail.backends.sqlite import SQLiteBackend

    backend = SQLiteBackend(db)
    (ticket,) = backend.list_tickets()
    backend.close()
    assert ticket.subject == "From the maildir"
    assert list((maildir / "new").iterdir()) == []


def test_serve_cron_by_get_and_502_when_a_mailbox_fails(tmp_path):
    """`wget`-style GET runs the cycle; a failing mailbox makes it 502 source_error (so `curl -f` notices)."""
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1700000000.2.host").write_bytes(
        b"From: dave@example.com\r\nTo: help@example.net\r\nSubject: Still fetched\r\n"
        b"Message-ID: <maildir-2@example.com>\r\n\r\nThe good mailbox runs anyway.\r\n"
    )
    db = tmp_path / "tickets.sqlite3"
    config = tmp_path / "ticketmail.toml"
    dead_port = free_port()  # nothing listens there: connection refused
    config.write_text(
        f'[storage]\nsqlite = "{db}"\n\n[[mailboxes]]\nname = "local"\nprotocol = "maildir"\n'
        f'path = "{maildir}"\nafter = "delete"\n\n[[mailboxes]]\nname = "broken"\nprotocol = "imap"\n'
        f'host = "127.0.0.1"\nport = {dead_port}\nsecurity = "none"\nusername = "u"\npassword = "p"\n'
    )
    cron_key = tm("apikey", "add", "--db", str(db), "--ip", "127.0.0.1", "--permission", "run_cron").stdout
    cron_key = cron_key.splitlines()[-1]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticketmail", "serve", "--db", str(db), "--port", str(port), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.stdout.readline()
        url = f"http://127.0.0.1:{port}/api/tasks/cron"
        req = urllib.request.Request(url, headers={"X-API-Key": cron_key}, method="GET")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=60)
        assert info.value.code == 502
        assert info.value.headers["X-Ticketmail-Error"] == "source_error"
        body = info.value.read().decode()
        assert "1 of 2 mailboxes failed: broken" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    from ticketmail.backends.sqlite import SQLiteBackend

    backend = SQLiteBackend(db)
    (ticket,) = backend.list_tickets()
    backend.close()
    assert ticket.subject == "Still fetched"
