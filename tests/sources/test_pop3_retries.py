"""POP3 failure counts persist across runs (cron): a poison message is not retried for ever."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ticketmail.sources.maildir import RetryCounter
from ticketmail.sources.pop3 import Pop3Source


def test_failures_add_up_across_separate_runs_then_stop(dovecot: Any) -> None:
    user = dovecot.new_user("pop3retries")
    dovecot.append(user, b"From: a@example.org\r\nSubject: poison\r\nMessage-ID: <p@x>\r\n\r\nbody\r\n")
    config = dovecot.config(user, protocol="pop3", security="ssl", max_retries=2)
    state = Path(tempfile.mkdtemp()) / "retries.json"

    def one_run() -> int:
        source = Pop3Source(config, retries=RetryCounter(state))  # a fresh process each time
        seen = 0
        with source.session() as session:
            for item in session.fetch():
                seen += 1
                session.release(item, failed=True)
        return seen

    assert one_run() == 1
    assert one_run() == 1  # second failure reaches max_retries
    assert one_run() == 0  # a later cron run no longer retries it
    assert len(dovecot.state(user)) == 1  # and it is still on the server, never deleted
