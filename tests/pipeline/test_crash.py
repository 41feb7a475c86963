"""Crash test: a real ``ticketmail ingest`` process SIGKILLed at random points, rerun until done.

Every message must end up with exactly one effect: one ticket per conversation, every message on its
ticket's thread exactly once and in order, one audit record per mailbox item, nothing quarantined.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

import pytest

from ticketmail.backends.sqlite import SQLiteBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONVERSATIONS = 90


def _mail(n: int, sender: str, subject: str, mid: str, refs: list[str], auto: bool = False) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@desk.example"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Mar 2026 09:00:00 +0000"
    msg["Message-ID"] = f"<{mid}>"
    if refs:
        msg["In-Reply-To"] = f"<{refs[-1]}>"
        msg["References"] = " ".join(f"<{r}>" for r in refs)
    if auto:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(f"Message {n} ({mid}).\n" + "Some text to make it realistic. " * 20)
    return bytes(msg)


def _build(maildir: Path, rng: random.Random) -> tuple[dict[str, list[str]], int]:
    """Write the messages; return {first message id: every message id of the thread, in order} and a count."""
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    threads: dict[str, list[str]] = {}
    raws: list[tuple[str, bytes]] = []  # in delivery order
    open_threads: list[str] = []
    n = 0
    while len(threads) < CONVERSATIONS or open_threads:
        n += 1
        roll = rng.random()
        if len(threads) < CONVERSATIONS and (roll < 0.4 or not open_threads):
            mid = f"c{n}@client.example"
            threads[mid] = [mid]
            open_threads.append(mid)
            raws.append((mid, _mail(n, f"user{n % 17}@client.example", f"Problem {n}", mid, [])))
        elif roll < 0.8:
            root = rng.choice(open_threads)
            mid = f"r{n}@client.example"
            sender = f"user{int(root[1:].split('@')[0]) % 17}@client.example"
            raws.append((mid, _mail(n, sender, f"Re: Problem {root}", mid, list(threads[root]))))
            threads[root].append(mid)
            if len(threads[root]) >= 4:
                open_threads.remove(root)
        elif roll < 0.9 and raws:
            # the same message delivered twice (another copy in the folder): a duplicate, no effect
            raws.append(rng.choice(raws))
        else:
            # an auto-reply that threads nowhere: ignored
            mid = f"a{n}@client.example"
            raws.append((mid, _mail(n, f"ooo{n}@client.example", "Out of office", mid, [], auto=True)))
    for i, (_, raw) in enumerate(raws):
        (maildir / "new" / f"{1772442000 + i:010d}.M{i}P1.desk.example").write_bytes(raw)
    return threads, len(raws)


def _run_until_killed(args: list[str], rng: random.Random, start: int, total: int) -> tuple[bool, int]:
    """Start the ingest; SIGKILL it after a random number of output lines (at least ``start``, where the
    previous run got to, so kills land in new work). Return (finished, lines seen)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    kill_after = rng.randint(start, start + max(1, (total - start) // 3))
    seen = 0
    try:
        for _line in proc.stdout:
            seen += 1
            if seen >= kill_after:
                time.sleep(rng.random() * 0.003)  # land anywhere inside the next message's transaction
                proc.send_signal(signal.SIGKILL)
                break
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return code == 0, seen


@pytest.mark.parametrize("batch", ["1", "25"])
def test_sigkill_at_random_points_gives_exactly_one_effect(tmp_path: Path, batch: str) -> None:
    """With one unit of work per message, and with 25 messages per unit (``process_batch``)."""
    rng = random.Random(int(os.environ.get("TICKETMAIL_CRASH_SEED", "20260302")))
    maildir = tmp_path / "Maildir"
    threads, total = _build(maildir, rng)
    assert total >= 200
    db = tmp_path / "tickets.sqlite3"
    args = [sys.executable, "-m", "ticketmail", "ingest", "--json", "--db", str(db), "--no-progress", "--batch", batch]
    args.append(str(maildir))

    kills = 0
    progress = 0
    for _attempt in range(150):
        finished, seen = _run_until_killed(args, rng, progress, total)
        if finished:
            break
        kills += 1
        progress = max(progress, seen)
    else:
        pytest.fail("ingest never completed in 150 attempts")
    print(f"{total} messages, {kills} SIGKILLs before a run completed")
    assert kills >= 5, f"only {kills} kills happened; the test did not exercise crashes"

    # A final clean run: everything is already processed.
    final = subprocess.run(args, capture_output=True, check=True, timeout=120)
    lines = [json.loads(line) for line in final.stdout.decode().splitlines()]
    assert len(lines) == total
    assert {line["action"] for line in lines} == {"duplicate"}
    assert all(line["already_processed"] for line in lines)

    _check_exactly_once(db, threads, total)


def _check_exactly_once(db: Path, threads: dict[str, list[str]], total: int) -> None:
    backend = SQLiteBackend(db)
    try:
        tickets = backend.list_tickets()
        assert len(tickets) == CONVERSATIONS, "exactly one ticket per conversation"
        by_first: dict[str, list[str]] = {}
        for ticket in tickets:
            ids = [e.message_id or "" for e in backend.entries(ticket.number)]
            by_first[ids[0]] = ids
        assert by_first == threads, "every message on its thread exactly once, in order"
        audit = list(backend.audit_log())
        per_item = Counter(r.provenance.key for r in audit if r.provenance is not None)
        assert len(per_item) == total
        assert set(per_item.values()) == {1}, "one audit record per mailbox item"
        assert backend.quarantined() == []
        actions = Counter(r.action for r in audit)
        assert actions["created"] == CONVERSATIONS
        assert actions["appended"] == sum(len(t) - 1 for t in threads.values())
    finally:
        backend.close()


def test_concurrent_ingests_of_one_folder_give_exactly_one_effect(tmp_path: Path) -> None:
    """Three processes ingest the same Maildir into the same database at once (overlapping cron runs)."""
    rng = random.Random(7)
    maildir = tmp_path / "Maildir"
    threads, total = _build(maildir, rng)
    db = tmp_path / "tickets.sqlite3"
    args = [sys.executable, "-m", "ticketmail", "ingest", "--json", "--db", str(db), "--no-progress", str(maildir)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for _ in range(3)]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0]
    created = Counter()
    for output in outputs:
        for line in output.decode().splitlines():
            created[json.loads(line)["action"]] += 1
    # each item was committed by exactly one process; the others saw it as already processed
    assert created["created"] == CONVERSATIONS
    _check_exactly_once(db, threads, total)
