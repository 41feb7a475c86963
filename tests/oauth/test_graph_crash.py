"""Crash test of the Graph source: SIGKILL a real ``ticketmail fetch --once`` at random points, rerun.

Like the IMAP crash test: each round starts the console script against the Graph-compatible server (tokens
from the Authlib server, client credentials) and a real SQLite file and kills it after a random delay, while
it gets its token, between pages, between a commit and its acknowledgement. Plain reruns then finish the
job. Afterwards every seeded message had exactly one effect (0 lost, 0 duplicated), the ledger holds each
immutable id once, and the folder is drained (``after = "delete"``) or all read (``after = "seen"``).
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


def seed(n_new: int, rng: random.Random) -> list[tuple[str, bytes, str]]:
    out: list[tuple[str, bytes, str]] = []
    originals: list[tuple[str, bytes, str]] = []
    for i in range(n_new):
        mid = f"gc{i}.{rng.random()}@example.org"
        raw = (
            f"From: Customer {i} <c{i}@example.org>\r\nTo: support@contoso.test\r\nSubject: Graph crash {i}\r\n"
            f"Date: {DATE}\r\nMessage-ID: <{mid}>\r\n\r\nBody {i}\r\n" + "padding line\r\n" * rng.randint(0, 200)
        ).encode()
        originals.append(("new", raw, mid))
        out.append(originals[-1])
        if rng.random() < 0.25:
            parent = rng.choice(originals)
            rid = f"gr{len(out)}.{rng.random()}@example.org"
            reply = (
                f"From: Someone <{parent[2]}>\r\nTo: support@contoso.test\r\nSubject: Re: case\r\nDate: {DATE}\r\n"
                f"Message-ID: <{rid}>\r\nIn-Reply-To: <{parent[2]}>\r\n\r\nPing\r\n"
            ).encode()
            out.append(("reply", reply, rid))
        if rng.random() < 0.1:
            p = rng.choice(originals)
            out.append(("dupe", p[1], p[2]))
    return out


def fetch(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ticketmail", "fetch", "--json", "--once", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_and_kill(cfg: Path, rng: random.Random, max_k: int) -> tuple[bool, list[dict[str, Any]]]:
    proc = fetch(cfg)
    assert proc.stdout is not None
    printed: list[dict[str, Any]] = []
    k = rng.choice([0, rng.randint(1, max_k)])
    if k == 0:
        time.sleep(rng.uniform(0.05, 0.6))
    while len(printed) < k:
        line = proc.stdout.readline()
        if not line:
            break
        printed.append(json.loads(line))
    time.sleep(rng.uniform(0, 0.03))
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    out = proc.stdout.read()
    assert proc.stderr is not None
    proc.stderr.read()
    proc.wait(timeout=60)
    printed += [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    return killed, printed


@pytest.mark.parametrize(("after", "seed_value"), [("delete", 21), ("seen", 22)])
def test_sigkill_graph_fetch_then_rerun(
    oauth_server: Any, graph_server: Any, graph_mailbox: Any, state_dir: Path, after: str, seed_value: int
) -> None:
    started = time.monotonic()
    rng = random.Random(seed_value)
    data, address = graph_mailbox(after=after, max_per_run=30)
    seeded = seed(80, rng)
    ids = [graph_server.deliver(address, raw) for _, raw, _ in seeded]
    cfg = state_dir / "ticketmail.toml"
    lines_toml = ['[storage]\nsqlite = "tickets.sqlite3"\n\n[[mailboxes]]']
    lines_toml += [f"{key} = {json.dumps(value)}" for key, value in data.items() if key != "timeout"]
    lines_toml.append("timeout = 10")
    cfg.write_text("\n".join(lines_toml) + "\n")
    graph_server.throttle(3, retry_after=1)  # throttling in the middle of it all
    kills = 0
    lines: list[dict[str, Any]] = []
    for _ in range(30):
        killed, printed = run_and_kill(cfg, rng, max_k=25)
        kills += killed
        lines += printed
        if kills >= 5:
            break
    assert kills >= 4, "the runs finished before they could be interrupted"
    for _ in range(20):
        proc = fetch(cfg)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 1), err.decode()
        assert b"skipped, another fetch is running" not in err
        new = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
        lines += new
        if not new and proc.returncode == 0:
            break
    kinds = Counter(k for k, _, _ in seeded)
    with sqlite3.connect(state_dir / "tickets.sqlite3") as conn:
        tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
        entries = conn.execute("SELECT message_id, count(*) FROM entries GROUP BY message_id").fetchall()
        ledger = conn.execute("SELECT key FROM ledger WHERE key LIKE ?", (f"{data['name']}/graph/%",)).fetchall()
    assert tickets == kinds["new"]  # 0 lost
    assert len(entries) == kinds["new"] + kinds["reply"]
    assert all(n == 1 for _, n in entries), [m for m, n in entries if n != 1]  # 0 duplicated
    assert sorted(key.rsplit("/", 1)[1] for (key,) in ledger) == sorted(ids)  # each immutable id once
    remaining = graph_server.messages(address)
    if after == "delete":
        assert remaining == []
    else:
        assert len(remaining) == len(seeded)
        assert all(m.is_read for m in remaining)
    assert graph_server.without_immutable == 0
    assert time.monotonic() - started < 120
