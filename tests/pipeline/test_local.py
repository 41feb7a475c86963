"""Local inputs for ``ingest``: .eml files, Maildir, mbox, JSON/XML payloads; stable provenance, read-only."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ticketmail.errors import SourceError
from ticketmail.sources.local import count_local, iter_local, local_kind

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAIL = b"From: a@example.org\r\nSubject: hi\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n"


def test_examples_are_all_found_in_order() -> None:
    items = list(iter_local([EXAMPLES]))
    kinds = [i.kind for i in items]
    assert kinds.count("json") == 1
    assert kinds.count("xml") == 1
    assert sum(1 for i in items if i.provenance.kind == "mbox") == 3
    assert sum(1 for i in items if i.provenance.kind == "maildir") == 2
    assert sum(1 for i in items if i.provenance.kind == "file") == 14
    files = [i.source for i in items if i.source.endswith(".eml")]
    assert files == sorted(files)
    assert count_local([EXAMPLES]) == len(items) == 19
    # stable: a second walk yields the same provenance
    assert [i.provenance for i in iter_local([EXAMPLES])] == [i.provenance for i in items]


def test_file_provenance_is_content_hash(tmp_path: Path) -> None:
    a = tmp_path / "a.eml"
    b = tmp_path / "copy-of-a.eml"
    a.write_bytes(MAIL)
    b.write_bytes(MAIL)
    first, second = iter_local([a, b])
    assert first.provenance == second.provenance
    assert first.provenance.key == hashlib.sha256(MAIL).hexdigest()
    assert (first.provenance.kind, first.provenance.mailbox) == ("file", "file")
    assert first.raw_item().data == MAIL


def test_maildir_key_ignores_flags_and_nothing_is_moved(tmp_path: Path) -> None:
    box = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    (box / "new" / "1700000001.M1P1.host").write_bytes(MAIL)
    (box / "cur" / "1700000000.M0P0.host:2,S").write_bytes(MAIL.replace(b"x@y", b"z@y"))
    (box / "new" / ".hidden").write_bytes(b"junk")
    before = sorted(p.relative_to(box) for p in box.rglob("*"))
    items = list(iter_local([box]))
    assert [i.provenance.key for i in items] == ["1700000000.M0P0.host", "1700000001.M1P1.host"]
    assert {i.provenance.mailbox for i in items} == {str(box.resolve())}
    assert {i.provenance.mailbox for i in iter_local([box], mailbox="support")} == {"support"}
    assert sorted(p.relative_to(box) for p in box.rglob("*")) == before
    # a mail client sets a flag: the key stays
    os.rename(box / "cur" / "1700000000.M0P0.host:2,S", box / "cur" / "1700000000.M0P0.host:2,RS")
    assert [i.provenance.key for i in iter_local([box])] == [i.provenance.key for i in items]


def test_mbox_items(tmp_path: Path) -> None:
    mbox = tmp_path / "archive.mbox"
    one = b"From a@example.org Mon Mar  2 09:00:00 2026\n" + MAIL.replace(b"\r\n", b"\n") + b"\n"
    mbox.write_bytes(one + one.replace(b"Subject: hi\n", b"Subject: hi\nStatus: RO\n"))
    first, second = iter_local([mbox])
    assert first.provenance.kind == "mbox"
    assert first.data.startswith(b"From: a@example.org")
    assert first.source.endswith("#1")
    # the same message again (a client added Status): a separate item of the same content key
    assert second.provenance.key == first.provenance.key + "#1"
    mbox.write_bytes(one.replace(b"Subject: hi\n", b"Subject: hi\nStatus: RO\n"))
    [again] = iter_local([mbox])
    assert again.provenance.key == first.provenance.key
    assert local_kind(mbox) == "mbox"


def test_unknown_files_are_skipped_in_folders_but_read_when_named(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("not mail")
    (tmp_path / "message").write_bytes(MAIL)
    assert list(iter_local([tmp_path])) == []
    [item] = iter_local([tmp_path / "message"])
    assert item.kind == "email"


def test_missing_path_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        list(iter_local([tmp_path / "nope"]))
    assert info.value.stage == "folder"


def test_symlinked_folders_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(MAIL)
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert len(list(iter_local([tmp_path]))) == 1
    assert count_local([tmp_path]) == 1
