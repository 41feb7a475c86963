"""One merge-chain walker: backends, threading and the pipeline agree on the survivor, at any chain length."""

from __future__ import annotations

import datetime as dt
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ticketmail.backends.base import (
    MAX_MERGE_CHAIN,
    Backend,
    InvalidMergeError,
    MergeChainError,
    NewEntry,
    NewTicket,
    Ticket,
    follow_merges,
    merge_chain,
)
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.model import Address, Provenance
from ticketmail.pipeline import Pipeline
from ticketmail.testing.pipeline_suite import StepClock, build_mail

NOW = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
ALICE = Address("alice@example.org", "Alice")


def _number(index: int) -> str:
    return f"T{index:05d}"


def _create(backend: Backend, count: int) -> None:
    with backend.unit_of_work() as uow:
        for index in range(count):
            number = _number(index)
            uow.create_ticket(NewTicket(number, f"ticket {index}", ALICE, NOW))
            uow.append_entry(number, NewEntry("message", ALICE, "hi", NOW, message_id=f"first-{number}@example.org"))


@st.composite
def forests(draw: st.DrawFn) -> tuple[int, dict[int, int]]:
    """A random merge forest over ``count`` tickets: ``parent[i]`` is what ticket ``i`` was merged into.

    Parents come later in a random order, so there is no cycle; one long spine makes chains longer than the
    old limits (32 and 64 links) likely.
    """
    count = draw(st.integers(min_value=1, max_value=90))
    order = draw(st.permutations(range(count)))
    parent: dict[int, int] = {}
    spine = draw(st.integers(min_value=0, max_value=count - 1))
    for position, ticket in enumerate(order[:-1]):
        if position < spine:
            parent[ticket] = order[position + 1]  # the spine: a chain of ``spine`` links
        elif draw(st.booleans()):
            parent[ticket] = order[draw(st.integers(min_value=position + 1, max_value=count - 1))]
    return count, parent


def _survivor(index: int, parent: dict[int, int]) -> int:
    while index in parent:
        index = parent[index]
    return index


def _merge(backend: Backend, parent: dict[int, int]) -> None:
    # Merge in an order that makes chains grow from both ends: roots first, then leaves.
    with backend.unit_of_work() as uow:
        for child, target in sorted(parent.items(), key=lambda kv: -kv[0]):
            uow.set_status(_number(child), "merged", merged_into=_number(target))


@pytest.fixture(params=["memory", "sqlite"])
def make_backend(request: pytest.FixtureRequest) -> Iterator[type]:
    made: list[Backend] = []

    def make() -> Backend:
        if request.param == "memory":
            backend: Backend = InMemoryBackend()
        else:
            backend = SQLiteBackend(Path(tempfile.mkdtemp(prefix="tm-merge-")) / "t.sqlite3")
        made.append(backend)
        return backend

    yield make  # type: ignore[misc]
    for backend in made:
        backend.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(forest=forests(), data=st.data())
def test_a_reply_lands_on_the_survivor(
    make_backend: type, forest: tuple[int, dict[int, int]], data: st.DataObject
) -> None:
    count, parent = forest
    backend: Backend = make_backend()
    _create(backend, count)
    _merge(backend, parent)
    pipe = Pipeline(backend, clock=StepClock())
    for index in data.draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=4, unique=True)):
        expected = _number(_survivor(index, parent))
        with backend.unit_of_work() as uow:
            start = uow.ticket_by_number(_number(index))
            assert start is not None
            chain = merge_chain(start, uow.ticket_by_number)
            assert chain[-1].number == expected
            assert chain[-1].merged_into is None
            assert follow_merges(uow, start).number == expected
        found = backend.find_ticket(_number(index))  # type: ignore[attr-defined]
        assert found is not None
        assert found.number == expected
        for route, raw in (
            (
                "references",
                build_mail(message_id=f"ref-{index}@example.org", in_reply_to=f"<first-{_number(index)}@example.org>"),
            ),
            ("subject", build_mail(message_id=f"tag-{index}@example.org", subject=f"Re: [#{_number(index)}]")),
        ):
            out = pipe.process_email(raw, provenance=Provenance("INBOX", "imap", f"{route}-{index}"))
            assert out.action == "appended", (route, out.reasons)
            assert out.ticket == expected


