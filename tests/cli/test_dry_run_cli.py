"""`ingest --dry-run` and `fetch --dry-run`: the real decisions, printed, and nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.cli import main
from ticketmail.testing.conformance import snapshot

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _state(db: Path) -> dict[str, object]:
    backend = SQLiteBackend(db)
    try:
        state = snapshot(backend)
        state["numbers"] = [t.number for t in backend.list_tickets()]
        return state
    finally:
        backend.close()


def test_ingest_dry_run_decides_and_stores_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.sqlite3"
    mails = sorted((EXAMPLES / "mail").glob("*.eml"))
    first, rest = mails[:3], tmp_path / "rest"
    rest.mkdir()
    for path in mails[3:]:
        (rest / path.name).write_bytes(path.read_bytes())
    assert main(["ingest", "--db", str(db), "--no-progress", *map(str, first)]) == 0
    capsys.readouterr()
    before = _state(db)
    assert main(["ingest", "--json", "--db", str(db), "--no-progress", "--dry-run", str(rest)]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert lines
    assert all(line["dry_run"] for line in lines)
    assert {line["action"] for line in lines} >= {"created", "appended"}
    assert "nothing was stored" in captured.err
    assert _state(db) == before
    assert main(["ingest", "--db", str(db), "--no-progress", "--dry-run", str(rest)]) == 0
    dry = capsys.readouterr()
    assert _state(db) == before
    # The real run afterwards makes the same decisions.
    assert main(["ingest", "--db", str(db), "--no-progress", str(rest)]) == 0
    real = capsys.readouterr().out
    # by default a summary line; a dry run also says what would happen to each message, for people
    assert real.startswith(f"{len(lines)} messages: ")
    assert real.count("\n") == 1
    summary = dry.out.splitlines()[-1]
    assert summary.startswith(f"dry run: {len(lines)} messages would be: ")
    assert summary.endswith("; nothing was stored")
    assert real.split(" in ")[0].split(": ", 1)[1] == summary.split(" in ")[0].split(" be: ", 1)[1]
    assert [row.split()[0] for row in dry.out.splitlines()[:-1]] == [line["action"] for line in lines]


def test_fetch_dry_run_on_a_maildir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for i, path in enumerate(sorted((EXAMPLES / "mail").glob("*.eml"))[:4]):
        (maildir / "new" / f"170000000{i}.M{i}P1.host").write_bytes(path.read_bytes())
    db = tmp_path / "t.sqlite3"
    config = tmp_path / "ticketmail.toml"
    config.write_text(
        f'[storage]\npath = "{db}"\n\n[[mailboxes]]\nname = "local"\nprotocol = "maildir"\npath = "{maildir}"\n'
        'after = "delete"\n',
        encoding="utf-8",
    )
    files_before = sorted(p.relative_to(maildir).as_posix() for p in maildir.rglob("*") if p.is_file())
    assert main(["fetch", "--json", "--config", str(config), "--dry-run"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert len(lines) == 4
    assert all(line["dry_run"] for line in lines)
    assert "dry run: 4 messages would be: " in captured.err
    assert captured.err.rstrip().endswith("; nothing was stored, acknowledged, moved or flagged")
    assert sorted(p.relative_to(maildir).as_posix() for p in maildir.rglob("*") if p.is_file()) == files_before
    if db.exists():
        backend = SQLiteBackend(db)
        try:
            assert backend.list_tickets() == []
            assert list(backend.audit_log()) == []
        finally:
            backend.close()
    with pytest.raises(SystemExit) as exited:  # a dry run looks once
        main(["fetch", "--config", str(config), "--dry-run", "--watch"])
    assert exited.value.code == 2
