"""`open_backend` and the `--db URL` form of the commands, against a real PostgreSQL server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ticketmail.backends.postgres import PostgresBackend, redact_url
from ticketmail.backends.postgres_schema import BackendSetupError, BackendUnavailableError
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.backends.url import is_database_url, local_state_dir, open_backend, split_options
from ticketmail.errors import ConfigError, InvalidValueError
from ticketmail.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_targets_are_told_apart(tmp_path: Path) -> None:
    assert is_database_url("postgresql://u@h/db")
    assert is_database_url("POSTGRES://u@h/db")
    assert not is_database_url("tickets.sqlite3")
    assert not is_database_url("/var/lib/postgresql/tickets.sqlite3")
    with open_backend(str(tmp_path / "t.sqlite3")) as backend:
        assert isinstance(backend, SQLiteBackend)
    with pytest.raises(ConfigError, match="unsupported database URL scheme"):
        open_backend("mysql://u@h/db")
    with pytest.raises(ConfigError, match="no ticket database"):
        open_backend(str(tmp_path / "missing.sqlite3"), create=False)
    assert split_options("postgresql://u@h/db?sslmode=require&schema=s1&pool_size=3") == (
        "postgresql://u@h/db?sslmode=require",
        {"schema": "s1", "pool_size": 3},
    )
    assert local_state_dir("postgresql://u@h/db") == Path("ticketmail.state")
    assert local_state_dir("/x/t.sqlite3") == Path("/x/t.sqlite3.state")


def test_passwords_never_show() -> None:
    assert redact_url("postgresql://desk:s3cret@db:5432/x") == "postgresql://desk:***@db:5432/x"
    assert "s3cret" not in redact_url("postgresql://db/x?password=s3cret&sslmode=require")
    with pytest.raises(BackendUnavailableError) as caught:
        PostgresBackend("postgresql://desk:s3cret@127.0.0.1:1/x", timeout=1)
    assert "s3cret" not in str(caught.value)


def test_url_opens_postgres_with_schema_and_create_false() -> None:
    server = PostgresServer.shared()
    url = server.create_database()
    try:
        with pytest.raises(BackendSetupError):
            open_backend(url + "?schema=fresh", create=False)
        with open_backend(url + "?schema=fresh&pool_size=2") as backend:
            assert isinstance(backend, PostgresBackend)
            assert backend.schema == "fresh"
            assert backend.schema_version >= 1
        with open_backend(url + "?schema=fresh", create=False) as backend:
            assert backend.list_tickets() == []
        with pytest.raises(InvalidValueError):
            PostgresBackend(url, schema="bad; drop")
        with pytest.raises(BackendSetupError):
            PostgresBackend(server.url("no_such_database"))
    finally:
        server.drop_database(url)


def test_ingest_tickets_and_show_with_a_database_url(tmp_path: Path) -> None:
    server = PostgresServer.shared()
    url = server.create_database()
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.M1P1.test").write_bytes(
        b"From: Ada <ada@example.org>\r\nTo: desk@example.test\r\nSubject: URL works\r\n"
        b"Message-ID: <url-1@example.org>\r\nDate: Mon, 02 Mar 2026 09:00:00 +0000\r\n\r\nHello\r\n"
    )

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ticketmail", *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        out = cli("ingest", "--json", "--db", url, "--no-progress", str(maildir))
        assert json.loads(out.splitlines()[0])["action"] == "created"
        again = cli("ingest", "--json", "--db", url, "--no-progress", str(maildir))
        assert json.loads(again.splitlines()[0])["action"] == "duplicate"
        tickets = [json.loads(line) for line in cli("tickets", "--db", url, "--json").splitlines()]
        assert [t["subject"] for t in tickets] == ["URL works"]
        assert "Hello" in cli("show", "--db", url, tickets[0]["number"])
    finally:
        server.drop_database(url)


def test_durability_and_lease_options_come_from_the_url() -> None:
    url, options = split_options("postgresql://u@h/db?synchronous_commit=off&lease_ttl=12.5&sslmode=require")
    assert url == "postgresql://u@h/db?sslmode=require"
    assert options == {"synchronous_commit": "off", "lease_ttl": 12.5}
    with pytest.raises(ConfigError, match="lease_ttl"):
        split_options("postgresql://u@h/db?lease_ttl=soon")
