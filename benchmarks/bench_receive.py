"""Delivery from the mail server: ``ticketmail receive`` over LMTP against ``ticketmail pipe`` per message.

Both store into a SQLite file through the whole pipeline and answer only after the commit. The client plays
the mail server:

* **pipe**: one ``ticketmail pipe --config FILE --mailbox support`` process per message, the message on its
  standard input, as Postfix's ``pipe(8)`` or an alias runs it (the baseline, measured in the same run);
* **LMTP, 1 connection**: one ``ticketmail receive`` process on a Unix socket; one client connection
  sends the messages one after the other (``MAIL``, ``RCPT``, ``DATA``, wait for the per-recipient reply);
* **LMTP, 8 connections**: the same with eight client connections in parallel (Postfix's LMTP client
  opens several: ``default_destination_concurrency_limit`` is 20).

Reported: messages/s, the ratio to the pipe's throughput, and p50/p95 delivery-to-commit latency (from
``MAIL FROM`` sent to the ``250`` received, which the receiver writes only after its unit of work
committed; for the pipe, from the process start to its exit). Messages are about 3 KB, each a new
conversation with its own Message-ID.

Targets: LMTP at least ten times the pipe's throughput, p95 under 50 ms at one connection.

    .venv/bin/python benchmarks/bench_receive.py            # 2,000 LMTP messages per run, 40 pipe runs
    .venv/bin/python benchmarks/bench_receive.py --quick    # 400 and 15
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ticketmail.backends.sqlite import SQLiteBackend

BODY = "The printer on the third floor prints every page twice and then jams; could you have a look?\r\n" * 30


def message(i: int) -> bytes:
    return (
        f"From: User {i} <user{i}@client.test>\r\nTo: support@desk.test\r\nSubject: Printer problem {i}\r\n"
        f"Message-ID: <bench{i}.{os.getpid()}@client.test>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{BODY}"
    ).encode()


def write_config(directory: Path, db: str) -> Path:
    config = directory / "ticketmail.toml"
    config.write_text(
        f'[storage]\nsqlite = "{db}"\n\n[[mailboxes]]\nname = "support"\nprotocol = "lmtp"\n'
        f'address = "support@desk.test"\n\n[receive]\nlmtp = "unix:{directory}/lmtp.sock"\n'
    )
    return config


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_pipe(config: Path, count: int, offset: int) -> tuple[float, list[float]]:
    exe = [sys.executable, "-m", "ticketmail", "pipe", "--config", str(config), "--mailbox", "support"]
    latencies = []
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        result = subprocess.run(exe, input=message(offset + i), capture_output=True, check=False)
        latencies.append(time.perf_counter() - t0)
        if result.returncode != 0:
            raise SystemExit(f"pipe failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return time.perf_counter() - start, latencies


def lmtp_one(client: smtplib.LMTP, raw: bytes) -> float:
    t0 = time.perf_counter()
    client.mail("user@client.test")
    client.rcpt("support@desk.test")
    client.putcmd("data")
    code, _ = client.getreply()
    if code != 354:
        raise SystemExit(f"DATA refused: {code}")
    client.send(smtplib._quote_periods(raw) + b".\r\n")  # type: ignore[attr-defined]
    code, text = client.getreply()
    if code != 250:
        raise SystemExit(f"delivery failed: {code} {text!r}")
    return time.perf_counter() - t0


def run_lmtp(sock: str, count: int, connections: int, offset: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    per = count // connections

    def worker(k: int) -> None:
        mine = []
        with smtplib.LMTP(sock, timeout=30) as client:
            client.ehlo("client.test")
            for i in range(per):
                mine.append(lmtp_one(client, message(offset + k * per + i)))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies


def wait_socket(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
                return
        except OSError:
            time.sleep(0.02)
    raise SystemExit("the receiver did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages")
    parser.add_argument("--messages", type=int, default=None, help="LMTP messages per run")
    parser.add_argument("--pipe-messages", type=int, default=None, help="pipe runs (one process each)")
    args = parser.parse_args()
    n_lmtp = args.messages or (400 if args.quick else 2000)
    n_pipe = args.pipe_messages or (15 if args.quick else 40)
    directory = Path(tempfile.mkdtemp(prefix="bench-receive-"))
    try:
        db = str(directory / "tickets.sqlite3")
        config = write_config(directory, db)
        SQLiteBackend(db).close()  # schema created outside the timed runs
        rows = []
        pipe_time, pipe_lat = run_pipe(config, n_pipe, 0)
        pipe_rate = n_pipe / pipe_time
        rows.append(("pipe, one process per message", n_pipe, pipe_rate, pipe_lat))
        sock = str(directory / "lmtp.sock")
        proc = subprocess.Popen(
            [sys.executable, "-m", "ticketmail", "receive", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_socket(sock)
            run_lmtp(sock, 50, 1, 10_000_000)  # warm-up (connection, caches), not reported
            offset = 1_000_000
            for connections in (1, 8):
                elapsed, lat = run_lmtp(sock, n_lmtp, connections, offset)
                offset += n_lmtp
                rows.append(
                    (
                        f"LMTP, {connections} connection{'s' if connections > 1 else ''}",
                        len(lat),
                        len(lat) / elapsed,
                        lat,
                    )
                )
        finally:
            proc.terminate()
            proc.wait(30)
        backend = SQLiteBackend(db)
        stored = len(backend.list_tickets())
        backend.close()
        expected = n_pipe + 50 + sum(r[1] for r in rows[1:])
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {stored} tickets stored (expected {expected})")
        print(f"{'run':34} {'messages':>8} {'msg/s':>9} {'x pipe':>7} {'p50 ms':>8} {'p95 ms':>8}")
        for name, n, rate, lat in rows:
            print(
                f"{name:34} {n:8d} {rate:9.1f} {rate / pipe_rate:7.1f} "
                f"{statistics.median(lat) * 1000:8.2f} {percentile(lat, 0.95) * 1000:8.2f}"
            )
        one = rows[1]
        ratio_ok = "met" if one[2] >= 10 * pipe_rate else "NOT met"
        p95_ok = "met" if percentile(one[3], 0.95) < 0.05 else "NOT met"
        print(
            f"target: LMTP >= 10x pipe: {ratio_ok} ({one[2] / pipe_rate:.0f}x); p95 < 50 ms at 1 connection: {p95_ok}"
        )
        if stored != expected:
            raise SystemExit("ticket count mismatch")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
