"""Ingestion throughput: 10,000 messages of about 5 KB through the whole pipeline, into SQLite and memory.

Baseline, measured in the same run on the same messages: parse-only (``parse_email`` of each message, which
every ingestion does too). Reported: messages/s for each, and the ratio of each ingestion to parse-only.

Targets (issue 5): SQLite ingestion within 2x of parse-only time, and over 500 messages/s on one core.

The mix: 40% new conversations, 50% replies threaded by In-Reply-To/References, 5% duplicates (the
same message delivered again through another mailbox), 5% auto-replies; 10% of messages carry a small
attachment. Every message has its own provenance, so each one runs the full unit of work (ledger check,
duplicate keys, rules, threading, writes, audit, commit). The SQLite run is repeated with
``Pipeline.process_batch`` (one commit per ``--batch`` messages, default 100).

    .venv/bin/python benchmarks/bench_ingest.py            # 10,000 messages
    .venv/bin/python benchmarks/bench_ingest.py --quick    # 1,000 messages
    .venv/bin/python benchmarks/bench_ingest.py --synchronous FULL
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gc
import itertools
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.model import Provenance
from ticketmail.parsing.mime import parse_email
from ticketmail.pipeline import Pipeline

WORDS = [
    *("printer network password invoice laptop monitor screen account access server backup mail calendar",),
    *("meeting room badge printer toner driver update restart error message please could you help thanks",),
]
WORDS = " ".join(WORDS).split(" ")

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)


def body(rng: random.Random, size: int) -> str:
    lines, line, total = [], [], 0
    while total < size:
        word = rng.choice(WORDS)
        line.append(word)
        total += len(word) + 1
        if len(line) >= 12:
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line))
    return "\r\n".join(lines)


def message(rng: random.Random, i: int, *, refs: list[str], subject: str, sender: str, auto: bool) -> bytes:
    mid = f"bench-{i}@client{i % 97}.example"
    headers = [
        f"Return-Path: <{sender}>",
        "Delivered-To: support@desk.example",
        f"Received: from mail{i % 13}.client.example (mail{i % 13}.client.example [198.51.100.{i % 250}])\r\n"
        f"\tby mx.desk.example with ESMTPS id {i:010X} for <support@desk.example>;\r\n"
        "\tMon, 02 Mar 2026 09:14:03 +0100 (CET)",
        f"From: User {i % 500} <{sender}>",
        "To: Support <support@desk.example>",
        f"Subject: {subject}",
        "Date: Mon, 02 Mar 2026 09:13:58 +0100",
        f"Message-ID: <{mid}>",
        "MIME-Version: 1.0",
    ]
    if refs:
        headers.append(f"In-Reply-To: <{refs[-1]}>")
        headers.append("References: " + " ".join(f"<{r}>" for r in refs[-10:]))
    if auto:
        headers.append("Auto-Submitted: auto-replied")
    text = body(rng, 4200 if i % 10 else 2400)
    if i % 10:
        headers.append("Content-Type: text/plain; charset=utf-8")
        headers.append("Content-Transfer-Encoding: 8bit")
        return ("\r\n".join(headers) + "\r\n\r\n" + text + "\r\n").encode()
    attachment = base64.encodebytes(rng.randbytes(1400)).decode().replace("\n", "\r\n")
    headers.append('Content-Type: multipart/mixed; boundary="b1"')
    parts = (
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n"
        '--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="log.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n" + attachment + "--b1--\r\n"
    )
    return ("\r\n".join(headers) + "\r\n\r\n" + parts).encode()


def corpus(n: int, seed: int = 5) -> list[bytes]:
    """``n`` messages in delivery order (replies after what they answer)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    threads: list[tuple[str, list[str], str]] = []  # subject, message ids, sender
    for i in range(n):
        roll = rng.random()
        if not threads or roll < 0.40:
            sender = f"user{i % 500}@client{i % 97}.example"
            subject = f"Problem {i}: " + " ".join(rng.choice(WORDS) for _ in range(5))
            out.append(message(rng, i, refs=[], subject=subject, sender=sender, auto=False))
            threads.append((subject, [f"bench-{i}@client{i % 97}.example"], sender))
        elif roll < 0.90:
            subject, refs, sender = rng.choice(threads[-300:])
            out.append(message(rng, i, refs=refs, subject="Re: " + subject, sender=sender, auto=False))
            refs.append(f"bench-{i}@client{i % 97}.example")
        elif roll < 0.95:
            out.append(rng.choice(out))  # the same message again: a duplicate
        else:
            subject, refs, sender = rng.choice(threads[-300:])
            out.append(message(rng, i, refs=refs, subject="Auto: " + subject, sender=sender, auto=True))
    return out