def test_the_limit_is_enforced_when_merging() -> None:
    """A merge that would make a chain longer than MAX_MERGE_CHAIN links is refused, with a clear error."""
    backend = InMemoryBackend()
    _create(backend, MAX_MERGE_CHAIN + 2)
    with backend.unit_of_work() as uow:
        for index in range(MAX_MERGE_CHAIN - 1, -1, -1):  # 0 -> 1 -> ... -> MAX: exactly MAX links
            uow.set_status(_number(index), "merged", merged_into=_number(index + 1))
    with backend.unit_of_work() as uow:
        start = uow.ticket_by_number(_number(0))
        assert start is not None
        assert len(merge_chain(start, uow.ticket_by_number)) == MAX_MERGE_CHAIN + 1
    with pytest.raises(InvalidMergeError, match="longer than"), backend.unit_of_work() as uow:
        uow.set_status(_number(MAX_MERGE_CHAIN + 1), "merged", merged_into=_number(0))


def _ticket(number: str, merged_into: str | None) -> Ticket:
    return Ticket(
        number=number,
        subject="s",
        requester=ALICE,
        status="merged" if merged_into else "open",
        created=NOW,
        updated=NOW,
        merged_into=merged_into,
    )


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ({"A": "B", "B": "C", "C": "A"}, "loops"),
        ({"A": "B", "B": "GONE"}, "missing"),
    ],
)
def test_broken_chains_raise_a_coded_error(links: dict[str, str], message: str) -> None:
    tickets = {n: _ticket(n, t) for n, t in links.items()}
    with pytest.raises(MergeChainError, match=message) as info:
        merge_chain(tickets["A"], tickets.get)
    assert info.value.code == "merge_chain_broken"


def test_the_walker_limit_is_a_parameter() -> None:
    tickets = {f"N{i}": _ticket(f"N{i}", f"N{i + 1}" if i < 10 else None) for i in range(11)}
    assert [t.number for t in merge_chain(tickets["N0"], tickets.get, limit=10)][-1] == "N10"
    with pytest.raises(MergeChainError, match="longer than 9 links"):
        merge_chain(tickets["N0"], tickets.get, limit=9)


def test_a_cycle_edited_into_the_store_quarantines_the_reply() -> None:
    """A store edited behind the library's back: the reply is kept (quarantined), never put on a wrong ticket."""
    path = Path(tempfile.mkdtemp(prefix="tm-merge-")) / "t.sqlite3"
    backend = SQLiteBackend(path)
    try:
        _create(backend, 2)
        with backend.unit_of_work() as uow:
            uow.set_status(_number(0), "merged", merged_into=_number(1))
        conn = sqlite3.connect(path)
        conn.execute("UPDATE tickets SET status = 'merged', merged_into = ? WHERE number = ?", (_number(0), _number(1)))
        conn.commit()
        conn.close()
        raw = build_mail(message_id="r@example.org", in_reply_to=f"<first-{_number(0)}@example.org>")
        out = Pipeline(backend, clock=StepClock()).process_email(raw, provenance=Provenance("INBOX", "imap", "9"))
        assert out.action == "failed"
        assert not out.acknowledge
        assert out.error is not None
        assert out.error.code == "merge_chain_broken"
        [kept] = backend.quarantined()
        assert kept.raw == raw
        assert kept.reason_code == "merge_chain_broken"
        assert len(backend.entries(_number(0))) == len(backend.entries(_number(1))) == 1
    finally:
        backend.close()


def test_a_chain_longer_than_the_old_limits(make_backend: type) -> None:
    """100 links (the old walkers stopped at 32 or 64, one of them on a ticket that was itself merged)."""
    backend: Backend = make_backend()
    _create(backend, 101)
    _merge(backend, {index: index + 1 for index in range(100)})
    raw = build_mail(message_id="late@example.org", in_reply_to=f"<first-{_number(0)}@example.org>")
    out = Pipeline(backend, clock=StepClock()).process_email(raw, provenance=Provenance("INBOX", "imap", "1"))
    assert out.action == "appended"
    assert out.ticket == _number(100)
    assert [r.code for r in out.reasons].count("thread.merged") == 17  # 16 hops one by one, then a summary
