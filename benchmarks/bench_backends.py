"""Backend scale figures in one run: ingest throughput per backend and writers, and cost per message vs size.

1. **Ingest msg/s** for memory, SQLite and PostgreSQL with 1, 2 and 4 concurrent writers. Each writer is a
   process with its own backend on the shared store (SQLite: one file; PostgreSQL: one database), as
   workers are deployed; memory is one process with writer threads on one backend (it cannot be shared
   between processes). Each writer ingests its own stream of the ``bench_ingest`` mix (40% new
   conversations, 50% replies, 5% duplicates, 5% auto-replies, 10% with an attachment), one unit of work per
   message, and the run's figure is the total messages over the wall time of the slowest writer. The
   single-writer run is repeated with batches (``process_batch``, one commit per ``--batch`` messages, the
   poller's default group commit).
2. **Cost per message with 10k vs 200k messages already stored** (SQLite and PostgreSQL): the store is
   prefilled by a bulk loader (tickets, entries, message ids, ledger and audit rows, as ingestion writes
   them), then ``--probe`` more messages are ingested and timed. Threading lookups (ledger key, message
   ids, ticket number, requester/date) must stay index-bound: the ratio should stay under 1.3.

Targets: PostgreSQL single-writer ingest within 1.5x of SQLite's; the 200k/10k ratio under 1.3 for both.

Durability is compared like with like. SQLite's default (WAL, ``synchronous=NORMAL``) does not flush a
commit to disk before it returns: an OS crash or power loss may lose the last commits, never consistency.
PostgreSQL's ``synchronous_commit=off`` is that trade (commits reach disk within ``wal_writer_delay``);
the server default ``synchronous_commit=on`` flushes every commit, like SQLite's ``synchronous=FULL``. So
the runs are: SQLite NORMAL and FULL, PostgreSQL ``off`` and ``on``, and the ratios printed pair them.
PostgreSQL: a private server is started for the run (``ticketmail.testing.postgres``, fsync on), unless
``--pg-url`` names one. Each PostgreSQL run starts after a ``CHECKPOINT`` (each SQLite run has a fresh file),
so no run pays for the dirty pages of the one before.

    .venv/bin/python benchmarks/bench_backends.py                  # 2,000 messages per writer, 10k vs 200k
    .venv/bin/python benchmarks/bench_backends.py --quick          # 500 per writer, 10k vs 50k
    .venv/bin/python benchmarks/bench_backends.py --large 100000 --probe 1000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import multiprocessing
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import corpus

from ticketmail.backends.base import Backend
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.model import Provenance
from ticketmail.pipeline import Pipeline

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)


def stream(writer: int, n: int) -> list[bytes]:
    """Writer ``writer``'s own messages: the ingest mix with message ids and senders unique to the writer."""
    tag = f"w{writer}x".encode()
    return [
        raw.replace(b"bench-", b"bench-" + tag).replace(b"@client", b"@" + tag + b"client")
        for raw in corpus(n, seed=writer + 11)
    ]


def clock() -> Callable[[], dt.datetime]:
    ticks = itertools.count()
    return lambda: START + dt.timedelta(milliseconds=next(ticks))


def open_store(kind: str, target: str) -> Backend:
    if kind == "sqlite":
        path, _, sync = target.partition("#")
        return SQLiteBackend(path, synchronous=sync or "NORMAL")  # type: ignore[arg-type]
    from ticketmail.backends.postgres import PostgresBackend

    url, _, sync = target.partition("#")
    return PostgresBackend(url, synchronous_commit=sync or None, pool_size=2)


def ingest(backend: Backend, messages: list[bytes], writer: int, batch: int, offset: int = 0) -> float:
    pipeline = Pipeline(backend, clock=clock())
    started = time.perf_counter()
    if batch <= 1:
        for i, raw in enumerate(messages):
            pipeline.process_email(raw, provenance=Provenance(f"INBOX{writer}", "imap", f"1:{offset + i}"))
    else:
        for first in range(0, len(messages), batch):
            chunk = messages[first : first + batch]
            pipeline.process_batch(
                [(raw, Provenance(f"INBOX{writer}", "imap", f"1:{offset + first + i}")) for i, raw in enumerate(chunk)]
            )
    return time.perf_counter() - started


