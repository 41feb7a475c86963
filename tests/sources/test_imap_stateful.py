"""A hypothesis state machine drives ImapSource against the real Dovecot and compares with a model.

Steps: deliver mail, run a fetch session that acknowledges or fails each item (random per item), and
occasionally "crash" (leave the session without acknowledging). After every step the server must match the
model exactly: acknowledged mail is gone, failed mail carries its $TmFailN count, mail that reached
max_retries sits in the quarantine folder, nothing is ever lost.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from ticketmail.sources.imap import ImapSource, fail_count

pytestmark = pytest.mark.integration

MAX_RETRIES = 2


def test_imap_session_state_machine(dovecot, make_message):
    class ImapMachine(RuleBasedStateMachine):
        @initialize()
        def fresh_mailbox(self) -> None:
            self.user = dovecot.new_user("sm")
            self.source = ImapSource(
                dovecot.config(self.user, after="delete", max_retries=MAX_RETRIES), batch_size=3, ack_batch=2
            )
            self.inbox: dict[bytes, int] = {}  # message bytes -> failures so far
            self.quarantined: list[bytes] = []
            self.counter = 0

        @rule(count=st.integers(1, 4))
        def deliver(self, count: int) -> None:
            raws = [make_message(self.counter + i, subject=f"sm {self.user} {self.counter + i}") for i in range(count)]
            self.counter += count
            dovecot.append_many(self.user, raws)
            for raw in raws:
                self.inbox[raw] = 0
            self.check()

        @rule(data=st.data(), limit=st.integers(1, 6), crash=st.booleans())
        def run(self, data: st.DataObject, limit: int, crash: bool) -> None:
            with self.source.session() as s:
                items = list(s.fetch(limit=limit))
                assert len(items) == min(limit, len(self.inbox))
                for item in items:
                    assert item.data in self.inbox
                    assert fail_count(item.flags) == self.inbox[item.data]
                    if crash:
                        continue  # the worker died: nothing acknowledged or counted
                    if data.draw(st.booleans(), label="acknowledge"):
                        s.acknowledge(item)
                        del self.inbox[item.data]
                    else:
                        s.release(item, failed=True)
                        self.inbox[item.data] += 1
                        if self.inbox[item.data] >= MAX_RETRIES:
                            del self.inbox[item.data]
                            self.quarantined.append(item.data)
            self.check()

        def check(self) -> None:
            state = dovecot.state(self.user)
            assert sorted(m.data for m in state) == sorted(self.inbox)
            for m in state:
                assert fail_count(m.flags) == self.inbox[m.data]
                assert "\\Deleted" not in m.flags
            quarantine = dovecot.state(self.user, "Quarantine") if self.quarantined else []
            assert sorted(m.data for m in quarantine) == sorted(self.quarantined)

    run_state_machine_as_test(
        ImapMachine,
        settings=settings(
            max_examples=15, stateful_step_count=8, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
