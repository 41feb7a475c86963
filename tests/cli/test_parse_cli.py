"""``ticketmail parse``: the CLI contract (one JSON document on stdout, exit codes)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ticketmail.cli import main
from ticketmail.testing.osticket import OSTICKET_XML

PAYLOAD = {
    "name": "Angry User",
    "email": "api@osticket.com",
    "subject": "Testing API",
    "message": "data:text/html,MESSAGE <b>HERE</b>",
    "attachments": [{"file.txt": "data:text/plain;charset=utf-8,content"}],
}
EMAIL = (
    b"From: Bob <bob@example.com>\nTo: help@example.com\nSubject: Out of office\n"
    b"Auto-Submitted: auto-replied\nMessage-ID: <1@example.com>\n\nI am away.\n"
)
ERROR_KEYS = {"code", "status", "message", "field"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(["parse", "--json", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert out.count("\n") == 1  # exactly one JSON document, on one line
    return code, json.loads(out)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_json_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run(capsys, write(tmp_path, "t.json", json.dumps(PAYLOAD).encode()))
    assert code == 0
    assert (doc["format"], doc["kind"]) == ("json", "ticket_request")
    result = doc["result"]
    assert result["email"] == {"email": "api@osticket.com", "name": "Angry User"}
    assert result["message"] == {"text": "MESSAGE <b>HERE</b>", "content_type": "text/html"}
    (attachment,) = result["attachments"]
    assert attachment["filename"] == "file.txt"
    assert attachment["content_type"] == "text/plain"
    assert attachment["size"] == 7
    assert attachment["sha256"] == "ed7002b439e9ac845f22357d822bac1444730fbdb6016d3ec9432297b9ec9f73"
    assert "data" not in attachment
    assert "decision" not in doc


def test_include_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run(capsys, "--include-bytes", write(tmp_path, "t.json", json.dumps(PAYLOAD).encode()))
    assert code == 0
    assert base64.b64decode(doc["result"]["attachments"][0]["data"]) == b"content"


def test_xml_auto_and_explicit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "t.xml", OSTICKET_XML)
    code, doc = run(capsys, path)
    assert (code, doc["format"]) == (0, "xml")
    assert doc["result"]["phone"] == {"number": "318-555-8634", "ext": "123"}
    code, doc = run(capsys, "--as", "xml", path)
    assert (code, doc["format"]) == (0, "xml")
    code, doc = run(capsys, "--as", "json", path)
    assert code == 1
    assert doc["error"]["code"] == "malformed_json"


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake = io.TextIOWrapper(io.BytesIO(json.dumps(PAYLOAD).encode()))
    monkeypatch.setattr(sys, "stdin", fake)
    code, doc = run(capsys, "-")
    assert code == 0
    assert doc["result"]["subject"] == "Testing API"


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({**PAYLOAD, "email": "nope"}, "invalid_email", "email"),
        ({**PAYLOAD, "ip": "300.1.1.1"}, "invalid_value", "ip"),
        ({k: v for k, v in PAYLOAD.items() if k != "subject"}, "missing_field", "subject"),
        ({**PAYLOAD, "colour": "red"}, "unsupported_field", "colour"),
        ({**PAYLOAD, "attachments": [{"a": "data:;base64,%%%"}]}, "invalid_data_url", "attachments[0].data"),
    ],
)
def test_rejected_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: Any, code: str, field: str) -> None:
    status, doc = run(capsys, write(tmp_path, "t.json", json.dumps(body).encode()))
    assert status == 1
    assert set(doc) == {"error"}
    assert set(doc["error"]) == ERROR_KEYS
    assert (doc["error"]["code"], doc["error"]["field"], doc["error"]["status"]) == (code, field, 400)


def test_forbidden_xml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xxe = b'<!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]><ticket><name>&x;</name></ticket>'
    status, doc = run(capsys, write(tmp_path, "x.xml", xxe))
    assert (status, doc["error"]["code"]) == (1, "forbidden_xml")


def test_undecidable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, doc = run(capsys, write(tmp_path, "x.txt", b"just some words"))
    assert (status, doc["error"]["code"], doc["error"]["status"]) == (1, "unsupported_content_type", 415)


def test_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, doc = run(capsys, str(tmp_path / "missing.json"))
    assert status == 2
    assert doc["error"]["code"] == "unreadable_input"
    assert doc["error"]["field"] == "FILE"
    status, doc = run(capsys, str(tmp_path))
    assert (status, doc["error"]["code"]) == (2, "unreadable_input")


def test_internal_error_has_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ticketmail.parsing

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(ticketmail.parsing, "parse", boom)
    monkeypatch.delenv("TICKETMAIL_DEBUG", raising=False)
    status, doc = run(capsys, write(tmp_path, "t.json", json.dumps(PAYLOAD).encode()))
    assert status == 70
    assert doc["error"]["code"] == "internal_error"
    assert doc["error"]["status"] == 500
    assert "RuntimeError" in doc["error"]["message"]
    assert "secret detail" not in doc["error"]["message"]


def test_email_with_automatic_classification(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "m.eml", EMAIL)
    for argv in ([path], ["--as", "email", path]):
        status, doc = run(capsys, *argv)
        assert status == 0
        assert (doc["format"], doc["kind"]) == ("email", "email")
        assert doc["result"]["subject"] == "Out of office"
        assert doc["result"]["from"]["email"] == "bob@example.com"
        assert doc["automatic"]["kind"] in ("auto_reply", "out_of_office")


def test_rules_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = write(
        tmp_path,
        "rules.toml",
        b'[[rules]]\nname = "api"\nconditions = [{ field = "subject", op = "contains", value = "Testing" }]\n'
        b'actions = { department = "Support" }\n',
    )
    status, doc = run(capsys, "--rules", rules, write(tmp_path, "t.json", json.dumps(PAYLOAD).encode()))
    assert status == 0
    assert doc["decision"]["action"] == "accept"
    assert doc["decision"]["attributes"]["department"] == "Support"


def test_bad_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = write(tmp_path, "rules.toml", b"[[rules]]\nnonsense = 1\n")
    status, doc = run(capsys, "--rules", rules, write(tmp_path, "t.json", json.dumps(PAYLOAD).encode()))
    assert status == 1
    assert doc["error"]["code"] in ("invalid_config", "invalid_rules")


def test_usage_errors() -> None:
    with pytest.raises(SystemExit) as info:
        main(["parse", "--as", "yaml", "x"])
    assert info.value.code == 2


@pytest.mark.integration
def test_real_subprocess(tmp_path: Path) -> None:
    path = write(tmp_path, "t.xml", OSTICKET_XML)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-m", "ticketmail", "parse", "--json", path],
        capture_output=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["result"]["attachments"][0]["size"] == len(b"File content is here and is automatically trimmed")
    bad = subprocess.run(
        [sys.executable, "-m", "ticketmail", "parse", "--json", "-"],
        input=b'{"name": 1}',
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"]["code"] == "type_mismatch"
    assert b"Traceback" not in bad.stderr


def test_form_file_and_ignore_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = write(tmp_path, "t.json", json.dumps({**PAYLOAD, "product": "Printer", "colour": "red"}).encode())
    form = write(
        tmp_path,
        "form.toml",
        b'[[fields]]\nname = "product"\ntype = "choice"\nchoices = { p1 = "Printer" }\n',
    )
    status, doc = run(capsys, "--form", form, body)
    assert (status, doc["error"]["code"], doc["error"]["field"]) == (1, "unsupported_field", "colour")
    status, doc = run(capsys, "--form", form, "--ignore-unknown-fields", body)
    assert status == 0
    assert doc["result"]["custom_fields"] == {"product": {"key": "p1", "label": "Printer"}}
    json_form = write(tmp_path, "form.json", b'{"fields": [{"name": "product", "type": "colour"}]}')
    status, doc = run(capsys, "--form", json_form, body)
    assert (status, doc["error"]["code"]) == (1, "invalid_config")
    status, doc = run(capsys, "--form", str(tmp_path / "missing.toml"), body)
    assert (status, doc["error"]["code"]) == (1, "invalid_config")


def test_rules_switch_a_signal_off_in_the_automatic_member(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mail = (
        b"From: Alice <alice@example.org>\nTo: support@desk.example\nX-Loop: alice@example.org\n"
        b"Subject: Printer broken\nMessage-ID: <m1@example.org>\n\nPlease help.\n"
    )
    path = write(tmp_path, "m.eml", mail)
    status, doc = run(capsys, "--as", "email", path)
    assert status == 0
    assert doc["automatic"]["kind"] == "auto_reply"
    rules = write(tmp_path, "rules.toml", b'[settings]\nignore_signals = ["auto.loop"]\n')
    status, doc = run(capsys, "--as", "email", "--rules", rules, path)
    assert status == 0
    assert doc["automatic"] is None
    assert doc["decision"]["automatic"] is None
    assert doc["decision"]["may_open_ticket"] is True


def test_readable_by_default_quiet_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "t.json", json.dumps(PAYLOAD).encode())
    assert main(["parse", path]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "ticket_request (json)"
    assert f"subject:      {PAYLOAD['subject']}" in out
    assert err == ""
    assert main(["parse", "--quiet", path]) == 0
    assert capsys.readouterr() == ("", "")
    bad = write(tmp_path, "bad.json", b"{nope")
    for mode in ([], ["--quiet"]):
        assert main(["parse", *mode, bad]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith("ticketmail: error: malformed JSON")
        assert err.rstrip().endswith("[malformed_json]")