def clock() -> object:
    ticks = itertools.count()
    return lambda: START + dt.timedelta(milliseconds=next(ticks))


def timed(label: str, fn: object) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    elapsed = time.perf_counter() - started
    return elapsed


def ingest(pipeline: Pipeline, messages: list[bytes]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for i, raw in enumerate(messages):
        out = pipeline.process_email(raw, provenance=Provenance("INBOX", "imap", f"1:{i}"))
        counts[out.action] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 messages instead of 10,000")
    parser.add_argument("-n", type=int, default=None, help="number of messages")
    parser.add_argument("--synchronous", default="NORMAL", choices=("OFF", "NORMAL", "FULL", "EXTRA"))
    parser.add_argument("--batch", type=int, default=100, help="messages per unit of work for process_batch")
    args = parser.parse_args()
    n = args.n or (1_000 if args.quick else 10_000)

    messages = corpus(n)
    size = sum(map(len, messages)) / len(messages)
    print(f"{n} messages, {size / 1024:.1f} KB average; Python {sys.version.split()[0]}")

    # The machine may be shared: the baseline is measured before and after the ingestion runs, best kept.
    parse_s = timed("parse", lambda: [parse_email(raw) for raw in messages])

    memory_counts: Counter[str] = Counter()

    def run_memory() -> None:
        memory_counts.update(ingest(Pipeline(InMemoryBackend(), clock=clock()), messages))  # type: ignore[arg-type]

    memory_s = timed("memory", run_memory)

    tmp = tempfile.mkdtemp(prefix="bench-ingest-")
    sqlite_counts: Counter[str] = Counter()
    try:
        path = os.path.join(tmp, "tickets.sqlite3")
        backend = SQLiteBackend(path, synchronous=args.synchronous)

        def run_sqlite() -> None:
            sqlite_counts.update(ingest(Pipeline(backend, clock=clock()), messages))  # type: ignore[arg-type]

        sqlite_s = timed("sqlite", run_sqlite)
        tickets = len(backend.list_tickets())
        backend.close()

        batch_backend = SQLiteBackend(os.path.join(tmp, "batched.sqlite3"), synchronous=args.synchronous)
        batch_counts: Counter[str] = Counter()

        def run_batched() -> None:
            pipeline = Pipeline(batch_backend, clock=clock())  # type: ignore[arg-type]
            for start in range(0, n, args.batch):
                chunk = messages[start : start + args.batch]
                items = [(raw, Provenance("INBOX", "imap", f"1:{start + i}")) for i, raw in enumerate(chunk)]
                batch_counts.update(o.action for o in pipeline.process_batch(items))

        batched_s = timed("batched", run_batched)
        batch_backend.close()
        db_mb = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    parse_s = min(parse_s, timed("parse", lambda: [parse_email(raw) for raw in messages]))
    assert memory_counts == sqlite_counts == batch_counts, (memory_counts, sqlite_counts, batch_counts)
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(sqlite_counts.items())) + f"; {tickets} tickets")
    print(f"{'run':<28}{'seconds':>9}{'msg/s':>10}{'x parse-only':>14}")
    for label, seconds in (
        ("parse-only (baseline)", parse_s),
        ("ingest, in memory", memory_s),
        (f"ingest, SQLite ({args.synchronous})", sqlite_s),
        (f"  in batches of {args.batch}", batched_s),
    ):
        print(f"{label:<28}{seconds:>9.2f}{n / seconds:>10,.0f}{seconds / parse_s:>14.2f}")
    print(f"SQLite file: {db_mb:.1f} MB")
    for label, seconds in (("one unit per message", sqlite_s), (f"batches of {args.batch}", batched_s)):
        ratio = seconds / parse_s
        rate = n / seconds
        print(
            f"SQLite, {label}: target <= 2.00x parse-only: {ratio:.2f}x {'OK' if ratio <= 2 else 'MISSED'}; "
            f"target > 500 msg/s: {rate:,.0f} {'OK' if rate > 500 else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
