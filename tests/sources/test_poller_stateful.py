"""A hypothesis state machine: deliveries, polls and crashes at any point never break exactly-once.

The system under test is the real Poller driving a real MaildirSource on real files; the pipeline is a
small in-memory ledger with the same contract as the real one (commit records the provenance; a redelivery
is a ``duplicate``; ``is_processed`` answers from the ledger). A crash is a ``BaseException`` raised before or
after the commit, which escapes the poller like a killed process would: nothing after it runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ticketmail.model import MailboxContext, Provenance
from ticketmail.pipeline import Outcome
from ticketmail.sources.maildir import MaildirSource, RetryCounter
from ticketmail.sources.poller import Poller, PollTarget


class Crash(BaseException):
    """The process died here."""


class LedgerPipeline:
    def __init__(self) -> None:
        self.ledger: dict[str, str] = {}
        self.effects: Counter[str] = Counter()
        self.crash_before: int | None = None  # crash before the n-th commit of this run
        self.crash_after: int | None = None  # crash after the n-th commit, before returning
        self.calls = 0

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        self.calls += 1
        if self.crash_before == self.calls:
            raise Crash
        key = provenance.key
        if key in self.ledger:
            return Outcome("duplicate", already_processed=True, provenance=provenance)
        if b"FAIL" in raw:
            return Outcome("failed", provenance=provenance)
        self.ledger[key] = "created"
        self.effects[key] += 1
        if self.crash_after == self.calls:
            raise Crash
        return Outcome("created", provenance=provenance)

    def is_processed(self, provenance: Provenance) -> bool:
        return provenance.key in self.ledger


class PollerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="tmsm"))
        self.maildir = self.root / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        self.pipeline = LedgerPipeline()
        self.delivered: dict[str, bool] = {}  # key -> processable
        self.n = 0

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def poller(self, cap: int) -> Poller:
        source = MaildirSource(
            "box",
            self.maildir,
            after="seen",
            skip=self.pipeline.is_processed,
            max_retries=2,
            retries=RetryCounter(self.root / "state" / "retries.json"),
        )
        return Poller([PollTarget("box", source, max_messages=cap)], self.pipeline, state=self.root / "state")

    @rule(count=st.integers(1, 4), failing=st.booleans())
    def deliver(self, count: int, failing: bool) -> None:
        for _ in range(count):
            self.n += 1
            key = f"{1700000000 + self.n}.M{self.n}.sm"
            body = b"FAIL" if failing and self.n % 3 == 0 else b"ok"
            (self.maildir / "tmp" / key).write_bytes(b"Subject: %d\n\n%s\n" % (self.n, body))
            os.rename(self.maildir / "tmp" / key, self.maildir / "new" / key)
            os.utime(self.maildir / "new" / key, (self.n, self.n))
            self.delivered[key] = body == b"ok"

    @rule(cap=st.integers(1, 6), crash=st.sampled_from(["none", "before", "after"]), at=st.integers(1, 5))
    def poll(self, cap: int, crash: str, at: int) -> None:
        self.pipeline.calls = 0
        self.pipeline.crash_before = at if crash == "before" else None
        self.pipeline.crash_after = at if crash == "after" else None
        try:
            self.poller(cap).poll_once()  # a fresh poller: a new process after a crash
        except Crash:
            pass
        finally:
            self.pipeline.crash_before = self.pipeline.crash_after = None

    @precondition(lambda self: self.delivered)
    @rule()
    def drain_cleanly(self) -> None:
        for _ in range(len(self.delivered) + 5):
            self.pipeline.calls = 0
            self.poller(100).poll_once()
        waiting = os.listdir(self.maildir / "new") + [
            n for n in os.listdir(self.maildir / "cur") if not n.endswith("S")
        ]
        assert waiting == []
        for key, ok in self.delivered.items():
            assert (key in self.pipeline.ledger) == ok

    @invariant()
    def at_most_one_effect_each(self) -> None:
        assert all(n == 1 for n in self.pipeline.effects.values())

    @invariant()
    def acknowledged_only_after_commit(self) -> None:
        for name in os.listdir(self.maildir / "cur"):
            key, _, flags = name.partition(":2,")
            if "S" in flags:
                assert key in self.pipeline.ledger

    @invariant()
    def nothing_lost(self) -> None:
        present = {n.partition(":2,")[0] for n in os.listdir(self.maildir / "new") + os.listdir(self.maildir / "cur")}
        quarantine = self.maildir / ".Quarantine" / "new"
        if quarantine.is_dir():
            present |= set(os.listdir(quarantine))
        assert present == set(self.delivered)


PollerMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
TestPollerMachine = PollerMachine.TestCase
