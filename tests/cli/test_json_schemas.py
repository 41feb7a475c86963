"""Every `--json` output matches the schema `docs/cli.md` shows, and the page shows every schema."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from ticketmail.cli import main
from ticketmail.cli._schemas import SCHEMAS, problems, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BY_NAME = {schema.name: schema for schema in SCHEMAS}


def test_docs_show_every_schema_as_generated() -> None:
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    found = re.findall(r"<!-- json-schema: (\w+) -->\n(.*?)\n<!-- /json-schema -->", page, re.S)
    blocks = dict(found)
    assert [name for name, _ in found] == [s.name for s in SCHEMAS], "regenerate: python -m ticketmail.cli._schemas"
    for name, schema in BY_NAME.items():
        assert blocks[name] == render(schema), f"docs/cli.md is out of date for {name}; see _schemas.document()"


def _json(capsys: pytest.CaptureFixture[str], schema: str, *argv: str, code: int = 0) -> list[dict[str, Any]]:
    assert main(list(argv)) == code
    out = capsys.readouterr().out
    objects = [json.loads(line) for line in out.splitlines()]
    for obj in objects:
        assert problems(BY_NAME[schema], obj) == [], (argv, obj)
    return objects


@pytest.fixture
def desk(tmp_path: Path) -> Path:
    root = tmp_path / "desk"
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns("*.sqlite3*", "*.state"))
    (root / "api" / "99-broken.json").write_text("{not json", encoding="utf-8")
    return root


def test_every_json_output_matches_its_schema(
    desk: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(desk / "ticketmail.toml")
    db = str(desk / "tickets.sqlite3")
    paths = [str(desk / name) for name in ("mail", "api", "archive.mbox")]
    dry = _json(capsys, "ingest", "ingest", "--json", "--config", config, "--dry-run", *paths, code=1)
    assert all(line["dry_run"] for line in dry)
    lines = _json(capsys, "ingest", "ingest", "--json", "--config", config, *paths, code=1)
    assert {"created", "appended", "failed"} <= {line["action"] for line in lines}
    tickets = _json(capsys, "tickets", "tickets", "--json", "--config", config)
    (shown,) = _json(capsys, "show", "show", tickets[0]["number"], "--json", "--config", config)
    assert shown["entries"]
    decisions = _json(capsys, "audit", "audit", "--json", "--db", db)
    _json(capsys, "audit", "audit", "show", str(decisions[0]["id"]), "--json", "--db", db)
    (held,) = _json(capsys, "quarantine", "quarantine", "list", "--json", "--db", db)
    _json(capsys, "quarantine", "quarantine", "show", str(held["id"]), "--json", "--db", db)
    (retried,) = _json(capsys, "retry", "quarantine", "retry", "--all", "--json", "--db", db)
    assert retried["id"] == held["id"]
    _json(capsys, "apikey", "apikey", "add", "--json", "--db", db, "--ip", "127.0.0.1")
    _json(capsys, "apikey", "apikey", "list", "--json", "--db", db)
    fetched = _json(capsys, "fetch", "fetch", "--json", "--config", config, "--mailbox", "support")
    assert fetched
    _json(capsys, "status", "status", "--json", "--config", config)
    _json(capsys, "check", "check", "--json", "--config", config, "--mailbox", "support")
    for name in ("13-new-hire-form.json", "99-broken.json"):
        _json(capsys, "parse", "parse", "--json", str(desk / "api" / name), code=0 if name[0] == "1" else 1)
    _json(capsys, "parse", "parse", "--json", "--config", config, str(desk / "mail" / "05-auto-reply-bob.eml"))
    for raw, code in ((b"From: a@example.org\nSubject: piped\n\nhello\n", 0), (b"", 65)):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
        _json(capsys, "pipe", "pipe", "--json", "--config", config, "--mailbox", "billing", code=code)


def test_oauth_status_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "t.toml"
    config.write_text(
        '[storage]\npath = "t.sqlite3"\n[[mailboxes]]\nname = "m365"\nprotocol = "imap"\n'
        'host = "outlook.office365.com"\nusername = "desk@example.org"\nauth = "oauth2"\nprovider = "microsoft"\n'
        'client_id = "abc"\ntenant = "example.org"\n'
    )
    argv = ("oauth", "status", "--json", "--config", str(config), "--mailbox", "m365")
    (state,) = _json(capsys, "oauth", *argv, code=1)  # nothing stored yet: sign in first
    assert (state["stored"], state["grant"]) == (False, "refresh_token")


def test_quiet_prints_only_errors(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(desk / "ticketmail.toml")
    db = str(desk / "tickets.sqlite3")
    assert main(["ingest", "--quiet", "--config", config, str(desk / "mail")]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["fetch", "--quiet", "--config", config]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["ingest", "--quiet", "--config", config, str(desk / "api")]) == 1  # the exit status stays
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"ticketmail: error: {desk / 'api' / '99-broken.json'}: failed, quarantined: "
        + err.split(": failed, quarantined: ", 1)[1].splitlines()[0]
    ]
    assert err.rstrip().endswith("[malformed_json]")
    assert main(["quarantine", "retry", "--all", "--quiet", "--db", db]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["quarantine", "retry", "999", "--quiet", "--db", db]) == 1
    assert capsys.readouterr() == ("", "ticketmail: error: no quarantined message 999 [not_found]\n")
    assert main(["status", "--quiet", "--config", config]) == 0
    assert capsys.readouterr() == ("", "")


def test_default_output_is_a_summary_per_run(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(desk / "ticketmail.toml")
    assert main(["fetch", "--config", config]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"2 messages: 2 created in \d+\.\d s\n", out), out
    assert "ticketmail: support: 2 created" in err  # one line per mailbox on stderr
    assert main(["fetch", "--config", config, "--dry-run"]) == 0
    out, _ = capsys.readouterr()
    assert out.endswith("; nothing was stored, acknowledged, moved or flagged\n")
