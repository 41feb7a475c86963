"""ImapSource + the real Pipeline on SQLite: a lost acknowledgement heals without a second effect."""

from __future__ import annotations

import pytest

from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.pipeline import Pipeline
from ticketmail.sources.imap import ImapSource
from ticketmail.sources.pop3 import Pop3Source

pytestmark = pytest.mark.integration


def _ledger_count(pipeline: Pipeline, items) -> int:
    return sum(1 for item in items if pipeline.is_processed(item.provenance))


@pytest.mark.parametrize("after", ["delete", "seen", "move:Done"])
def test_commit_without_ack_then_rerun_acknowledges_without_second_effect(
    dovecot, mail_user, make_message, tmp_path, after
):
    raws = [make_message(i, subject=f"Printer {i} broken") for i in range(6)]
    dovecot.append_many(mail_user, raws)
    backend = SQLiteBackend(tmp_path / "t.sqlite3")
    pipeline = Pipeline(backend)
    cfg = dovecot.config(mail_user, after=after, fetch="all")
    source = ImapSource(cfg, skip=pipeline.is_processed)

    # first run: everything committed, but the worker "dies" before acknowledging the last three
    with source.session() as s:
        items = list(s.fetch())
        outcomes = [pipeline.process_email(i.data, provenance=i.provenance, context=cfg.context()) for i in items]
        assert {o.action for o in outcomes} == {"created"}
        for item in items[:3]:
            s.acknowledge(item)
    assert _ledger_count(pipeline, items) == 6

    # rerun: the committed-but-unacknowledged ones are acknowledged without download, nothing is processed
    with source.session() as s:
        again = list(s.fetch())
        # with after="seen" and fetch="all" the three already flagged are still candidates (and re-flagged)
        assert s.acknowledged_skipped == (6 if after == "seen" else 3)
    assert again == []
    tickets = {o.ticket for o in outcomes}
    assert len(tickets) == 6
    state = dovecot.state(mail_user)
    if after == "delete":
        assert state == []
    elif after == "seen":
        assert all("\\Seen" in m.flags for m in state)
    else:
        assert state == []
        assert [m.data for m in dovecot.state(mail_user, "Done")] == raws


def test_redelivery_without_skip_is_a_duplicate_and_acknowledged(dovecot, mail_user, make_message, tmp_path):
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    pipeline = Pipeline(SQLiteBackend(tmp_path / "t.sqlite3"))
    cfg = dovecot.config(mail_user, after="delete")
    with ImapSource(cfg).session() as s:
        for item in s.fetch():
            pipeline.process_email(item.data, provenance=item.provenance, context=cfg.context())
        # crash: no acknowledgement at all
    with ImapSource(cfg).session() as s:
        for item in s.fetch():
            outcome = pipeline.process_email(item.data, provenance=item.provenance, context=cfg.context())
            assert outcome.already_processed or outcome.action == "duplicate"
            assert outcome.acknowledge
            s.acknowledge(item)
    assert dovecot.state(mail_user) == []


def test_pop3_kept_mailbox_with_pipeline(dovecot, mail_user, make_message, tmp_path):
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    pipeline = Pipeline(SQLiteBackend(tmp_path / "t.sqlite3"))
    cfg = dovecot.config(mail_user, protocol="pop3", after="seen")
    for run in range(2):
        with Pop3Source(cfg, skip=pipeline.is_processed).session() as s:
            items = list(s.fetch())
            for item in items:
                assert pipeline.process_email(item.data, provenance=item.provenance).acknowledge
                s.acknowledge(item)
        assert len(items) == (3 if run == 0 else 0)
    assert len(dovecot.state(mail_user)) == 3
