"""Threading cannot be used to guess a ticket or to stall the store.

A subject full of guessed tags costs a bounded number of lookups, made before the write transaction; a
reply matched only by a guessable route (subject tag, plus address) from a stranger never joins the ticket
unless ``untrusted_match = "append"`` says so.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticketmail.backends.base import Backend, UnitOfWork
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.model import Address, InboundEmail, Provenance
from ticketmail.pipeline import Pipeline
from ticketmail.testing.pipeline_suite import StepClock, build_mail
from ticketmail.threading import (
    ThreadingOptions,
    find_subject_tags,
    load_threading,
    prefilter_candidates,
    thread_candidates,
)

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class _CountingUnit:
    """A unit of work that counts the lookups made through it (the real unit does the work)."""

    def __init__(self, inner: UnitOfWork, counts: dict[str, int]) -> None:
        self._inner = inner
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in ("ticket_by_number", "ticket_by_message_id"):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self._counts[name] = self._counts.get(name, 0) + 1
                return attr(*args, **kwargs)

            return counted
        return attr


class _CountingBackend:
    """Delegates to a real backend; counts lookups inside units of work and outside them."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.in_unit: dict[str, int] = {}
        self.outside: int = 0

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        @contextmanager
        def unit() -> Iterator[UnitOfWork]:
            with self.inner.unit_of_work() as uow:
                yield _CountingUnit(uow, self.in_unit)  # type: ignore[misc]

        return unit()

    def get_ticket(self, number: str) -> Any:
        self.outside += 1
        return self.inner.get_ticket(number)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def sqlite_backend() -> Iterator[SQLiteBackend]:
    folder = tempfile.mkdtemp(prefix="tm-guess-")
    backend = SQLiteBackend(Path(folder) / "tickets.sqlite3")
    yield backend
    backend.close()


