"""Nothing is deleted that was not fully stored: truncated and rejected mail against the real Dovecot.

``after = "delete"`` everywhere: a headers-only (``oversize = "headers"``) item keeps its original on the
server (IMAP: in the quarantine folder; POP3: left in the maildrop), even when the acknowledgement was lost
and the next run finds it committed; a rejected item (no usable sender) is deleted only because its raw
bytes are in the backend's quarantine, committed with the decision.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.pipeline import Pipeline
from ticketmail.sources.imap import TRUNCATED_KEYWORD, ImapSource
from ticketmail.sources.poller import Poller
from ticketmail.sources.pop3 import Pop3Source

pytestmark = pytest.mark.integration

NO_SENDER = (
    b"To: support@example.test\r\nSubject: who sent this?\r\nMessage-ID: <nosender.1@example.org>\r\n"
    b"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n\r\nThere is no From header at all.\r\n"
)


@pytest.fixture
def state_dir():
    path = Path(tempfile.mkdtemp(prefix="tm-keep-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _pipeline(tmp_path) -> Pipeline:
    return Pipeline(SQLiteBackend(tmp_path / "t.sqlite3"))


def _bodies(pipeline: Pipeline) -> list[str]:
    backend = pipeline.backend
    return [e.body for t in backend.list_tickets() for e in backend.entries(t.number)]


def test_imap_truncated_is_moved_to_quarantine_not_deleted(dovecot, mail_user, make_message, tmp_path, state_dir):
    big = make_message(1, subject="Huge scan", size=60_000)
    small = make_message(2, subject="Small one")
    dovecot.append_many(mail_user, [big, small])
    pipeline = _pipeline(tmp_path)
    cfg = dovecot.config(mail_user, after="delete", max_message_size=10_000, oversize="headers")
    report = Poller([cfg], pipeline, state=state_dir).poll_once()
    run = report.run(cfg.name)
    assert run.status == "ok", run
    assert dict(run.actions) == {"created": 2}
    assert dovecot.state(mail_user) == []  # the small one deleted, the big one moved
    (kept,) = dovecot.state(mail_user, "Quarantine")
    assert kept.data == big
    assert TRUNCATED_KEYWORD in kept.flags
    (note,) = [b for b in _bodies(pipeline) if "only its headers" in b]
    assert "'Quarantine'" in note
    assert "not deleted" in note
    # a second run fetches nothing and changes nothing
    again = Poller([cfg], pipeline, state=state_dir).poll_once().run(cfg.name)
    assert again.fetched == 0
    assert [m.data for m in dovecot.state(mail_user, "Quarantine")] == [big]


def test_imap_truncated_with_lost_ack_is_kept_on_rerun(dovecot, mail_user, make_message, tmp_path):
    big = make_message(1, subject="Huge scan", size=60_000)
    dovecot.append(mail_user, big)
    pipeline = _pipeline(tmp_path)
    cfg = dovecot.config(mail_user, after="delete", max_message_size=10_000, oversize="headers")
    source = ImapSource(cfg, skip=pipeline.is_processed)
    with source.session() as s:
        (item,) = list(s.fetch())
        assert pipeline.process_email(item.data, provenance=item.provenance).action == "created"
        # the worker dies here: committed, never acknowledged
    # the limit was even raised meanwhile: the keyword alone still says "truncated"
    raised = dovecot.config(mail_user, after="delete", max_message_size=None)
    with ImapSource(raised, skip=pipeline.is_processed).session() as s:
        assert list(s.fetch()) == []
        assert s.acknowledged_skipped == 1
    assert dovecot.state(mail_user) == []
    assert [m.data for m in dovecot.state(mail_user, "Quarantine")] == [big]


def test_imap_truncated_with_after_seen_stays_in_place(dovecot, mail_user, make_message, tmp_path, state_dir):
    big = make_message(1, size=60_000)
    dovecot.append(mail_user, big)
    pipeline = _pipeline(tmp_path)
    cfg = dovecot.config(mail_user, after="seen", max_message_size=10_000, oversize="headers")
    assert Poller([cfg], pipeline, state=state_dir).poll_once().run(cfg.name).acknowledged == 1
    (kept,) = dovecot.state(mail_user)
    assert kept.data == big
    assert "\\Seen" in kept.flags
    (note,) = _bodies(pipeline)
    assert "remains on the server in folder 'INBOX'" in note


def test_imap_rejected_keeps_raw_bytes_before_delete(dovecot, mail_user, make_message, tmp_path, state_dir):
    dovecot.append_many(mail_user, [NO_SENDER, make_message(1)])
    pipeline = _pipeline(tmp_path)
    cfg = dovecot.config(mail_user, after="delete")
    run = Poller([cfg], pipeline, state=state_dir).poll_once().run(cfg.name)
    assert dict(run.actions) == {"created": 1, "rejected": 1}
    assert dovecot.state(mail_user) == []
    (kept,) = pipeline.backend.quarantined()
    assert kept.raw == NO_SENDER
    assert kept.reason_code == "rejected"
    assert kept.provenance is not None
    assert kept.provenance.mailbox == cfg.name


def test_pop3_truncated_is_never_deleted(dovecot, mail_user, make_message, tmp_path, state_dir):
    big = make_message(1, subject="Huge scan", size=60_000)
    dovecot.append_many(mail_user, [big, make_message(2)])
    pipeline = _pipeline(tmp_path)
    cfg = dovecot.config(mail_user, protocol="pop3", after="delete", max_message_size=10_000, oversize="headers")
    for _ in range(2):  # the second run must not delete what the first one kept
        run = Poller([cfg], pipeline, state=state_dir).poll_once().run(cfg.name)
        assert run.status == "ok", run
    assert [m.data for m in dovecot.state(mail_user)] == [big]
    (note,) = [b for b in _bodies(pipeline) if "only its headers" in b]
    assert "remains on the server" in note
    assert "not deleted" in note
    assert len(pipeline.backend.list_tickets()) == 2


@pytest.mark.parametrize("persisted", [True, False])
def test_pop3_truncated_with_lost_ack_is_kept(dovecot, mail_user, make_message, tmp_path, state_dir, persisted):
    big = make_message(1, size=60_000)
    dovecot.append(mail_user, big)
    pipeline = _pipeline(tmp_path)
    cfg = dovecot.config(mail_user, protocol="pop3", after="delete", max_message_size=10_000, oversize="headers")
    first = Pop3Source(cfg, skip=pipeline.is_processed)
    with first.session() as s:
        (item,) = list(s.fetch())
        assert pipeline.process_email(item.data, provenance=item.provenance).action == "created"
        # dies before acknowledging; QUIT still happens
    second = Pop3Source(cfg, skip=pipeline.is_processed, keep=first.keep if persisted else None)
    with second.session() as s:
        assert list(s.fetch()) == []
        assert s.acknowledged_skipped == 1
    assert [m.data for m in dovecot.state(mail_user)] == [big]


def test_pop3_rejected_keeps_raw_bytes_before_delete(dovecot, mail_user, tmp_path, state_dir):
    dovecot.append(mail_user, NO_SENDER)
    pipeline = _pipeline(tmp_path)
    cfg = dovecot.config(mail_user, protocol="pop3", after="delete")
    run = Poller([cfg], pipeline, state=state_dir).poll_once().run(cfg.name)
    assert dict(run.actions) == {"rejected": 1}
    assert dovecot.state(mail_user) == []
    (kept,) = pipeline.backend.quarantined()
    assert kept.raw.replace(b"\r\n", b"\n") == NO_SENDER.replace(b"\r\n", b"\n")


def test_imap_spam_dropped_by_a_header_filter_is_acknowledged(dovecot, mail_user, make_message, tmp_path, state_dir):
    from ticketmail.rules import load_rules

    spam = make_message(1, subject="You won").replace(b"\r\n\r\n", b"\r\nX-Spam-Flag: YES\r\n\r\n", 1)
    dovecot.append_many(mail_user, [spam, make_message(2)])
    rules = load_rules({"filters": [{"name": "spam", "type": "ignore", "headers": ["X-Spam-Flag: YES"]}]})
    pipeline = Pipeline(SQLiteBackend(tmp_path / "t.sqlite3"), rules=rules)
    cfg = dovecot.config(mail_user, after="delete")
    run = Poller([cfg], pipeline, state=state_dir).poll_once().run(cfg.name)
    assert dict(run.actions) == {"created": 1, "ignored": 1}
    assert dovecot.state(mail_user) == []  # both acknowledged (deleted): the spam on purpose, without a copy
    assert pipeline.backend.quarantined() == []
    assert len(pipeline.backend.list_tickets()) == 1
    ignored = [a for a in pipeline.backend.audit_log() if a.action == "ignored"]
    assert [r[0] for r in ignored[0].reasons] == ["filter.ignore"]
