"""A real Postfix delivering to the receiver over ``lmtp:unix:`` (see ``conftest.py`` for the private instance)."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid

import pytest

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.rules import load_rules

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def at_postfix(postfix, start_receiver):
    """``at_postfix(backend=None, **settings)``: a receiver on the socket Postfix delivers to."""

    def start(backend=None, **kw):
        # The documented setup: the socket belongs to the postfix group, mode 0660 (as root; a user outside
        # that group can only open the socket to everyone).
        if os.geteuid() == 0:
            kw.setdefault("socket_group", "postfix")
        else:
            kw.setdefault("socket_mode", 0o666)
        return start_receiver(backend=backend, lmtp=f"unix:{postfix.socket}", **kw)

    return start


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_mail_submitted_to_postfix_ends_as_tickets(postfix, at_postfix, make_message):
    running = at_postfix()
    for i in range(8):
        assert postfix.submit("alice@client.test", ["support@desk.test"], make_message(100 + i)) == {}
    for i in range(3):
        assert (
            postfix.submit("bob@client.test", ["Vertrieb@desk.test"], make_message(200 + i, sender="bob@client.test"))
            == {}
        )
    _wait(lambda: len(running.backend.list_tickets()) == 11)
    postfix.wait_queue(lambda q: q == [])
    tickets = running.backend.list_tickets()
    assert sorted(t.mailbox for t in tickets) == ["sales"] * 3 + ["support"] * 8
    assert {t.department for t in tickets if t.mailbox == "support"} == {"IT"}
    assert {t.category for t in tickets if t.mailbox == "sales"} == {"orders"}
    log = postfix.log.read_text()
    assert "status=sent (250 2.0.0 Ok: created ticket" in log


def test_refused_recipient_gets_postfix_bounce_not_a_ticket(postfix, at_postfix, collector, make_message):
    sink, _ = collector
    running = at_postfix()
    tag = uuid.uuid4().hex
    raw = make_message(300, subject=f"to nobody {tag}")
    assert postfix.submit("alice@client.test", ["nobody@desk.test"], raw) == {}
    bounce = sink.wait_for(lambda data: tag.encode() in data and b"nobody@desk.test" in data)
    assert b"5.1.1" in bounce
    assert b"Recipient address rejected" in bounce
    postfix.wait_queue(lambda q: q == [])
    assert running.backend.list_tickets() == []


def test_policy_refusal_bounces_with_571(postfix, at_postfix, collector, make_message):
    sink, _ = collector
    rules = load_rules(
        {"rules": [{"name": "portal", "conditions": [{"field": "subject", "op": "contains", "value": "portal"}],
                    "actions": {"reject": True, "reject_reason": "Please use the customer portal"}}]}
    )  # fmt: skip
    running = at_postfix(rules=rules)
    tag = uuid.uuid4().hex
    assert postfix.submit("alice@client.test", ["support@desk.test"], make_message(301, subject=f"portal {tag}")) == {}
    bounce = sink.wait_for(lambda data: tag.encode() in data and b"5.7.1" in data)
    assert b"Please use the customer portal" in bounce
    assert running.backend.list_tickets() == []


def test_backend_unavailable_postfix_defers_then_delivers_once(postfix, at_postfix, make_message, sockdir):
    db = sockdir / "deferred.sqlite3"
    backend = SQLiteBackend(db, timeout=0.1)
    running = at_postfix(backend=backend)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # the storage is unavailable: every unit of work times out
    count = 6
    try:
        for i in range(count):
            to = ["support@desk.test", "sales@desk.test"] if i == 0 else ["support@desk.test"]
            assert postfix.submit("alice@client.test", to, make_message(400 + i)) == {}
        queue = postfix.wait_queue(lambda q: len(q) == count and all(m["queue_name"] == "deferred" for m in q))
        reasons = [r.get("delay_reason", "") for m in queue for r in m["recipients"]]
        assert all("451 4.3.0" in reason for reason in reasons), reasons
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert backend.list_tickets() == []
    postfix.flush()
    postfix.wait_queue(lambda q: q == [], timeout=30)
    postfix.flush()  # nothing left to deliver twice
    time.sleep(0.3)
    tickets = backend.list_tickets()
    assert len(tickets) == count  # 0 lost, 0 duplicated (the sales copy of the first one is a duplicate)
    assert len({t.subject for t in tickets}) == count
    running.receiver.stop()
    backend.close()


def test_receiver_down_postfix_keeps_the_mail(postfix, at_postfix, make_message):
    # Nobody listens on the socket: Postfix defers (connection refused) and delivers after a restart.
    raw = make_message(500)
    assert postfix.submit("alice@client.test", ["support@desk.test"], raw) == {}
    postfix.wait_queue(lambda q: len(q) == 1 and q[0]["queue_name"] == "deferred")
    running = at_postfix(backend=InMemoryBackend())
    postfix.flush()
    postfix.wait_queue(lambda q: q == [], timeout=30)
    assert len(running.backend.list_tickets()) == 1


def test_postfix_delivers_over_lmtp_inet(postfix, start_receiver, make_message):
    from ticketmail.sources.config import MailboxConfig

    desk = MailboxConfig(name="help", protocol="lmtp", address="help@tcp.test", department="Helpdesk")
    running = start_receiver(mailboxes=[desk], lmtp=f"127.0.0.1:{postfix.lmtp_port}")
    assert postfix.submit("alice@client.test", ["help@tcp.test"], make_message(600)) == {}
    _wait(lambda: len(running.backend.list_tickets()) == 1)
    (ticket,) = running.backend.list_tickets()
    assert (ticket.mailbox, ticket.department) == ("help", "Helpdesk")
    postfix.wait_queue(lambda q: q == [])
