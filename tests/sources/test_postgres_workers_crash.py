"""Crash test: three ``ticketmail fetch --watch`` workers share six mailboxes through PostgreSQL leases.

Three IMAP mailboxes on the real Dovecot (IDLE on) and three Maildirs, one real PostgreSQL database named by
``[storage] url``. Workers are SIGKILLed at random moments (mid-batch, between a commit and its
acknowledgement, while idling) and restarted, so mailboxes move between workers through lease expiry and
takeover all the time. At the end every message must have had exactly one effect (one ticket per
conversation, one entry per message, the in-folder copies recognised as duplicates), nothing quarantined,
and every mailbox drained.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ticketmail.testing.postgres import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATE = "Mon, 02 Nov 2026 10:00:00 +0000"
PER_BOX = 36
LEASE_TTL = 2.0


def _messages(box: int, rng: random.Random) -> tuple[list[bytes], list[str], list[str]]:
    """Raw messages of one mailbox in delivery order, the conversation roots, and every distinct message id."""
    raws: list[bytes] = []
    roots: list[str] = []
    mids: list[str] = []
    for i in range(PER_BOX):
        if roots and rng.random() < 0.3:
            parent = rng.choice(roots)
            mid = f"b{box}r{i}@crash.example"
            head = f"Subject: Re: case\r\nIn-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\n"
        else:
            mid = f"b{box}c{i}@crash.example"
            roots.append(mid)
            head = f"Subject: Case {box}-{i}\r\n"
        raw = (
            f"From: Customer {box}-{i} <cust{box}x{i % 5}@example.org>\r\nTo: support{box}@example.test\r\n{head}"
            f"Date: {DATE}\r\nMessage-ID: <{mid}>\r\n\r\nBody {box}-{i}\r\n" + "padding line\r\n" * rng.randint(0, 80)
        ).encode()
        raws.append(raw)
        mids.append(mid)
        if rng.random() < 0.08:
            raws.append(raw)  # a second copy in the same folder: a duplicate, no second effect
    return raws, roots, mids


def _config(tmp: Path, url: str, dovecot: Any, users: list[str], maildirs: list[Path]) -> Path:
    parts = [f'[storage]\nurl = "{url}?pool_size=8"\nlease_ttl = {LEASE_TTL}\n']
    for user in users:
        parts.append(
            f'[[mailboxes]]\nname = "imap-{user}"\nprotocol = "imap"\nhost = "{dovecot.host}"\n'
            f'port = {dovecot.ports["imaps"]}\nsecurity = "ssl"\nca_file = "{dovecot.ca_file}"\n'
            f'username = "{user}"\npassword = "{dovecot.password}"\nafter = "delete"\nidle = true\n'
            "poll_interval = 1\nbatch_size = 10\ntimeout = 10\n"
        )
    for path in maildirs:
        parts.append(
            f'[[mailboxes]]\nname = "maildir-{path.name}"\nprotocol = "maildir"\npath = "{path}"\n'
            'after = "delete"\npoll_interval = 0.5\nbatch_size = 10\n'
        )
    cfg = tmp / "ticketmail.toml"
    cfg.write_text("\n".join(parts))
    return cfg


def _start(cfg: Path, tmp: Path, n: int) -> subprocess.Popen[bytes]:
    log = open(tmp / f"worker{n}.log", "ab")  # noqa: SIM115 - handed to the child, closed by the OS
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ticketmail",
            "fetch",
            "--watch",
            "--config",
            str(cfg),
            "--state-dir",
            str(tmp / f"s{n}"),
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )


def _remaining(dovecot: Any, users: list[str], maildirs: list[Path]) -> int:
    left = sum(len(dovecot.state(user)) for user in users)
    return left + sum(len(os.listdir(p / "new")) + len(os.listdir(p / "cur")) for p in maildirs)


def test_three_workers_six_mailboxes_sigkill_and_restart(tmp_path: Path, dovecot: Any) -> None:
    rng = random.Random(int(os.environ.get("TICKETMAIL_CRASH_SEED", "615")))
    server = PostgresServer.shared()
    url = server.create_database()
    users = [dovecot.new_user("pgw") for _ in range(3)]
    maildirs = [tmp_path / f"md{i}" for i in range(3)]
    expected_mids: list[str] = []
    expected_tickets = 0
    delivered = 0
    for box in range(6):
        raws, roots, mids = _messages(box, rng)
        expected_mids += mids
        expected_tickets += len(roots)
        delivered += len(raws)
        if box < 3:
            dovecot.append_many(users[box], raws)
        else:
            path = maildirs[box - 3]
            for sub in ("cur", "new", "tmp"):
                (path / sub).mkdir(parents=True)
            for n, raw in enumerate(raws):
                name = f"{1700000000 + n}.M{n}P{box}.crash"
                (path / "tmp" / name).write_bytes(raw)
                os.rename(path / "tmp" / name, path / "new" / name)
    assert _remaining(dovecot, users, maildirs) == delivered
    cfg = _config(tmp_path, url, dovecot, users, maildirs)

    workers: dict[int, subprocess.Popen[bytes]] = {n: _start(cfg, tmp_path, n) for n in range(3)}
    started = 0
    kills = 0
    try:
        chaos_until = time.monotonic() + 14
        while time.monotonic() < chaos_until:
            time.sleep(rng.uniform(0.3, 1.5))
            alive = [n for n, p in workers.items() if p.poll() is None]
            if len(alive) > 1 or (alive and rng.random() < 0.3):
                victim = rng.choice(alive)
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                kills += 1
            for n, proc in list(workers.items()):
                if proc.poll() is not None and rng.random() < 0.6:
                    started += 1
                    workers[n] = _start(cfg, tmp_path, n)
        for n, proc in list(workers.items()):  # everyone back for the drain
            if proc.poll() is not None:
                workers[n] = _start(cfg, tmp_path, n)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _remaining(dovecot, users, maildirs):
            time.sleep(0.5)
        assert _remaining(dovecot, users, maildirs) == 0, "mailboxes were not drained"
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        stopped = []
        for proc in workers.values():
            try:
                stopped.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                stopped.append(proc.wait())
    assert kills >= 5

    with psycopg.connect(url) as conn:
        conn.execute("SET search_path TO ticketmail")
        tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()
        entry_mids = Counter(m for (m,) in conn.execute("SELECT message_id FROM entries").fetchall())
        quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()
        ledger = conn.execute(
            "SELECT count(*) FROM ledger WHERE key LIKE 'imap-%/%' OR key LIKE 'maildir-%/%'"
        ).fetchone()
        time.sleep(LEASE_TTL)  # leases of workers killed during the chaos lapse by themselves
        leases = conn.execute("SELECT count(*) FROM leases WHERE expires > clock_timestamp()").fetchone()
    assert quarantined == (0,)
    assert tickets == (expected_tickets,)
    assert sorted(entry_mids) == sorted(expected_mids)
    assert set(entry_mids.values()) == {1}  # exactly one entry per message, whatever the kills
    assert ledger == (delivered,)  # every mailbox item recorded once (the copies as duplicates)
    assert leases == (0,)  # the stopped workers gave their leases back; nobody holds one any more
    # SIGTERM: finish the message in hand, release, exit 0 (a worker still starting up just dies of it)
    assert all(code in (0, -signal.SIGTERM) for code in stopped), stopped
    server.drop_database(url)
