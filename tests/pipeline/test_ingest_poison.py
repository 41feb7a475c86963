"""``ticketmail ingest`` never stops on one bad input: it quarantines it (bytes kept) and goes on."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path

import pytest

from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.cli import main
from ticketmail.sources.local import count_local, iter_local
from ticketmail.testing.pipeline_suite import build_mail

POISON = {
    # An XML declaration naming a codec that is not a text encoding.
    "02-rot13.xml": b'<?xml version="1.0" encoding="rot13"?><ticket><email>a@example.org</email>'
    b"<name>A</name><subject>s</subject><message>m</message></ticket>",
    # A data URL whose charset is a compression codec.
    "03-zlib.json": json.dumps(
        {
            "email": "b@example.org",
            "name": "B",
            "subject": "s",
            "message": "data:text/plain;charset=zlib_codec;base64," + base64.b64encode(b"hello").decode(),
        }
    ).encode(),
    # An encoding label longer than any codec name.
    "04-long-label.xml": b'<?xml version="1.0" encoding="' + b"x" * 60 + b'"?><ticket/>',
}


def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="tm-poison-"))
    (folder / "01-first.eml").write_bytes(build_mail(message_id="first@example.org", subject="First"))
    for name, data in POISON.items():
        (folder / name).write_bytes(data)
    (folder / "05-crash.json").write_bytes(b'{"crash": true}')
    (folder / "06-last.eml").write_bytes(build_mail(message_id="last@example.org", subject="Last"))
    (folder / "07-payload.json").write_bytes(
        json.dumps({"email": "c@example.org", "name": "C", "subject": "after", "message": "still here"}).encode()
    )
    return folder


def test_a_poisoned_file_in_the_middle_does_not_stop_the_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ticketmail.parsing as parsing

    real = parsing.parse_json

    def parse_json(data: bytes, *args: object, **kwargs: object) -> object:
        if data == b'{"crash": true}':  # a parser bug, whatever the parsers do with the real inputs above
            raise RuntimeError("parser bug")
        return real(data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(parsing, "parse_json", parse_json)
    folder = _folder()
    db = Path(tempfile.mkdtemp(prefix="tm-poison-db-")) / "tickets.sqlite3"
    code = main(["ingest", "--json", "--db", str(db), str(folder)])
    out, err = capsys.readouterr()
    lines = {Path(line["source"]).name: line for line in map(json.loads, out.splitlines())}
    assert set(lines) == {"01-first.eml", *POISON, "05-crash.json", "06-last.eml", "07-payload.json"}
    assert lines["01-first.eml"]["action"] == "created"
    assert lines["06-last.eml"]["action"] == "created"
    assert lines["07-payload.json"]["action"] == "created"
    assert lines["05-crash.json"]["action"] == "failed"
    assert lines["05-crash.json"]["error"]["code"] == "processing_failed"
    assert "parser bug" not in out  # the exception's text is not echoed
    for name in POISON:
        assert lines[name]["action"] == "failed", name
        assert lines[name]["error"]["code"], name
    assert code == 1, err  # something failed
    backend = SQLiteBackend(db)
    try:
        kept = {q.raw for q in backend.quarantined()}
    finally:
        backend.close()
    assert kept == {*POISON.values(), b'{"crash": true}'}

    # A rerun changes nothing and still does not abort.
    code = main(["ingest", "--json", "--db", str(db), str(folder)])
    out, _ = capsys.readouterr()
    actions = [json.loads(line)["action"] for line in out.splitlines()]
    assert len(actions) == len(lines)
    assert code == 1


def _unreadable_folder() -> tuple[Path, set[str]]:
    """A folder with inputs that fail to read for root too: a broken symlink, a symlink loop and a FIFO."""
    folder = Path(tempfile.mkdtemp(prefix="tm-unreadable-"))
    (folder / "01-first.eml").write_bytes(build_mail(message_id="u-first@example.org", subject="First"))
    (folder / "02-broken.eml").symlink_to(folder / "missing-target.eml")
    (folder / "03-loop.eml").symlink_to(folder / "03-loop.eml")
    os.mkfifo(folder / "04-fifo.eml")  # a read would block forever; it is refused, not read
    (folder / "05-payload.json").write_bytes(
        json.dumps({"email": "d@example.org", "name": "D", "subject": "after", "message": "still here"}).encode()
    )
    (folder / "06-last.eml").write_bytes(build_mail(message_id="u-last@example.org", subject="Last"))
    return folder, {"02-broken.eml", "03-loop.eml", "04-fifo.eml"}


def test_unreadable_files_are_yielded_with_a_reason_and_the_walk_goes_on() -> None:
    folder, bad = _unreadable_folder()
    items = list(iter_local([folder]))
    assert [Path(item.source).name for item in items] == [
        "01-first.eml", "02-broken.eml", "03-loop.eml", "04-fifo.eml", "05-payload.json", "06-last.eml"
    ]  # fmt: skip
    for item in items:
        if Path(item.source).name in bad:
            assert item.data == b""
            assert item.error is not None
            assert item.error.message.startswith(f"cannot read {item.source}")
            assert item.provenance.key.startswith("unreadable:")
        else:
            assert item.error is None
            assert item.data
    fifo = next(item for item in items if item.source.endswith("04-fifo.eml"))
    assert fifo.error is not None
    assert "not a regular file" in fifo.error.message
    assert count_local([folder]) == len(items)


def test_an_unreadable_file_in_the_middle_does_not_stop_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    folder, bad = _unreadable_folder()
    db = Path(tempfile.mkdtemp(prefix="tm-unreadable-db-")) / "tickets.sqlite3"
    code = main(["ingest", "--json", "--db", str(db), str(folder)])
    out, err = capsys.readouterr()
    lines = {Path(line["source"]).name: line for line in map(json.loads, out.splitlines())}
    assert lines["01-first.eml"]["action"] == "created"
    assert lines["05-payload.json"]["action"] == "created"
    assert lines["06-last.eml"]["action"] == "created"
    for name in bad:
        assert lines[name]["action"] == "failed", name
        assert lines[name]["error"]["code"] == "source_error", lines[name]
        assert "cannot read" in lines[name]["error"]["message"], lines[name]
        assert name in err, err  # reported on stderr too
    assert code == 1, err  # something failed; the run was not aborted (that is exit 2)
