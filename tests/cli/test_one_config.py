"""One example configuration drives ``ingest``, ``fetch``, ``pipe`` and ``serve`` alike.

Each command gets the same ``examples/ticketmail.toml`` (copied with the examples into a temporary folder,
so the repository's Maildir is never touched) and must apply the same threading settings (a custom subject
tag), the same forms (custom fields added to the default form) and the same attachment policy (an
executable disguised as a PNG is dropped with a note; the ticket is still created). Real subprocesses, a
real SQLite file and a real HTTP server.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"This program cannot be run"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNg+M/A8B8ABQACAeIhO8EAAAAASUVORK5CYII="
)
NOTE = "removed by the attachment policy"


def tm(*args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [sys.executable, "-m", "ticketmail", *args], input=stdin, capture_output=True, timeout=120, env=env
    )
    if check:
        assert proc.returncode == 0, proc.stderr.decode()
    return proc


def json_lines(proc: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]


def reply(number: str, n: int) -> bytes:
    """A reply matched only by the configured subject tag, with one good and one disguised attachment."""
    message = EmailMessage()
    message["From"] = "Grace Hopper <grace@example.org>"
    message["To"] = "support@helpdesk.example"
    message["Subject"] = f"Re: [Helpdesk #{number}] New laptop"
    message["Message-ID"] = f"<reply-{n}@example.org>"
    message.set_content(f"Follow-up number {n}.")
    message.add_attachment(PNG, maintype="image", subtype="png", filename=f"screen-{n}.png")
    message.add_attachment(PE, maintype="image", subtype="png", filename=f"driver-{n}.png")
    return message.as_bytes()


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    root = tmp_path / "examples"
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns("*.sqlite3*", "*.state"))
    for sub in ("new", "cur"):
        for name in os.listdir(root / "maildir" / sub):
            if not name.startswith("."):
                (root / "maildir" / sub / name).unlink()
    return root / "ticketmail.toml"


def serve(config: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticketmail", "serve", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"http://[^ ]+/api/", line)
    if found is None:
        proc.kill()
        raise AssertionError(f"serve did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, found.group(0)


def post(url: str, body: bytes, key: str, content_type: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body, headers={"X-API-Key": key, "Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_ingest_fetch_pipe_and_serve_share_threading_forms_and_attachment_policy(
    deployment: Path, tmp_path: Path
) -> None:
    config = str(deployment)
    root = deployment.parent

    # ingest: the first message opens the ticket (mailbox "support": its department applies).
    first = tmp_path / "first.eml"
    first.write_bytes((EXAMPLES / "maildir" / "new" / "1772532000.M101P2201.mx.helpdesk.example").read_bytes())
    (line,) = json_lines(tm("ingest", "--json", "--config", config, "--mailbox", "support", str(first)))
    assert line["action"] == "created"
    number = line["ticket"]
    assert (root / "tickets.sqlite3").exists()  # [storage] path, relative to the configuration file

    # ingest: a reply matched only by the custom tag; the disguised executable is dropped.
    one = tmp_path / "reply-1.eml"
    one.write_bytes(reply(number, 1))
    (line,) = json_lines(tm("ingest", "--json", "--config", config, str(one)))
    assert (line["action"], line["ticket"]) == ("appended", number)
    assert [r["value"] for r in line["reasons"] if r["code"].startswith("attachment.")] == ["driver-1.png"]

    # fetch: the Maildir mailbox of the file.
    (root / "maildir" / "new" / "1800000000.M1P1.test").write_bytes(reply(number, 2))
    fetched = tm("fetch", "--json", "--config", config, "--mailbox", "support")
    (line,) = json_lines(fetched)
    assert (line["action"], line["ticket"], line["mailbox"]) == ("appended", number, "support")
    assert any(r["code"] == "attachment.type_denied" for r in line["reasons"])

    # pipe: the MTA-only mailbox of the file.
    piped = tm("pipe", "--config", config, "--mailbox", "billing", stdin=reply(number, 3))
    assert f"appended ticket {number}" in piped.stderr.decode()

    # serve: the raw-email route threads the same way, JSON payloads use the form and the policy.
    secret = (
        tm("apikey", "add", "--config", config, "--ip", "127.0.0.1", "--permission", "create_tickets",
           "--permission", "submit_email")
        .stdout.decode()
        .splitlines()[-1]
    )  # fmt: skip
    proc, base = serve(deployment)
    try:
        status, body = post(base + "tickets.email", reply(number, 4), secret, "message/rfc822")
        assert (status, body) == (201, number)
        payload = {
            "email": "judith.novak@example.org",
            "name": "Judith Novak",
            "subject": "Order a scanner",
            "message": "Please order one.",
            "phone": "3185558634X123",
            "order_date": "2026-03-09",
            "product": "Scanner",
            "attachments": [
                {"quote.png": "data:image/png;base64," + base64.b64encode(PNG).decode()},
                {"setup.png": "data:image/png;base64," + base64.b64encode(PE).decode()},
            ],
        }
        status, created = post(base + "tickets.json", json.dumps(payload).encode(), secret, "application/json")
        assert status == 201, created
        status, text = post(base + "tickets.json", json.dumps({**payload, "colour": "red"}).encode(), secret, "")
        assert status == 400
        assert "colour" in text
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    # The ticket: five entries, each reply kept its screenshot and lost the disguised executable.
    shown = json.loads(tm("show", "--config", config, number, "--json").stdout)
    assert shown["department"] == "Support"
    replies = shown["entries"][1:]
    assert len(replies) == 4
    for n, entry in enumerate(replies, start=1):
        assert [f["filename"] for f in entry["files"]] == [f"screen-{n}.png"]
        assert f"Follow-up number {n}." in entry["body"]
        assert f"driver-{n}.png" in entry["body"]
        assert NOTE in entry["body"]

    order = json.loads(tm("show", "--config", config, created, "--json").stdout)
    assert order["custom_fields"]["order_date"].startswith("2026-03-09")
    assert "Scanner" in json.dumps(order["custom_fields"]["product"])
    assert "phone" in order["custom_fields"]
    (entry,) = order["entries"]
    assert [f["filename"] for f in entry["files"]] == ["quote.png"]
    assert "setup.png" in entry["body"]
    assert NOTE in entry["body"]


def test_pipe_refuses_a_mailbox_the_file_does_not_define(deployment: Path) -> None:
    message = reply("ABCD1234", 9)
    proc = tm("pipe", "--config", str(deployment), "--mailbox", "bilnig", stdin=message, check=False)
    assert proc.returncode == 75  # EX_TEMPFAIL: the MTA keeps the mail while the alias is fixed
    err = proc.stderr.decode()
    assert "no mailbox named 'bilnig'; did you mean 'billing'?" in err
    assert "Traceback" not in err
    assert not (deployment.parent / "tickets.sqlite3").exists()  # nothing was stored
    ok = tm("pipe", "--config", str(deployment), stdin=message)  # no --mailbox: the default name, no check
    assert "created ticket" in ok.stderr.decode()


def test_a_threading_flag_overrides_the_file(deployment: Path, tmp_path: Path) -> None:
    config = str(deployment)
    first = tmp_path / "first.eml"
    first.write_bytes((EXAMPLES / "mail" / "01-printer-broken.eml").read_bytes())
    number = json_lines(tm("ingest", "--json", "--config", config, str(first)))[0]["ticket"]
    tagged = tmp_path / "tagged.eml"
    # from the requester: a tag-only match from a stranger would open a new ticket anyway (untrusted_match)
    tagged.write_bytes(
        reply(number, 5)
        .replace(f"[Helpdesk #{number}]".encode(), f"[#{number}]".encode())
        .replace(b"Grace Hopper <grace@example.org>", b"Alice <alice@example.org>")
    )
    line = json_lines(tm("ingest", "--json", "--config", config, str(tagged)))[0]
    assert line["action"] == "created"  # the file's tag format does not know "[#N]"
    again = tmp_path / "again.eml"
    again.write_bytes(tagged.read_bytes().replace(b"reply-5@", b"reply-6@"))
    line = json_lines(tm("ingest", "--json", "--config", config, "--subject-tag", "[#{number}]", str(again)))[0]
    assert (line["action"], line["ticket"]) == ("appended", number)


def test_the_readme_first_command_runs_the_main_job_from_the_example_config(tmp_path: Path) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    command = readme.split("```sh\n", 1)[1].split("\n", 1)[0]
    steps = [step.strip() for step in command.split("&&")]
    assert steps[0].startswith("python3 -m venv")
    ticketmail = [step.split()[1:] for step in steps if step.startswith(".venv/bin/ticketmail ")]
    assert [words[0] for words in ticketmail] == ["ingest", "tickets"]
    assert all(words[1:3] == ["--config", "examples/ticketmail.toml"] for words in ticketmail)
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("*.sqlite3*", "*.state"))
    results = []
    for words in ticketmail:
        proc = subprocess.run(
            [sys.executable, "-m", "ticketmail", *words], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        results.append(proc)
    # a short summary, one line on stdout, and nothing on stderr
    assert results[0].stdout.startswith("19 messages: 9 created, 6 appended, 1 duplicate, 3 ignored in ")
    assert results[0].stdout.count("\n") == 1
    assert results[0].stderr == ""
    assert (tmp_path / "examples" / "tickets.sqlite3").exists()
    assert "9 ticket(s)" in results[1].stdout
