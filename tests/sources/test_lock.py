"""The per-mailbox lock: exclusive across threads and real processes, released when a holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ticketmail.sources.lock import LockBusyError, MailboxLock, lock_path

HOLDER = """
import sys, time
from ticketmail.sources.lock import MailboxLock
lock = MailboxLock(sys.argv[1], sys.argv[2])
assert lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_second_object_in_same_process_is_busy(tmp_path: Path) -> None:
    a = MailboxLock(tmp_path, "support")
    b = MailboxLock(tmp_path, "support")
    assert a.acquire()
    assert not b.acquire()
    a.release()
    assert b.acquire()
    b.release()


def test_other_mailboxes_are_independent(tmp_path: Path) -> None:
    a = MailboxLock(tmp_path, "support")
    b = MailboxLock(tmp_path, "sales")
    assert a.acquire()
    assert b.acquire()
    a.release()
    b.release()


def test_threads_exclude_each_other(tmp_path: Path) -> None:
    lock = MailboxLock(tmp_path, "x")
    inside = 0
    peak = 0
    guard = threading.Lock()

    def worker() -> None:
        nonlocal inside, peak
        for _ in range(200):
            mine = MailboxLock(tmp_path, "x")
            if mine.acquire():
                with guard:
                    inside += 1
                    peak = max(peak, inside)
                time.sleep(0.0005)
                with guard:
                    inside -= 1
                mine.release()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 1
    assert lock.acquire()


def test_context_manager_raises_busy(tmp_path: Path) -> None:
    with MailboxLock(tmp_path, "x"), pytest.raises(LockBusyError) as info, MailboxLock(tmp_path, "x"):
        pass
    assert info.value.stage == "lock"
    assert info.value.code == "mailbox_busy"


@pytest.mark.integration
def test_held_by_another_process_and_freed_when_it_is_killed(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "support"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"locked"
        mine = MailboxLock(tmp_path, "support")
        assert not mine.acquire()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert mine.acquire()  # no stale lock after SIGKILL
        mine.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_lock_names_are_safe_and_distinct(tmp_path: Path) -> None:
    a = lock_path(tmp_path, "../etc/passwd")
    b = lock_path(tmp_path, "..-etc-passwd")
    assert a.parent == tmp_path / "locks"
    assert a != b
    assert lock_path(tmp_path, "support").name == "support.lock"


def test_process_local_lock_without_state_dir() -> None:
    a = MailboxLock(None, "x")
    assert a.acquire()
    assert not a.acquire()
    a.release()
    assert a.acquire()
