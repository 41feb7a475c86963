"""MboxSource: locked rewrite via the stdlib, Status header for seen, sibling files for move/quarantine."""

from __future__ import annotations

import mailbox
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticketmail.errors import SourceError
from ticketmail.model import MailboxContext, Provenance
from ticketmail.pipeline import Outcome
from ticketmail.sources.maildir import RetryCounter
from ticketmail.sources.mbox import MboxSource, mbox_key
from ticketmail.sources.poller import Poller, PollTarget


def msg(i: int, body: str = "hello") -> bytes:
    return f"From: u{i}@example.com\nSubject: m{i}\nMessage-ID: <{i}@t>\n\n{body}\nFrom the start of a line\n".encode()


def write_mbox(path: Path, raws: list[bytes]) -> None:
    box = mailbox.mbox(path, create=True)
    box.lock()
    for raw in raws:
        box.add(raw)
    box.flush()
    box.unlock()
    box.close()


def contents(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    box = mailbox.mbox(path, create=False)
    try:
        return [box.get_bytes(k) for k in box.iterkeys()]
    finally:
        box.close()


class Scripted:
    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        return Outcome("failed" if b"FAIL" in raw else "created", provenance=provenance)

    def is_processed(self, provenance: Provenance) -> bool:
        return False


def drain(src: MboxSource) -> list[bytes]:
    out = []
    with src.session() as session:
        for item in session.fetch():
            out.append(item.data)
            session.acknowledge(item)
    return out


def test_delete_rewrites_the_file_and_bytes_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "support"
    write_mbox(path, [msg(1), msg(2)])
    got = drain(MboxSource("box", path, after="delete"))
    assert got == contents_of([msg(1), msg(2)], tmp_path)
    assert contents(path) == []
    assert not Path(f"{path}.lock").exists()


def contents_of(raws: list[bytes], tmp_path: Path) -> list[bytes]:
    ref = tmp_path / "ref"
    write_mbox(ref, raws)
    return contents(ref)


def test_seen_sets_status_and_is_not_fetched_again(tmp_path: Path) -> None:
    path = tmp_path / "support"
    write_mbox(path, [msg(1), msg(2)])
    src = MboxSource("box", path, after="seen")
    assert len(drain(src)) == 2
    kept = contents(path)
    assert len(kept) == 2
    assert all(b"Status: RO" in raw for raw in kept)
    assert drain(src) == []


def test_key_ignores_status_headers() -> None:
    raw = msg(1)
    head, _, body = raw.partition(b"\n\n")
    assert mbox_key(raw) == mbox_key(head + b"\nStatus: RO\nX-Status: A\n\n" + body)
    assert mbox_key(raw) != mbox_key(msg(2))


def test_identical_copies_get_distinct_keys(tmp_path: Path) -> None:
    path = tmp_path / "support"
    write_mbox(path, [msg(1), msg(1)])
    with MboxSource("box", path, after="delete").session() as session:
        keys = [i.provenance.key for i in session.fetch()]
    assert len(set(keys)) == 2
    assert keys[1] == keys[0] + "#1"


def test_move_appends_to_sibling_file(tmp_path: Path) -> None:
    path = tmp_path / "support"
    write_mbox(path, [msg(1), msg(2)])
    drain(MboxSource("box", path, after="move:Processed"))
    assert contents(path) == []
    assert len(contents(tmp_path / "support.Processed")) == 2


def test_failures_then_quarantine(tmp_path: Path) -> None:
    path = tmp_path / "support"
    write_mbox(path, [msg(1, "FAIL"), msg(2)])
    counter = tmp_path / "state" / "retries.json"
    poller_runs = []
    for _ in range(3):
        src = MboxSource("box", path, after="delete", max_retries=2, retries=RetryCounter(counter))
        poller_runs.append(Poller([PollTarget("box", src)], Scripted()).poll_once().run("box"))
    assert [(r.acknowledged, r.failed) for r in poller_runs] == [(1, 1), (0, 1), (0, 0)]
    assert contents(path) == []
    quarantined = contents(tmp_path / "support.Quarantine")
    assert len(quarantined) == 1
    assert b"FAIL" in quarantined[0]


def test_missing_file_is_a_folder_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info, MboxSource("box", tmp_path / "nope").session():
        pass
    assert info.value.stage == "folder"


@pytest.mark.integration
def test_locked_by_another_process_is_a_lock_error(tmp_path: Path) -> None:
    path = tmp_path / "support"
    write_mbox(path, [msg(1)])
    holder = (
        "import mailbox, sys, time; b = mailbox.mbox(sys.argv[1]); b.lock();print('locked', flush=True); time.sleep(30)"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"locked"
        src = MboxSource("box", path, lock_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(SourceError) as info, src.session():
            pass
        assert info.value.stage == "lock"
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
        proc.wait()


def test_stale_dot_lock_is_removed(tmp_path: Path) -> None:
    import os

    path = tmp_path / "support"
    write_mbox(path, [msg(1)])
    dot = Path(f"{path}.lock")
    dot.write_text("")
    old = time.time() - 3600
    os.utime(dot, (old, old))
    assert drain(MboxSource("box", path, after="delete")) != []


def test_an_empty_dot_lock_of_a_run_killed_before_writing_its_pid_is_stale_after_a_few_seconds(tmp_path: Path) -> None:
    import os

    path = tmp_path / "support"
    write_mbox(path, [msg(1)])
    dot = Path(f"{path}.lock")
    dot.write_text("")  # killed between creating the dot lock and writing its pid
    young = time.time() - 0.5
    os.utime(dot, (young, young))
    started = time.monotonic()
    assert drain(MboxSource("box", path, after="delete", lock_timeout=5)) != []
    assert 1.0 < time.monotonic() - started < 4  # waited until the grace period passed, then took it


@pytest.mark.integration
def test_an_empty_dot_lock_is_respected_while_the_kernel_lock_is_held(tmp_path: Path) -> None:
    import os

    path = tmp_path / "support"
    write_mbox(path, [msg(1)])
    holder = (  # a delivering MTA: the kernel lock, and an empty dot lock
        "import fcntl, sys, time; f = open(sys.argv[1], 'r+'); fcntl.lockf(f, fcntl.LOCK_EX);"
        "open(sys.argv[1] + '.lock', 'w').close(); print('locked', flush=True); time.sleep(30)"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"locked"
        old = time.time() - 10
        os.utime(Path(f"{path}.lock"), (old, old))
        with pytest.raises(SourceError) as info, MboxSource("box", path, lock_timeout=0.5).session():
            pass
        assert info.value.stage == "lock"
        assert Path(f"{path}.lock").exists()
    finally:
        proc.kill()
        proc.wait()


def test_crash_before_flush_keeps_the_file_intact(tmp_path: Path) -> None:
    """Acknowledgements are applied only by the final flush; an exception still flushes what was acked."""
    path = tmp_path / "support"
    write_mbox(path, [msg(1), msg(2), msg(3)])
    src = MboxSource("box", path, after="delete")

    def crash() -> None:
        with src.session() as session:
            session.acknowledge(next(session.fetch()))
            raise RuntimeError("crash in the middle")

    with pytest.raises(RuntimeError):
        crash()
    assert len(contents(path)) == 2


@pytest.mark.integration
def test_dot_lock_of_a_killed_run_does_not_block(tmp_path: Path) -> None:
    import os
    import signal

    path = tmp_path / "support"
    write_mbox(path, [msg(1)])
    holder = (
        "import sys, time; from ticketmail.sources.mbox import MboxSource\n"
        "with MboxSource('box', sys.argv[1]).session():\n"
        "    print('locked', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"locked"
    assert Path(f"{path}.lock").read_text().strip() == str(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert Path(f"{path}.lock").exists()  # left behind by the killed run
    started = time.monotonic()
    assert drain(MboxSource("box", path, after="delete", lock_timeout=0.5)) != []
    assert time.monotonic() - started < 2


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3000), after=st.sampled_from(["delete", "seen", "move:Done"]))
def test_any_file_content_gives_items_or_a_source_error(data: bytes, after: str) -> None:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "spool"
    path.write_bytes(data)
    try:
        with MboxSource("box", path, after=after).session() as session:
            for item in session.fetch():
                assert isinstance(item.data, bytes)
                session.acknowledge(item)
    except SourceError:
        pass
    if after != "seen":
        with MboxSource("box", path, after=after).session() as session:
            assert list(session.fetch()) == []


def test_rewrite_keeps_other_messages_byte_exact(tmp_path: Path) -> None:
    path = tmp_path / "support"
    write_mbox(path, [msg(1), msg(2), msg(3)])
    before = path.read_bytes()
    src = MboxSource("box", path, after="delete")
    with src.session() as session:
        items = list(session.fetch())
        session.acknowledge(items[1])
    after = path.read_bytes()
    chunks = before.split(b"\nFrom ")
    assert after == chunks[0] + b"\nFrom " + chunks[2]


def test_nothing_is_written_to_the_live_file_before_the_final_rewrite(tmp_path: Path) -> None:
    """A SIGKILL before the end of a session must leave the file exactly as it was (no appended copies)."""
    path = tmp_path / "support"
    write_mbox(path, [msg(1), msg(2)])
    before = path.read_bytes()
    with MboxSource("box", path, after="seen").session() as session:
        for item in session.fetch():
            session.acknowledge(item)
        assert path.read_bytes() == before
        assert session.pending() == 0
    assert path.read_bytes() != before
    assert len(contents(path)) == 2


def test_mail_appended_by_a_non_locking_writer_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "support"
    write_mbox(path, [msg(1)])
    with MboxSource("box", path, after="delete").session() as session:
        (item,) = list(session.fetch())
        session.acknowledge(item)
        with open(path, "ab") as fh:  # a careless delivery agent ignoring the lock
            late = b"From: u9@example.com\nSubject: m9\nMessage-ID: <9@t>\n\nlate body\n"
            fh.write(b"From late@example.org Mon Nov  2 10:00:00 2026\n" + late + b"\n")
    kept = contents(path)
    assert len(kept) == 1
    assert b"Subject: m9" in kept[0]
