"""``--config`` on every command: flags over the file, one bad mailbox among good ones, ``check`` order, forms."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ticketmail.api.handler import Request
from ticketmail.cli import main
from ticketmail.cli.serve import _client_address
from ticketmail.config import load_data

MAIL = b"From: Ann <ann@example.org>\nTo: desk@example.org\nSubject: Hello\nMessage-ID: <m-%d@example.org>\n\nHi\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def maildir(path: Path, count: int) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    for i in range(count):
        (path / "new" / f"{i}.test").write_bytes(MAIL % i)
    return path


def test_one_bad_mailbox_is_reported_and_the_good_ones_still_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maildir(tmp_path / "md", 2)
    config = tmp_path / "t.toml"
    config.write_text(
        '[storage]\npath = "t.sqlite3"\n'
        '[[mailboxes]]\nname = "broken"\nprotocol = "imap"\nhost = "h"\nusername = "u"\npassword = 12345\n'
        '[[mailboxes]]\nname = "md"\nprotocol = "maildir"\npath = "md"\n'
    )
    code, out, err = run(capsys, "fetch", "--json", "--config", str(config))
    assert code == 2
    assert [json.loads(line)["action"] for line in out.splitlines()] == ["created", "created"]
    assert "mailboxes[0].password" in err
    assert "12345" not in err
    assert "md: 2 created" in err  # with --json the summary lines go to stderr
    assert "2 messages: 2 created in " in err
    code, out, err = run(capsys, "status", "--config", str(config))
    assert code == 2
    assert "md" in out
    assert "mailboxes[0].password" in err
    code, out, _ = run(capsys, "check", "--config", str(config), "--json")
    assert code == 1
    rows = {row["mailbox"]: row for row in map(json.loads, out.splitlines())}
    assert (rows["broken"]["ok"], rows["broken"]["stage"]) == (False, "config")
    assert rows["md"]["ok"] is True


def test_fetch_of_only_the_broken_mailbox_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[storage]\npath = "t.sqlite3"\n[[mailboxes]]\nname = "x"\nprotocol = "maildir"\n')
    code, _, err = run(capsys, "fetch", "--config", str(config), "--mailbox", "x")
    assert code == 2
    assert "path: required" in err
    code, _, err = run(capsys, "fetch", "--config", str(config), "--mailbox", "nope")
    assert code == 2
    assert "no mailbox named 'nope'" in err


def test_check_reads_credentials_before_any_network_and_says_disabled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TM_TEST_UNSET_PASSWORD", raising=False)
    maildir(tmp_path / "md", 0)
    config = tmp_path / "t.toml"
    config.write_text(
        # A host that would take the DNS stage to fail: the check must stop at "config" before it.
        '[[mailboxes]]\nname = "imap"\nprotocol = "imap"\nhost = "mail.does-not-exist.invalid"\n'
        'username = "u"\npassword_env = "TM_TEST_UNSET_PASSWORD"\ntimeout = 30\n'
        '[[mailboxes]]\nname = "off"\nprotocol = "maildir"\npath = "md"\nenabled = false\n'
    )
    started = time.monotonic()
    code, out, _ = run(capsys, "check", "--config", str(config))
    assert time.monotonic() - started < 5
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == (
        "imap: FAILED at config: mailbox 'imap': environment variable TM_TEST_UNSET_PASSWORD is not set or empty"
    )
    assert lines[1] == "off: ok [disabled: fetch skips this mailbox]"
    code, out, _ = run(capsys, "check", "--config", str(config), "--mailbox", "off", "--json")
    assert code == 0
    row = json.loads(out)
    assert row["enabled"] is False
    assert "disabled" in row["message"]


def test_a_failing_disabled_mailbox_does_not_fail_check_unless_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[[mailboxes]]\nname = "off"\nprotocol = "maildir"\npath = "absent"\nenabled = false\n')
    code, out, _ = run(capsys, "check", "--config", str(config))
    assert code == 0
    assert out.startswith("off: FAILED at folder")
    assert "[disabled: fetch skips this mailbox]" in out
    assert run(capsys, "check", "--config", str(config), "--mailbox", "off")[0] == 1


def test_db_flag_overrides_the_storage_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[storage]\npath = "from-file.sqlite3"\n')
    mail = tmp_path / "a.eml"
    mail.write_bytes(MAIL % 1)
    assert run(capsys, "ingest", "--config", str(config), str(mail))[0] == 0
    assert (tmp_path / "from-file.sqlite3").exists()
    other = tmp_path / "other.sqlite3"
    assert run(capsys, "ingest", "--config", str(config), "--db", str(other), str(mail))[0] == 0
    assert other.exists()
    code, out, _ = run(capsys, "tickets", "--config", str(config), "--json")
    assert (code, len(out.splitlines())) == (0, 1)


def test_ingest_json_uses_the_forms_of_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "t.toml"
    config.write_text(
        '[storage]\npath = "t.sqlite3"\n[[forms.fields]]\nname = "order_date"\ntype = "date"\n'
        '[[forms.fields]]\nname = "budget"\ntype = "number"\n'
    )
    payload = {"email": "a@example.org", "name": "A", "subject": "S", "message": "M"}
    body = tmp_path / "p.json"
    body.write_text(json.dumps({**payload, "order_date": "2026-03-09", "budget": 12.5, "phone": "5551234"}))
    code, out, err = run(capsys, "ingest", "--json", "--config", str(config), str(body))
    assert code == 0, err
    line = json.loads(out)
    assert line["action"] == "created"
    code, out, _ = run(capsys, "show", "--config", str(config), line["ticket"], "--json")
    fields = json.loads(out)["custom_fields"]
    assert set(fields) >= {"order_date", "budget", "phone"}


def test_parse_form_extends_the_default_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = {"email": "a@example.org", "name": "A", "subject": "S", "message": "M", "phone": "5551234"}
    body = tmp_path / "p.json"
    body.write_text(json.dumps({**payload, "team": "red"}))
    form = tmp_path / "form.toml"
    form.write_text('[[fields]]\nname = "team"\n')
    code, out, _ = run(capsys, "parse", "--json", "--form", str(form), str(body))
    assert code == 0
    doc: dict[str, Any] = json.loads(out)
    assert doc["result"]["custom_fields"] == {"team": "red"}
    assert doc["result"]["phone"]["number"] == "5551234"
    form.write_text('replace = true\n[[fields]]\nname = "team"\n')
    code, out, _ = run(capsys, "parse", "--json", "--form", str(form), str(body))
    assert (code, json.loads(out)["error"]["field"]) == (1, "phone")


def test_parse_with_config_shows_the_attachment_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[attachments]\nallowed_types = ["image/*"]\n[[forms.fields]]\nname = "team"\n')
    payload = {
        "email": "a@example.org",
        "name": "A",
        "subject": "S",
        "message": "M",
        "team": "red",
        "attachments": [{"notes.txt": "data:text/plain,hello"}],
    }
    body = tmp_path / "p.json"
    body.write_text(json.dumps(payload))
    code, out, _ = run(capsys, "parse", "--json", "--config", str(config), str(body))
    assert code == 0
    doc = json.loads(out)
    assert doc["result"]["custom_fields"] == {"team": "red"}
    assert doc["attachment_policy"]["kept"] == []
    assert doc["attachment_policy"]["rejected"][0]["code"] == "type_not_allowed"


def test_trusted_proxies_name_the_client() -> None:
    config = load_data({"api": {"trusted_proxies": ["10.0.0.0/8"]}})
    resolve = _client_address(config.api.trusted_proxies)

    def seen(remote: str, forwarded: str | None) -> str:
        headers = [("X-Forwarded-For", forwarded)] if forwarded is not None else []
        return resolve(Request("POST", "/api/tickets.json", headers=headers, remote_addr=remote)).remote_addr

    assert seen("10.0.0.5", "203.0.113.7") == "203.0.113.7"
    assert seen("10.0.0.5", "198.51.100.1, 203.0.113.7, 10.0.0.9") == "203.0.113.7"  # rightmost untrusted hop
    assert seen("192.0.2.1", "203.0.113.7") == "192.0.2.1"  # not a trusted proxy: the header is ignored
    assert seen("10.0.0.5", None) == "10.0.0.5"
    assert seen("10.0.0.5", "garbage") == "10.0.0.5"


def test_pipe_without_config_uses_the_default_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MAIL % 7)))
    code, _, err = run(capsys, "pipe", "--mailbox", "anything")
    assert code == 0, err
    assert (tmp_path / "tickets.sqlite3").exists()


def test_alerts_table_is_validated_and_fetch_sends_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    config = tmp_path / "t.toml"
    config.write_text('[storage]\npath = "t.sqlite3"\n[alerts]\nwebhok = "https://x"\n')
    code, _, err = run(capsys, "fetch", "--config", str(config))
    assert code == 2
    assert "[alerts]" in err
    assert "did you mean 'webhook'?" in err
    sink = tmp_path / "alerts.jsonl"
    script = f"import sys; open({str(sink)!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')"
    config.write_text(
        '[storage]\npath = "t.sqlite3"\n'
        '[[mailboxes]]\nname = "gone"\nprotocol = "maildir"\npath = "no-such-maildir"\n'
        f'[alerts]\ncommand = [{json.dumps(sys.executable)}, "-c", {json.dumps(script)}]\nevents = ["down"]\n'
    )
    code, _, err = run(capsys, "fetch", "--config", str(config))
    assert code == 1, err
    events = [json.loads(line) for line in sink.read_text().splitlines() if line.strip()]
    assert [(e["event"], e["mailbox"]) for e in events] == [("down", "gone")]
