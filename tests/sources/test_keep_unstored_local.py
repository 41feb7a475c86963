"""Maildir and mbox keep a headers-only original too: with ``after = "delete"`` it moves to the quarantine."""

from __future__ import annotations

import mailbox
import os
from pathlib import Path

import pytest

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.pipeline import Pipeline
from ticketmail.sources.maildir import MaildirSource
from ticketmail.sources.mbox import MboxSource


def big_message(n: int = 1) -> bytes:
    return (
        f"From: u{n}@example.com\nTo: help@example.net\nSubject: huge {n}\nMessage-ID: <big{n}@t>\n\n".encode()
        + b"x" * 5000
        + b"\n"
    )


def small_message(n: int = 2) -> bytes:
    return f"From: u{n}@example.com\nSubject: small {n}\nMessage-ID: <small{n}@t>\n\nhi\n".encode()


def maildir_with(root: Path, raws: list[bytes]) -> list[str]:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i, raw in enumerate(raws):
        name = f"{1700000000 + i}.M{os.getpid()}P{i}.test"
        (root / "tmp" / name).write_bytes(raw)
        os.rename(root / "tmp" / name, root / "new" / name)
        names.append(name)
    return names


def run(source, pipeline: Pipeline, *, ack: bool = True) -> list:
    outcomes = []
    with source.session() as session:
        for item in session.fetch():
            outcome = pipeline.process_email(item.data, provenance=item.provenance)
            outcomes.append((item, outcome))
            if ack and outcome.acknowledge:
                session.acknowledge(item)
    return outcomes


@pytest.mark.parametrize("lost_ack", [False, True])
def test_maildir_truncated_goes_to_quarantine_not_away(tmp_path: Path, lost_ack: bool) -> None:
    root = tmp_path / "Maildir"
    big = big_message()
    maildir_with(root, [big, small_message()])
    pipeline = Pipeline(InMemoryBackend())

    def source() -> MaildirSource:
        return MaildirSource(
            "box", root, after="delete", max_message_size=1000, oversize="headers", skip=pipeline.is_processed
        )

    outcomes = run(source(), pipeline, ack=not lost_ack)
    assert [o.action for _, o in outcomes] == ["created", "created"]
    (truncated,) = [i for i, _ in outcomes if i.truncated]
    assert truncated.note is not None
    assert "'Quarantine'" in truncated.note
    (ticket_number,) = [o.ticket for i, o in outcomes if i.truncated]
    (entry,) = pipeline.backend.entries(ticket_number or "")
    assert "not deleted" in entry.body  # the ticket itself tells staff where the original is
    if lost_ack:
        assert run(source(), pipeline) == []  # committed: acknowledged without processing
    assert os.listdir(root / "new") == []
    assert os.listdir(root / "cur") == []
    (kept,) = os.listdir(root / ".Quarantine" / "cur")
    assert (root / ".Quarantine" / "cur" / kept).read_bytes() == big


def test_maildir_truncated_with_after_seen_stays(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    maildir_with(root, [big_message()])
    pipeline = Pipeline(InMemoryBackend())
    run(MaildirSource("box", root, after="seen", max_message_size=1000, oversize="headers"), pipeline)
    (name,) = os.listdir(root / "cur")
    assert name.endswith(":2,S")
    assert not (root / ".Quarantine").exists()


@pytest.mark.parametrize("lost_ack", [False, True])
def test_mbox_truncated_goes_to_quarantine_not_away(tmp_path: Path, lost_ack: bool) -> None:
    path = tmp_path / "support"
    box = mailbox.mbox(path, create=True)
    for raw in (big_message(), small_message()):
        box.add(raw)
    box.flush()
    box.close()
    pipeline = Pipeline(InMemoryBackend())

    def source() -> MboxSource:
        return MboxSource(
            "box", path, after="delete", max_message_size=1000, oversize="headers", skip=pipeline.is_processed
        )

    outcomes = run(source(), pipeline, ack=not lost_ack)
    assert [o.action for _, o in outcomes] == ["created", "created"]
    if lost_ack:
        assert run(source(), pipeline) == []
    remaining = mailbox.mbox(path)
    assert len(remaining) == 0
    remaining.close()
    kept = mailbox.mbox(tmp_path / "support.Quarantine")
    (message,) = [kept.get_bytes(k) for k in kept.iterkeys()]
    kept.close()
    assert b"Subject: huge 1" in message
    assert message.count(b"x") >= 5000