def _writer_process(kind: str, target: str, writer: int, n: int, batch: int, gate: Any, out: Any) -> None:
    messages = stream(writer, n)
    backend = open_store(kind, target)
    try:
        gate.wait()
        out.put(ingest(backend, messages, writer, batch))
    finally:
        backend.close()


def settle_postgres(url: str) -> None:
    """Checkpoint the server, so that one run does not pay for the pages the previous run left dirty."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, contextlib.suppress(psycopg.Error):
        conn.execute("CHECKPOINT")  # a role on a server given with --pg-url may not be allowed to


def run_writers(kind: str, target: str, writers: int, n: int, batch: int = 1) -> float:
    """msg/s of ``writers`` concurrent writers of ``n`` messages each on one store."""
    if kind == "memory":
        backend = InMemoryBackend()
        streams = [stream(w, n) for w in range(writers)]
        barrier = threading.Barrier(writers + 1)
        times: list[float] = []

        def work(w: int) -> None:
            barrier.wait()
            times.append(ingest(backend, streams[w], w, batch))

        threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        barrier.wait()
        started = time.perf_counter()
        for t in threads:
            t.join()
        return writers * n / (time.perf_counter() - started)
    if kind == "postgres":
        settle_postgres(target.partition("#")[0])
    ctx = multiprocessing.get_context("spawn")
    gate = ctx.Barrier(writers + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer_process, args=(kind, target, w, n, batch, gate, out)) for w in range(writers)]
    for p in procs:
        p.start()
    gate.wait()
    started = time.perf_counter()
    for _ in procs:
        out.get(timeout=3600)
    wall = time.perf_counter() - started
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a {kind} writer failed with exit code {p.exitcode}")
    return writers * n / wall


# --- bulk prefill -----------------------------------------------------------------------------------------------


def _rows(count: int) -> Any:
    """(ticket index, message index) pairs: a ticket per 2 stored messages."""
    for k in range(count):
        yield k // 2, k


def prefill_sqlite(path: str, count: int) -> None:
    SQLiteBackend(path).close()  # create the schema
    conn = sqlite3.connect(path, isolation_level=None)
    ts = START.isoformat(timespec="microseconds")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO tickets (id, number, subject, requester_email, requester_key, status, created, updated, source,"
        " entry_count) VALUES (?, ?, ?, ?, ?, 'open', ?, ?, 'email', 2)",
        (
            (
                t + 1,
                f"FILL{t:08d}",
                f"Stored {t}",
                f"fill{t % 5000}@stored.example",
                f"fill{t % 5000}@stored.example",
                ts,
                ts,
            )
            for t in range((count + 1) // 2)
        ),
    )
    conn.executemany(
        "INSERT INTO entries (id, ticket_id, kind, author_email, body, created, message_id)"
        " VALUES (?, ?, 'message', ?, ?, ?, ?)",
        (
            (k + 1, t + 1, f"fill{t % 5000}@stored.example", "stored body " * 20, ts, f"fill-{k}@stored.example")
            for t, k in _rows(count)
        ),
    )
    conn.executemany(
        "INSERT INTO message_ids (message_id, ticket_id, direction) VALUES (?, ?, 'inbound')",
        ((f"fill-{k}@stored.example", t + 1) for t, k in _rows(count)),
    )
    conn.executemany(
        "INSERT INTO ledger (key, action, at, ticket, entry_id, message_id) VALUES (?, 'created', ?, ?, ?, ?)",
        ((f"FILL/imap/{k}", ts, f"FILL{t:08d}", k + 1, f"fill-{k}@stored.example") for t, k in _rows(count)),
    )
    conn.executemany(
        "INSERT INTO audit (at, action, message_id, prov_mailbox, prov_kind, prov_key, ticket, entry_id, reasons)"
        " VALUES (?, 'created', ?, 'FILL', 'imap', ?, ?, ?, '[]')",
        ((ts, f"fill-{k}@stored.example", str(k), f"FILL{t:08d}", k + 1) for t, k in _rows(count)),
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def prefill_postgres(url: str, count: int) -> None:
    import psycopg

    open_store("postgres", url).close()  # create the schema
    with psycopg.connect(url) as conn:
        conn.execute("SET search_path TO ticketmail")
        with conn.cursor() as cur:
            with cur.copy(
                "COPY tickets (id, number, subject, requester_email, requester_key, status, created, updated, source,"
                " entry_count) FROM STDIN"
            ) as copy:
                for t in range((count + 1) // 2):
                    who = f"fill{t % 5000}@stored.example"
                    copy.write_row((t + 1, f"FILL{t:08d}", f"Stored {t}", who, who, "open", START, START, "email", 2))
            with cur.copy(
                "COPY entries (id, ticket_id, kind, author_email, body, created, message_id) FROM STDIN"
            ) as copy:
                for t, k in _rows(count):
                    copy.write_row(
                        (
                            k + 1,
                            t + 1,
                            "message",
                            f"fill{t % 5000}@stored.example",
                            "stored body " * 20,
                            START,
                            f"fill-{k}@stored.example",
                        )
                    )
            with cur.copy("COPY message_ids (message_id, ticket_id, direction) FROM STDIN") as copy:
                for t, k in _rows(count):
                    copy.write_row((f"fill-{k}@stored.example", t + 1, "inbound"))
            with cur.copy("COPY ledger (key, action, at, ticket, entry_id, message_id) FROM STDIN") as copy:
                for t, k in _rows(count):
                    copy.write_row(
                        (f"FILL/imap/{k}", "created", START, f"FILL{t:08d}", k + 1, f"fill-{k}@stored.example")
                    )
            with cur.copy(
                "COPY audit (at, action, message_id, prov_mailbox, prov_kind, prov_key, ticket, entry_id, reasons)"
                " FROM STDIN"
            ) as copy:
                for t, k in _rows(count):
                    copy.write_row(
                        (
                            START,
                            "created",
                            f"fill-{k}@stored.example",
                            "FILL",
                            "imap",
                            str(k),
                            f"FILL{t:08d}",
                            k + 1,
                            "[]",
                        )
                    )
            # Identity columns continue after the loaded ids.
            for table in ("tickets", "entries", "audit"):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    settle_postgres(url)  # write the loaded pages out now, not during the timed probe (SQLite's close does too)


def per_message_ms(kind: str, target: str, stored: int, probe: int) -> float:
    """Milliseconds per message with `stored` messages already in the store.

    The median of five timed slices of the probe, so that one slice slowed by another process on a shared
    machine does not decide the figure.
    """
    if kind == "sqlite":
        prefill_sqlite(target.partition("#")[0], stored)
    else:
        prefill_postgres(target.partition("#")[0], stored)
    backend = open_store(kind, target)
    try:
        messages = stream(90, probe)
        warm = probe // 10
        ingest(backend, messages[:warm], 90, 1)  # warm caches and prepared statements
        size = max(1, (probe - warm) // 5)
        slices = []
        for first in range(warm, probe - size + 1, size):
            slices.append(ingest(backend, messages[first : first + size], 90, 1, offset=first) / size)
    finally:
        backend.close()
    return 1000 * statistics.median(slices)


# --- main -------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 messages per writer; 10k vs 50k stored")
    parser.add_argument("-n", type=int, default=None, help="messages per writer (default 2,000)")
    parser.add_argument("--small", type=int, default=10_000, help="messages stored for the small size")
    parser.add_argument("--large", type=int, default=None, help="messages stored for the large size (200,000)")
    parser.add_argument("--probe", type=int, default=None, help="messages timed at each size (default 2,000)")
    parser.add_argument("--batch", type=int, default=50, help="messages per unit in the batched run")
    parser.add_argument("--pg-url", default=None, help="an existing PostgreSQL server (a database is created on it)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    n = args.n or (500 if args.quick else 2_000)
    large = args.large or (50_000 if args.quick else 200_000)
    probe = args.probe or (500 if args.quick else 2_000)

    server = None
    if args.pg_url:
        import psycopg

        base = args.pg_url
    else:
        from ticketmail.testing.postgres import PostgresServer

        server = PostgresServer(fsync=True)
        base = server.url()
    import psycopg
    from psycopg import sql

    def new_database() -> str:
        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return base.rsplit("/", 1)[0] + "/" + name

    tmp = tempfile.mkdtemp(prefix="bench-backends-")

    def sqlite_file() -> str:
        return os.path.join(tmp, f"{uuid.uuid4().hex}.sqlite3")

    results: dict[str, Any] = {"messages_per_writer": n}
    print(f"{n} messages per writer; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    with psycopg.connect(base, autocommit=True) as conn:  # what one network round trip costs on this host now
        for _ in range(100):
            conn.execute("SELECT 1").fetchone()
        started = time.perf_counter()
        for _ in range(1000):
            conn.execute("SELECT 1").fetchone()
        rtt_us = (time.perf_counter() - started) * 1000
    results["postgres_round_trip_us"] = round(rtt_us, 1)
    print(f"PostgreSQL round trip (SELECT 1): {rtt_us:.0f} us; load average {os.getloadavg()[0]:.1f}")
    try:
        rows = []
        for label, kind, target_of in (
            ("memory", "memory", lambda: ""),
            ("SQLite (WAL, synchronous=NORMAL)", "sqlite", lambda: sqlite_file()),
            (
                "SQLite (WAL, synchronous=FULL)",
                "sqlite_full",
                lambda: os.path.join(tmp, f"{uuid.uuid4().hex}.db") + "#FULL",
            ),
            ("PostgreSQL (synchronous_commit=off)", "postgres_off", lambda: new_database() + "#off"),
            ("PostgreSQL (synchronous_commit=on)", "postgres", lambda: new_database()),
        ):
            row = [label]
            store = kind.partition("_")[0]
            for writers in (1, 2, 4):
                rate = run_writers(store, target_of(), writers, n)
                row.append(rate)
                results[f"{kind}_{writers}w"] = round(rate, 1)
            rate = run_writers(store, target_of(), 1, n, batch=args.batch)
            results[f"{kind}_1w_batch"] = round(rate, 1)
            row.append(rate)
            rows.append(row)
            print(f"  {label}: " + ", ".join(f"{r:.0f}" for r in row[1:]), flush=True)
        print()
        print(f"{'ingest msg/s':<38}{'1 writer':>10}{'2 writers':>11}{'4 writers':>11}{f'1w, batch {args.batch}':>16}")
        for row in rows:
            print(f"{row[0]:<38}" + "".join(f"{v:>{w}.0f}" for v, w in zip(row[1:], (10, 11, 11, 16), strict=True)))
        for pg, lite, what in (
            ("postgres_off", "sqlite", "no flush per commit (PostgreSQL off vs SQLite NORMAL)"),
            ("postgres", "sqlite_full", "every commit flushed (PostgreSQL on vs SQLite FULL)"),
        ):
            ratio = results[f"{lite}_1w"] / results[f"{pg}_1w"]
            batched = results[f"{lite}_1w_batch"] / results[f"{pg}_1w_batch"]
            results[f"ratio_{pg}_1w"] = round(ratio, 2)
            print(f"PostgreSQL/SQLite time per message, {what}: {ratio:.2f}x (target <= 1.5x); batched {batched:.2f}x")
        print()
        print(f"{'per-message cost (ms)':<38}{f'{args.small:,} stored':>14}{f'{large:,} stored':>16}{'ratio':>8}")
        for label, kind, target_of in (
            ("SQLite", "sqlite", lambda: os.path.join(tmp, f"{uuid.uuid4().hex}.sqlite3")),
            ("PostgreSQL (synchronous_commit=off)", "postgres", lambda: new_database() + "#off"),
        ):
            small_ms = per_message_ms(kind, target_of(), args.small, probe)
            large_ms = per_message_ms(kind, target_of(), large, probe)
            ratio = large_ms / small_ms
            results[f"{kind}_ms_small"] = round(small_ms, 3)
            results[f"{kind}_ms_large"] = round(large_ms, 3)
            results[f"{kind}_size_ratio"] = round(ratio, 2)
            print(f"{label:<38}{small_ms:>14.3f}{large_ms:>16.3f}{ratio:>8.2f}", flush=True)
        print("target: ratio < 1.3 for both")
        if args.json:
            print(json.dumps(results))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
