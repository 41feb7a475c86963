"""Crash test: SIGKILL a real ``ticketmail fetch --once`` at random points, rerun, check exactly-once.

Each round starts the real console script against the real Dovecot and a real SQLite file and kills it with
SIGKILL after a random delay: while connecting, in the middle of a batch, between a commit and its
acknowledgement, during the final EXPUNGE. After the kills, plain reruns finish the job. Then:

* every seeded message had exactly one effect: one ticket per new request, one entry per request or reply
  (no duplicated entry for a message processed before a crash), duplicates recognised as such;
* the ledger holds every delivered item exactly once;
* the mailbox ends drained (``after = "delete"``) or with everything flagged ``\\Seen`` (``after = "seen"``);
* no lock is left behind: the last run was not skipped as "busy".
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATE = "Mon, 02 Nov 2026 10:00:00 +0000"


def seed(n_new: int, n_replies: int, n_dupes: int, rng: random.Random) -> list[tuple[str, bytes, str]]:
    out: list[tuple[str, bytes, str]] = []
    originals: list[tuple[str, bytes, str]] = []
    for i in range(n_new):
        mid = f"c{i}@example.org"
        raw = (
            f"From: Customer {i} <c{i}@example.org>\r\nTo: support@example.test\r\nSubject: Crash case {i}\r\n"
            f"Date: {DATE}\r\nMessage-ID: <{mid}>\r\n\r\nBody {i}\r\n" + "padding line\r\n" * rng.randint(0, 200)
        ).encode()
        originals.append(("new", raw, mid))
        out.append(originals[-1])
        if rng.random() < n_replies / n_new:
            p = rng.choice(originals)
            rid = f"r{len(out)}@example.org"
            out.append(
                (
                    "reply",
                    (
                        f"From: {p[2].split('@')[0]} <{p[2]}>\r\nTo: support@example.test\r\nSubject: Re: case\r\n"
                        f"Date: {DATE}\r\nMessage-ID: <{rid}>\r\nIn-Reply-To: <{p[2]}>\r\n\r\nPing\r\n"
                    ).encode(),
                    rid,
                )
            )
        if rng.random() < n_dupes / n_new:
            p = rng.choice(originals)
            out.append(("dupe", p[1], p[2]))
    return out


def toml(dovecot: Any, user: str, after: str) -> str:
    return (
        '[storage]\nsqlite = "tickets.sqlite3"\n\n[[mailboxes]]\n'
        f'name = "support"\nprotocol = "imap"\nhost = "{dovecot.host}"\nport = {dovecot.ports["imaps"]}\n'
        f'security = "ssl"\nca_file = "{dovecot.ca_file}"\nusername = "{user}"\npassword = "{dovecot.password}"\n'
        f'after = "{after}"\nmax_per_run = 40\ntimeout = 10\n'
    )


def fetch(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ticketmail", "fetch", "--json", "--once", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_and_kill(
    cfg: Path, rng: random.Random, max_k: int, max_delay: float = 0.05
) -> tuple[bool, list[dict[str, Any]]]:
    """Start ``fetch --once`` and SIGKILL it at a random point: while starting or connecting (k = 0), or
    right after its k-th committed message, a few milliseconds later (between commit and acknowledgement,
    or inside the batched acknowledgement). Returns (killed, the JSON lines it printed)."""
    proc = fetch(cfg)
    assert proc.stdout is not None
    printed: list[dict[str, Any]] = []
    k = rng.choice([0, rng.randint(1, max_k)])  # max_k stays below the run's message cap
    if k == 0:
        time.sleep(rng.uniform(0.05, 0.5))
    while len(printed) < k:
        line = proc.stdout.readline()
        if not line:
            break
        printed.append(json.loads(line))
    time.sleep(rng.uniform(0, max_delay))
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    # Read through the same buffered stream that readline() used (communicate() reads the raw pipe and would
    # miss lines already buffered); stderr is small and read after.
    out = proc.stdout.read()
    assert proc.stderr is not None
    proc.stderr.read()
    proc.wait(timeout=60)
    printed += [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    return killed, printed


@pytest.mark.parametrize(("after", "seed_value"), [("delete", 11), ("seen", 12)])
def test_sigkill_at_random_points_then_rerun(tmp_path: Path, dovecot: Any, after: str, seed_value: int) -> None:
    rng = random.Random(seed_value)
    user = dovecot.new_user("crash")
    seeded = seed(160, 40, 20, rng)
    dovecot.append_many(user, [raw for _, raw, _ in seeded])
    cfg = tmp_path / "ticketmail.toml"
    cfg.write_text(toml(dovecot, user, after))
    db = tmp_path / "tickets.sqlite3"
    kills = 0
    lines: list[dict[str, Any]] = []
    # A run that finishes before its kill point is fine (it is one more clean run); keep going until at least
    # four runs were really killed, however fast the machine is, within a bounded number of attempts.
    for _ in range(40):
        killed, printed = run_and_kill(cfg, rng, max_k=30)
        kills += killed
        lines += printed
        if kills >= 6:
            break
    assert kills >= 4, "the runs finished before they could be interrupted"
    assert len(lines) > 0, "no run got as far as committing a message before being killed"
    for _ in range(20):  # reruns until a run finds nothing left
        proc = fetch(cfg)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode in (0, 1), err.decode()
        assert b"skipped, another fetch is running" not in err  # no stale lock after SIGKILL
        new = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
        lines += new
        if not new:
            break
    kinds = Counter(k for k, _, _ in seeded)
    with sqlite3.connect(db) as conn:
        tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
        entries = conn.execute("SELECT message_id, count(*) FROM entries GROUP BY message_id").fetchall()
        ledger = conn.execute("SELECT key FROM ledger WHERE key LIKE 'support/imap/%'").fetchall()
    assert tickets == kinds["new"]
    assert len(entries) == kinds["new"] + kinds["reply"]
    assert all(n == 1 for _, n in entries), [m for m, n in entries if n != 1]
    assert len(ledger) == len(seeded)  # every delivered item recorded once (duplicates included)
    assert len({key for (key,) in ledger}) == len(seeded)
    # any message whose line was printed twice was a redelivery after a crash: the second time a duplicate
    by_source = Counter(line["source"] for line in lines)
    for line in lines:
        if by_source[line["source"]] > 1 and line["already_processed"]:
            assert line["action"] == "duplicate"
    # A run killed after a commit but before printing its line leaves the item to be acknowledged silently
    # by the rerun (skip(provenance) is true), so lines may miss a few items; they can never invent one.
    assert len({line["source"] for line in lines}) <= len(seeded)
    state = dovecot.state(user)
    if after == "delete":
        assert state == []  # including \Deleted leftovers of killed runs: the next run expunges them
    else:
        assert len(state) == len(seeded)
        assert all("\\Seen" in m.flags for m in state)


def _local_config(tmp_path: Path, protocol: str, after: str) -> Path:
    cfg = tmp_path / "ticketmail.toml"
    cfg.write_text(
        '[storage]\nsqlite = "tickets.sqlite3"\n\n[[mailboxes]]\n'
        f'name = "local"\nprotocol = "{protocol}"\npath = "box"\nafter = "{after}"\nmax_per_run = 30\n'
    )
    return cfg


@pytest.mark.parametrize(
    ("protocol", "after"), [("maildir", "seen"), ("maildir", "delete"), ("mbox", "delete"), ("mbox", "seen")]
)
def test_sigkill_local_sources(tmp_path: Path, protocol: str, after: str) -> None:
    import mailbox

    rng = random.Random(f"{protocol}-{after}")
    seeded = seed(300, 60, 30, rng)  # more than ten capped runs can drain
    if protocol == "maildir":
        for sub in ("cur", "new", "tmp"):
            (tmp_path / "box" / sub).mkdir(parents=True)
        for n, (_, raw, _) in enumerate(seeded):
            name = f"{1700000000 + n}.M{n}P1.crash"
            (tmp_path / "box" / "tmp" / name).write_bytes(raw)
            os.rename(tmp_path / "box" / "tmp" / name, tmp_path / "box" / "new" / name)
            os.utime(tmp_path / "box" / "new" / name, (1700000000 + n, 1700000000 + n))
    else:
        box = mailbox.mbox(tmp_path / "box", create=True)
        for _, raw, _ in seeded:
            box.add(raw)
        box.flush()
        box.close()
    cfg = _local_config(tmp_path, protocol, after)
    kills = 0
    for _ in range(40):  # until at least four runs were really killed (see above)
        killed, _printed = run_and_kill(cfg, rng, max_k=15, max_delay=0.005)  # local runs are fast
        kills += killed
        if kills >= 6:
            break
    assert kills >= 4, "the runs finished before they could be interrupted"
    for _ in range(20):
        proc = fetch(cfg)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        if not out.strip():
            break
    kinds = Counter(k for k, _, _ in seeded)
    with sqlite3.connect(tmp_path / "tickets.sqlite3") as conn:
        tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
        entries = conn.execute("SELECT message_id, count(*) FROM entries GROUP BY message_id").fetchall()
    assert tickets == kinds["new"]
    assert len(entries) == kinds["new"] + kinds["reply"]
    assert all(n == 1 for _, n in entries)
    if protocol == "maildir":
        assert os.listdir(tmp_path / "box" / "new") == []
        left = os.listdir(tmp_path / "box" / "cur")
        assert len(left) == (len(seeded) if after == "seen" else 0)
        assert all(name.endswith(":2,S") for name in left)
    elif after == "delete":
        assert (tmp_path / "box").read_bytes() == b""
    else:  # every message still there exactly once (no copies left by a killed rewrite), marked read
        box = mailbox.mbox(tmp_path / "box", create=False)
        kept = [box.get_bytes(k) for k in box.iterkeys()]
        box.close()
        assert len(kept) == len(seeded)
        assert all(b"\nStatus: RO\n" in raw for raw in kept)


def test_deleted_leftovers_of_a_killed_run_are_expunged_by_the_next_run(tmp_path: Path, dovecot: Any) -> None:
    from ticketmail.backends.sqlite import SQLiteBackend
    from ticketmail.model import Provenance
    from ticketmail.pipeline import Pipeline
    from ticketmail.sources.poller import Poller

    user = dovecot.new_user("leftover")
    raw = seed(1, 0, 0, random.Random(1))[0][1]
    uid = dovecot.append(user, raw)
    pipeline = Pipeline(SQLiteBackend(str(tmp_path / "t.sqlite3")))
    # what a killed run did: committed the message, flagged it \Deleted, died before EXPUNGE
    provenance = Provenance("support", "imap", f"{dovecot.uidvalidity(user)}:{uid}")
    assert pipeline.process_email(raw, provenance=provenance).action == "created"
    with dovecot.imap(user) as client:
        client.select("INBOX")
        client.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
    poller = Poller([dovecot.config(user, name="support", after="delete")], pipeline, state=tmp_path / "s")
    assert poller.poll_once().run("support").status == "ok"
    assert dovecot.state(user) == []
