"""Dry runs against a real Dovecot (IMAP and POP3) and a real Maildir: the same decisions as a real run, and
the mailbox and the database are byte-for-byte what they were before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.dryrun import DryRunBackend, dry_run_source
from ticketmail.pipeline import Outcome, Pipeline
from ticketmail.sources.config import mailbox_from_dict
from ticketmail.sources.imap import ImapSource
from ticketmail.sources.poller import Poller, PollTarget
from ticketmail.testing.conformance import snapshot

pytestmark = pytest.mark.integration


def _poll(pipeline: Pipeline, config: Any, source: Any) -> list[tuple[str, Outcome]]:
    seen: list[tuple[str, Outcome]] = []
    target = PollTarget(name=config.name, source=source, context=config.context(), batch_size=10)
    Poller(
        [target], pipeline, on_outcome=lambda name, item, outcome: seen.append((item.provenance.key, outcome))
    ).poll_once()
    return seen


def _db_state(backend: SQLiteBackend) -> dict[str, object]:
    numbers = [t.number for t in backend.list_tickets()]
    state = snapshot(backend)
    state["numbers"] = numbers
    return state


@pytest.mark.parametrize("after", ["delete", "seen", "move:Done"])
def test_imap_dry_run_changes_nothing(
    dovecot: Any, mail_user: str, make_message: Any, tmp_path: Path, after: str
) -> None:
    raws = [make_message(i, subject=f"Printer {i} broken") for i in range(4)]
    dovecot.append_many(mail_user, raws)
    config = dovecot.config(mail_user, after=after, fetch="all")
    backend = SQLiteBackend(tmp_path / "t.sqlite3")
    try:
        real = Pipeline(backend)
        # One message was processed for real earlier (and left on the server, as after a lost acknowledgement).
        with ImapSource(config).session() as session:
            first = next(iter(session.fetch(limit=1)))
        real.process_email(first.data, provenance=first.provenance, context=config.context())

        mailbox_before = (dovecot.state(mail_user), sorted(dovecot.folders(mail_user)))
        db_before = _db_state(backend)
        dry = Pipeline(DryRunBackend(backend))
        outcomes = _poll(dry, config, dry_run_source(config))
        assert [o.action for _, o in outcomes] == ["duplicate", "created", "created", "created"]
        assert all(o.reasons for _, o in outcomes)
        assert (dovecot.state(mail_user), sorted(dovecot.folders(mail_user))) == mailbox_before
        assert _db_state(backend) == db_before

        # The real run afterwards decides the same.
        live = _poll(real, config, ImapSource(config, skip=real.is_processed))
        assert sorted(o.action for _, o in live) == ["created", "created", "created"]
    finally:
        backend.close()


def test_pop3_dry_run_changes_nothing(dovecot: Any, mail_user: str, make_message: Any, tmp_path: Path) -> None:
    raws = [make_message(i) for i in range(3)]
    dovecot.append_many(mail_user, raws)
    config = dovecot.config(mail_user, protocol="pop3", after="delete")
    backend = SQLiteBackend(tmp_path / "t.sqlite3")
    try:
        before = [(m.uid, m.data) for m in dovecot.state(mail_user)]
        db_before = _db_state(backend)
        outcomes = _poll(Pipeline(DryRunBackend(backend)), config, dry_run_source(config))
        assert [o.action for _, o in outcomes] == ["created"] * 3
        # Nothing deleted (no DELE). POP3 has no read-only mode: Dovecot records RETR as \Seen for IMAP
        # clients, which is the only trace a POP3 dry run leaves (documented).
        assert [(m.uid, m.data) for m in dovecot.state(mail_user)] == before
        assert _db_state(backend) == db_before
    finally:
        backend.close()


def test_maildir_dry_run_changes_nothing(make_message: Any, tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for i in range(3):
        (maildir / "new" / f"17000000{i}.M{i}P1.host").write_bytes(make_message(i))
    config = mailbox_from_dict({"name": "local", "protocol": "maildir", "path": str(maildir), "after": "delete"})
    backend = SQLiteBackend(tmp_path / "t.sqlite3")
    try:
        files_before = sorted(
            (p.relative_to(maildir).as_posix(), p.read_bytes()) for p in maildir.rglob("*") if p.is_file()
        )
        outcomes = _poll(Pipeline(DryRunBackend(backend)), config, dry_run_source(config))
        assert [o.action for _, o in outcomes] == ["created"] * 3
        files_after = sorted(
            (p.relative_to(maildir).as_posix(), p.read_bytes()) for p in maildir.rglob("*") if p.is_file()
        )
        assert files_after == files_before
        assert backend.list_tickets() == []
        assert list(backend.audit_log()) == []
    finally:
        backend.close()
