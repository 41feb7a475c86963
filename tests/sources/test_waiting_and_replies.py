"""IMAP and POP3 report how many messages still wait, and quote server replies as text (real Dovecot)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.errors import SourceError
from ticketmail.pipeline import Pipeline
from ticketmail.sources._net import server_text
from ticketmail.sources.imap import ImapSource
from ticketmail.sources.poller import Poller, PollTarget, source_for
from ticketmail.sources.pop3 import Pop3Source

pytestmark = pytest.mark.integration


@pytest.fixture
def state_dir():
    path = Path(tempfile.mkdtemp(prefix="tm-wait-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_waiting_count_after_a_capped_visit(dovecot, mail_user, make_message, state_dir, protocol):
    dovecot.append_many(mail_user, [make_message(9, size=40_000)] + [make_message(i) for i in range(5)])
    cfg = dovecot.config(mail_user, protocol=protocol, after="delete", max_message_size=20_000)  # oversize: skip
    pipeline = Pipeline(InMemoryBackend())
    poller = Poller(
        [PollTarget(cfg.name, source_for(cfg, skip=pipeline.is_processed, state_dir=state_dir), max_messages=2)],
        pipeline,
        state=state_dir,
    )
    first = poller.poll_once().run(cfg.name)
    assert (first.acknowledged, first.waiting, first.oversized) == (2, 3, 1)
    assert poller.health.get(cfg.name).waiting == 3
    second = poller.poll_once().run(cfg.name)
    third = poller.poll_once().run(cfg.name)
    assert (second.waiting, third.waiting, third.acknowledged) == (1, 0, 1)


def test_imap_waiting_ignores_committed_mail_in_a_kept_mailbox(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    pipeline = Pipeline(InMemoryBackend())
    cfg = dovecot.config(mail_user, after="seen", fetch="all")
    with ImapSource(cfg, skip=pipeline.is_processed).session() as s:
        (item, *_rest) = list(s.fetch(limit=1))
        assert pipeline.process_email(item.data, provenance=item.provenance).acknowledge
        s.acknowledge(item)
        assert s.pending() == 2


def test_pop3_waiting_ignores_mail_left_on_the_server(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    pipeline = Pipeline(InMemoryBackend())
    cfg = dovecot.config(mail_user, protocol="pop3", after="seen")
    with Pop3Source(cfg, skip=pipeline.is_processed).session() as s:
        for item in s.fetch(limit=2):
            assert pipeline.process_email(item.data, provenance=item.provenance).acknowledge
            s.acknowledge(item)
        assert s.pending() == 1


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_server_replies_are_quoted_as_text(dovecot, mail_user, protocol):
    source_type = ImapSource if protocol == "imap" else Pop3Source
    source = source_type(dovecot.config(mail_user, protocol=protocol, password="Wr0ng-Pa55"))
    with pytest.raises(SourceError) as info, source.session():
        pass
    message = info.value.message
    assert "server said: " in message
    assert "b'" not in message
    assert 'b"' not in message
    assert "Authentication failed" in message or "AUTHENTICATIONFAILED" in message


def test_imap_missing_folder_reply_is_text(dovecot, mail_user):
    with pytest.raises(SourceError) as info, ImapSource(dovecot.config(mail_user, folder="Nope")).session():
        pass
    assert "b'" not in info.value.message
    assert "Nope" in info.value.message


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (b"[AUTHENTICATIONFAILED] Authentication failed.", "[AUTHENTICATIONFAILED] Authentication failed."),
        ([b"[NONEXISTENT] Mailbox doesn't exist: Nope"], "[NONEXISTENT] Mailbox doesn't exist: Nope"),
        (Exception(b"-ERR [AUTH] Authentication failed."), "-ERR [AUTH] Authentication failed."),
        (b"caf\xc3\xa9", "café"),  # UTF-8 when it decodes
        (b"\xe9t\xe9", "été"),  # else Latin-1: readable, never a b'' literal
        (b"line\r\nnext\x00", "line next"),
        ([None, b"ok"], "ok"),
        ("already text", "already text"),
    ],
)
def test_server_text(value: object, text: str) -> None:
    assert server_text(value) == text
    assert len(server_text(b"x" * 5000)) <= 300


def test_server_text_keeps_ordinary_exception_text() -> None:
    assert server_text(ConnectionRefusedError(111, "Connection refused")) == "[Errno 111] Connection refused"
    assert server_text(Exception("plain", b"bytes")) == "plain bytes"
