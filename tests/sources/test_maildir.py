"""MaildirSource: acknowledge-after-commit by rename, failures counted then quarantined. Real files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticketmail.errors import ConfigError, SourceError
from ticketmail.model import MailboxContext, Provenance
from ticketmail.pipeline import Outcome
from ticketmail.sources.maildir import MaildirSource, RetryCounter
from ticketmail.sources.poller import Poller, PollTarget

_counter = iter(range(10**9))


def make_maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def deliver(root: Path, raw: bytes, *, flags: str | None = None) -> str:
    unique = f"{1700000000 + next(_counter)}.M{os.getpid()}P1.test"
    tmp = root / "tmp" / unique
    tmp.write_bytes(raw)
    if flags is None:
        os.rename(tmp, root / "new" / unique)
    else:
        os.rename(tmp, root / "cur" / f"{unique}:2,{flags}")
    return unique


def msg(i: int, body: str = "hello") -> bytes:
    return f"From: u{i}@example.com\r\nSubject: m{i}\r\nMessage-ID: <{i}@t>\r\n\r\n{body}\r\n".encode()


def files(root: Path, sub: str) -> list[str]:
    return sorted(os.listdir(root / sub))


class Scripted:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        self.seen.append(provenance.key)
        return Outcome("failed" if b"FAIL" in raw else "created", provenance=provenance)

    def is_processed(self, provenance: Provenance) -> bool:
        return False


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return make_maildir(tmp_path / "Maildir")


def test_seen_moves_to_cur_with_s_flag_and_keeps_bytes(maildir: Path) -> None:
    keys = [deliver(maildir, msg(i)) for i in range(3)]
    src = MaildirSource("box", maildir, after="seen")
    with src.session() as session:
        items = list(session.fetch())
        assert [i.provenance.key for i in items] == keys
        assert [i.data for i in items] == [msg(0), msg(1), msg(2)]
        for item in items:
            session.acknowledge(item)
    assert files(maildir, "new") == []
    assert files(maildir, "cur") == sorted(f"{k}:2,S" for k in keys)
    assert (maildir / "cur" / f"{keys[0]}:2,S").read_bytes() == msg(0)
    with src.session() as session:
        assert list(session.fetch()) == []
        assert session.pending() == 0


def test_delete(maildir: Path) -> None:
    deliver(maildir, msg(1))
    deliver(maildir, msg(2), flags="S")  # fetch=auto with delete means all, even already read ones
    src = MaildirSource("box", maildir, after="delete")
    with src.session() as session:
        for item in session.fetch():
            session.acknowledge(item)
    assert files(maildir, "new") == files(maildir, "cur") == []


def test_move_to_subfolder(maildir: Path) -> None:
    key = deliver(maildir, msg(1))
    src = MaildirSource("box", maildir, after="move:Processed")
    with src.session() as session:
        for item in session.fetch():
            session.acknowledge(item)
    assert (maildir / ".Processed" / "maildirfolder").exists()
    assert files(maildir / ".Processed", "cur") == [f"{key}:2,S"]
    assert files(maildir, "new") == []


def test_unseen_skips_read_and_trashed(maildir: Path) -> None:
    a = deliver(maildir, msg(1))
    deliver(maildir, msg(2), flags="S")
    deliver(maildir, msg(3), flags="T")
    c = deliver(maildir, msg(4), flags="F")
    src = MaildirSource("box", maildir, after="seen")
    with src.session() as session:
        assert [i.provenance.key for i in session.fetch()] == [a, c]


def test_key_is_stable_when_a_client_moves_the_file(maildir: Path) -> None:
    key = deliver(maildir, msg(1))
    os.rename(maildir / "new" / key, maildir / "cur" / f"{key}:2,F")
    src = MaildirSource("box", maildir, after="seen")
    with src.session() as session:
        (item,) = list(session.fetch())
        assert item.provenance == Provenance("box", "maildir", key)
        session.acknowledge(item)
    assert files(maildir, "cur") == [f"{key}:2,FS"]


def test_committed_items_are_acknowledged_without_yielding(maildir: Path) -> None:
    done = deliver(maildir, msg(1))
    todo = deliver(maildir, msg(2))
    src = MaildirSource("box", maildir, after="delete", skip=lambda p: p.key == done)
    with src.session() as session:
        assert [i.provenance.key for i in session.fetch()] == [todo]
    assert files(maildir, "new") == [todo]


def test_failures_counted_across_runs_then_quarantined(maildir: Path, tmp_path: Path) -> None:
    key = deliver(maildir, msg(1, "FAIL"))
    state = tmp_path / "state"
    for run in range(3):
        src = MaildirSource("box", maildir, after="seen", max_retries=3, retries=RetryCounter(state / "r.json"))
        with src.session() as session:
            items = list(session.fetch())
            assert len(items) == 1, run
            session.release(items[0], failed=True)
    assert files(maildir, "new") == []
    assert files(maildir / ".Quarantine", "new") == [key]
    src = MaildirSource("box", maildir, after="seen", retries=RetryCounter(state / "r.json"))
    with src.session() as session:
        assert list(session.fetch()) == []
    assert RetryCounter(state / "r.json").get(key) == 0


def test_release_without_failure_is_not_counted(maildir: Path) -> None:
    deliver(maildir, msg(1))
    src = MaildirSource("box", maildir, max_retries=1)
    with src.session() as session:
        (item,) = list(session.fetch())
        session.release(item, failed=False)
    assert len(files(maildir, "new")) == 1


def test_oversize_skip_and_headers(maildir: Path) -> None:
    big = msg(1, "x" * 5000)
    key = deliver(maildir, big)
    src = MaildirSource("box", maildir, max_message_size=1000, oversize="skip")
    with src.session() as session:
        assert list(session.fetch()) == []
        assert [(n.provenance.key, n.size, n.limit) for n in session.oversized] == [(key, len(big), 1000)]
    src = MaildirSource("box", maildir, max_message_size=1000, oversize="headers")
    with src.session() as session:
        (item,) = list(session.fetch())
        assert item.truncated
        assert item.size == len(big)
        assert b"xxx" not in item.data
        assert item.note is not None
        assert item.data.endswith(item.note.encode() + b"\r\n")  # the note is the body the ticket shows
        assert b"X-Ticketmail-Truncated: original-size=" in item.data


def test_not_a_maildir(tmp_path: Path) -> None:
    src = MaildirSource("box", tmp_path / "missing")
    with pytest.raises(SourceError) as info, src.session():
        pass
    assert info.value.stage == "folder"
    assert info.value.mailbox == "box"


@pytest.mark.parametrize("after", ["trash", "move:", "move:../x"])
def test_bad_after(tmp_path: Path, after: str) -> None:
    with pytest.raises(ConfigError, match="after"):
        MaildirSource("box", tmp_path, after=after)


def test_limit_and_oldest_first(maildir: Path) -> None:
    keys = [deliver(maildir, msg(i)) for i in range(5)]
    for n, key in enumerate(keys):
        os.utime(maildir / "new" / key, (1000 + (5 - n), 1000 + (5 - n)))  # newest file first on disk
    src = MaildirSource("box", maildir)
    with src.session() as session:
        assert [i.provenance.key for i in session.fetch(limit=2)] == list(reversed(keys))[:2]


def test_through_the_poller(maildir: Path, tmp_path: Path) -> None:
    for i in range(7):
        deliver(maildir, msg(i, "FAIL" if i == 3 else "ok"))
    pipeline = Scripted()
    poller = Poller(
        [PollTarget("box", MaildirSource("box", maildir, after="delete"), max_messages=4)], pipeline, state=tmp_path
    )
    first = poller.poll_once().run("box")
    assert (first.acknowledged, first.failed, first.waiting) == (3, 1, 4)  # the failed one still waits
    second = poller.poll_once().run("box")
    assert (second.acknowledged, second.failed, second.waiting) == (3, 1, 1)
    assert len(files(maildir, "new")) == 1


@settings(max_examples=25, deadline=None)
@given(outcomes=st.lists(st.booleans(), min_size=1, max_size=12), runs=st.integers(1, 6))
def test_every_message_ends_in_exactly_one_place(outcomes: list[bool], runs: int) -> None:
    root = make_maildir(Path(tempfile.mkdtemp()) / "Maildir")
    raws = {
        deliver(root, msg(i, "ok" if ok else "FAIL")): msg(i, "ok" if ok else "FAIL") for i, ok in enumerate(outcomes)
    }
    poller = Poller(
        [PollTarget("b", MaildirSource("b", root, after="seen", max_retries=2), max_messages=3)], Scripted()
    )
    for _ in range(runs):
        poller.poll_once()

    def where() -> Iterator[tuple[str, str, bytes]]:
        for folder in (root, root / ".Quarantine"):
            for sub in ("new", "cur"):
                if (folder / sub).is_dir():
                    for name in os.listdir(folder / sub):
                        yield folder.name + "/" + sub, name.partition(":2,")[0], (folder / sub / name).read_bytes()

    places = list(where())
    assert sorted(k for _, k, _ in places) == sorted(raws)
    for place, key, data in places:
        assert data == raws[key]
        if place == "Maildir/cur":
            assert b"ok" in data


@settings(max_examples=40, deadline=None)
@given(
    names=st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=30
        ).filter(lambda n: n not in (".", "..") and len(n.encode()) < 200),
        min_size=1,
        max_size=8,
        unique=True,
    ),
    data=st.binary(max_size=300),
    after=st.sampled_from(["seen", "delete", "move:Done"]),
)
def test_odd_file_names_and_contents(names: list[str], data: bytes, after: str) -> None:
    root = make_maildir(Path(tempfile.mkdtemp()) / "Maildir")
    for name in names:
        (root / "new" / name).write_bytes(data)
    src = MaildirSource("b", root, after=after)
    with src.session() as session:
        items = list(session.fetch())
        for item in items:
            assert item.data == data
            session.acknowledge(item)
    with src.session() as session:
        assert list(session.fetch()) == []


def test_worker_with_idle_picks_up_deliveries_without_waiting_for_the_interval(maildir: Path) -> None:
    import threading
    import time

    done = threading.Event()
    pipeline = Scripted()
    poller = Poller(
        [PollTarget("box", MaildirSource("box", maildir, after="delete"), idle=True, interval=3600)],
        pipeline,
        on_outcome=lambda name, item, outcome: done.set(),
    )
    worker = threading.Thread(target=poller.run, kwargs={"idle_slice": 0.5})
    worker.start()
    try:
        time.sleep(0.5)
        key = deliver(maildir, msg(1))
        assert done.wait(10)
        assert pipeline.seen == [key]
    finally:
        poller.stop()
        worker.join(10)
    assert not worker.is_alive()
    assert files(maildir, "new") == []


def test_wait_for_changes_times_out_without_deliveries(maildir: Path) -> None:
    with MaildirSource("box", maildir).session() as session:
        assert session.wait_for_changes(0.1)  # nothing listed yet: fetch first
        assert list(session.fetch()) == []
        assert not session.wait_for_changes(0.3)
        deliver(maildir, msg(1))
        assert session.wait_for_changes(2)