def _guesses(count: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    return ["".join(rnd.choice(_ALPHABET) for _ in range(8)) for _ in range(count)]


def _raw_mail(subject: str) -> bytes:
    """A mail from Mallory with ``subject`` folded every 10 words (built by hand: the stdlib folds slowly)."""
    words = subject.split(" ")
    folded = "\r\n ".join(" ".join(words[i : i + 10]) for i in range(0, len(words), 10))
    return (
        "From: Mallory <mallory@evil.example>\r\nTo: support@example.com\r\n"
        f"Subject: {folded}\r\nMessage-ID: <atk@evil.example>\r\n"
        "Date: Mon, 02 Mar 2026 09:00:00 +0000\r\n\r\nlet me in\r\n"
    ).encode()


def _open_ticket(pipe: Pipeline) -> str:
    out = pipe.process_email(build_mail(), provenance=Provenance("INBOX", "imap", "1"))
    assert out.action == "created"
    assert out.ticket is not None
    return out.ticket


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_thirty_thousand_guessed_tags_do_not_join_the_ticket(sqlite_backend: SQLiteBackend, position: str) -> None:
    counting = _CountingBackend(sqlite_backend)
    pipe = Pipeline(counting, clock=StepClock())  # type: ignore[arg-type]
    real = _open_ticket(pipe)
    tags = [f"[#{g}]" for g in _guesses(29_999)]
    tags.insert({"first": 0, "middle": len(tags) // 2, "last": len(tags)}[position], f"[#{real}]")
    raw = _raw_mail("Re: " + " ".join(tags))
    counting.in_unit.clear()
    counting.outside = 0
    out = pipe.process_email(raw, provenance=Provenance("INBOX", "imap", "2"))

    assert out.action == "created"
    assert out.ticket != real
    ticket = sqlite_backend.get_ticket(real)
    assert ticket is not None
    assert ticket.participants == ()
    assert len(sqlite_backend.entries(real)) == 1
    codes = [r.code for r in out.reasons]
    if position == "first":
        assert "thread.untrusted_new" in codes  # the real tag was seen, and refused for a stranger
    assert "thread.participant_added" not in codes
    # At most max_subject_tags numbers (and their upper-case variants) checked, before the transaction;
    # inside it only the ones that exist are looked up again, plus the capped message ids.
    opts = ThreadingOptions()
    assert counting.outside <= 2 * opts.max_subject_tags
    assert counting.in_unit.get("ticket_by_number", 0) <= 1
    assert counting.in_unit.get("ticket_by_message_id", 0) <= opts.max_references
    audit = [a for a in sqlite_backend.audit_log() if a.message_id == "atk@evil.example"]
    assert audit
    assert any(code == "thread.new" or code == "thread.untrusted_new" for code, _, _ in audit[0].reasons)


def _reply(subject: str, sender: str = "Mallory <mallory@evil.example>", **kw: Any) -> bytes:
    return build_mail(subject=subject, sender=sender, message_id=kw.pop("message_id", "r1@evil.example"), **kw)


def test_untrusted_match_policies(memory: InMemoryBackend) -> None:
    pipe = Pipeline(memory, clock=StepClock())
    real = _open_ticket(pipe)
    tagged = _reply(f"Re: [#{real}] give me the data")

    out = Pipeline(memory, clock=StepClock(), threading=ThreadingOptions(untrusted_match="reject")).process_email(
        tagged, provenance=Provenance("INBOX", "imap", "r")
    )
    assert out.action == "rejected"
    assert out.acknowledge
    assert out.reasons[-1].code == "thread.untrusted_reject"

    quarantine = Pipeline(memory, clock=StepClock(), threading=ThreadingOptions(untrusted_match="quarantine"))
    out = quarantine.process_email(tagged, provenance=Provenance("INBOX", "imap", "q"))
    assert out.action == "failed"
    assert not out.acknowledge  # kept: in the quarantine, and in the mailbox
    assert out.error is not None
    assert out.error.code == "untrusted_reply"
    [kept] = [q for q in memory.quarantined() if q.provenance == Provenance("INBOX", "imap", "q")]
    assert kept.raw == tagged
    assert kept.reason_code == "untrusted_reply"
    assert quarantine.retry_quarantined(kept).action == "failed"  # the same policy keeps it
    [kept] = [q for q in memory.quarantined() if q.provenance == Provenance("INBOX", "imap", "q")]
    assert kept.attempts == 2

    ticket = memory.get_ticket(real)
    assert ticket is not None
    assert ticket.participants == ()
    assert len(memory.entries(real)) == 1

    # An operator lets it in: retried with the old behaviour, it joins and leaves the quarantine.
    released = Pipeline(memory, clock=StepClock(), threading=ThreadingOptions(untrusted_match="append"))
    out = released.retry_quarantined(kept)
    assert out.action == "appended"
    assert out.ticket == real
    assert not [q for q in memory.quarantined() if q.provenance == Provenance("INBOX", "imap", "q")]

    # The old behaviour, on request: the stranger joins as a participant (unknown_sender = participant).
    old = Pipeline(memory, clock=StepClock(), threading=ThreadingOptions(untrusted_match="append"))
    out = old.process_email(
        _reply(f"Re: [#{real}]", sender="eve@evil.example", message_id="r2@evil.example"),
        provenance=Provenance("INBOX", "imap", "a"),
    )
    assert out.action == "appended"
    assert out.ticket == real
    ticket = memory.get_ticket(real)
    assert ticket is not None
    assert ticket.participants == ("mallory@evil.example", "eve@evil.example")


def test_requester_and_participants_still_thread_by_tag(memory: InMemoryBackend) -> None:
    pipe = Pipeline(memory, clock=StepClock())
    real = _open_ticket(pipe)
    out = pipe.process_email(
        _reply(f"Re: [#{real}]", sender="Alice <ALICE@example.org>", message_id="r2@example.org"),
        provenance=Provenance("INBOX", "imap", "2"),
    )
    assert out.action == "appended"
    assert out.ticket == real
    with memory.unit_of_work() as uow:
        uow.add_participant(real, "bob@example.org")
    out = pipe.process_email(
        _reply(f"Re: [#{real}]", sender="bob@example.org", message_id="r3@example.org"),
        provenance=Provenance("INBOX", "imap", "3"),
    )
    assert out.action == "appended"
    assert out.ticket == real


def test_plus_address_from_a_stranger_opens_a_new_ticket(memory: InMemoryBackend) -> None:
    pipe = Pipeline(memory, clock=StepClock())
    real = _open_ticket(pipe)
    out = pipe.process_email(
        _reply("hello", to=f"support+{real}@example.com"), provenance=Provenance("INBOX", "imap", "p")
    )
    assert out.action == "created"
    assert out.ticket != real
    assert "thread.untrusted_new" in [r.code for r in out.reasons]


def test_a_reference_to_the_thread_is_trusted(memory: InMemoryBackend) -> None:
    """A stranger who has a message id of the thread (e.g. was copied) follows unknown_sender as before."""
    pipe = Pipeline(memory, clock=StepClock())
    real = _open_ticket(pipe)
    out = pipe.process_email(
        _reply("Re: Printer broken", in_reply_to="<m1@example.org>"), provenance=Provenance("INBOX", "imap", "x")
    )
    assert out.action == "appended"
    assert out.ticket == real
    assert "thread.participant_added" in [r.code for r in out.reasons]


def test_candidates_are_capped_and_deduplicated() -> None:
    opts = ThreadingOptions()
    guesses = _guesses(5000)
    subject = " ".join(f"[#{g}] [#{g}]" for g in guesses)
    assert find_subject_tags(subject, opts, limit=3) == tuple(guesses[:3])
    # Only the first subject_scan_chars characters are searched.
    late = "x" * opts.subject_scan_chars + " [#LATE1234]"
    assert find_subject_tags(late, opts) == ()
    refs = tuple(f"r{i}@example.org" for i in range(100_000))
    message = InboundEmail(
        message_id="m@x",
        subject=subject,
        in_reply_to=("irt@example.org",),
        references=refs,
        to=tuple(Address(f"support+{g}@example.com") for g in guesses[:50]),
    )
    found = thread_candidates(message, opts)
    assert found.message_ids[0] == "irt@example.org"
    assert found.message_ids[1:] == tuple(reversed(refs))[: opts.max_references - 1]  # the newest ones
    assert found.subject_numbers == tuple(guesses[:3])
    assert found.plus_tokens == tuple(guesses[:3])
    checked = prefilter_candidates(found, lambda number: number == guesses[1])
    assert checked.subject_numbers == (guesses[1],)
    assert checked.checked


def test_prefilter_keeps_the_spelling_that_exists() -> None:
    found = thread_candidates(InboundEmail(message_id="m@x", subject="Re: [#abc123]"))
    checked = prefilter_candidates(found, lambda number: number == "ABC123")
    assert checked.subject_numbers == ("ABC123",)


@settings(max_examples=50, deadline=None)
@given(
    tags=st.lists(st.from_regex(r"[A-Za-z0-9]{4,12}", fullmatch=True), max_size=200),
    limit=st.integers(min_value=0, max_value=5),
)
def test_candidate_counts_never_exceed_the_caps(tags: list[str], limit: int) -> None:
    opts = ThreadingOptions(max_subject_tags=limit, max_plus_tokens=limit, max_references=limit)
    message = InboundEmail(
        message_id="m@x",
        subject=" ".join(f"[#{t}]" for t in tags),
        references=tuple(f"<{t}@x>" for t in tags),
        to=tuple(Address(f"s+{t}@example.com") for t in tags),
    )
    found = thread_candidates(message, opts)
    assert len(found.subject_numbers) <= limit
    assert len(found.plus_tokens) <= limit
    assert len(found.message_ids) <= limit
    assert len(set(found.subject_numbers)) == len(found.subject_numbers)


def test_load_threading_accepts_the_new_keys() -> None:
    opts = load_threading(
        {"untrusted_match": "quarantine", "max_subject_tags": 2, "max_plus_tokens": 1, "subject_scan_chars": 512}
    )
    assert (opts.untrusted_match, opts.max_subject_tags, opts.max_plus_tokens, opts.subject_scan_chars) == (
        "quarantine",
        2,
        1,
        512,
    )
    assert ThreadingOptions().untrusted_match == "new_ticket"
    from ticketmail.errors import ConfigError

    with pytest.raises(ConfigError):
        load_threading({"untrusted_match": "participant"})


def test_recipients_as_participants_is_capped(memory: InMemoryBackend) -> None:
    pipe = Pipeline(memory, clock=StepClock(), threading=ThreadingOptions(recipients_as_participants=True))
    many = ", ".join(f"p{i}@example.net" for i in range(500))
    out = pipe.process_email(build_mail(to=many), provenance=Provenance("INBOX", "imap", "1"))
    assert out.action == "created"
    assert out.ticket is not None
    ticket = memory.get_ticket(out.ticket)
    assert ticket is not None
    assert len(ticket.participants) == 50
    assert out.reasons[-1].code == "thread.recipients_capped"
