"""Load run of the HTTP ticket API: `ticketmail serve` + SQLite on loopback, several client threads.

Reports requests/s and latency percentiles for ticket creation (POST /api/tickets.json, real parsing,
pipeline and SQLite commit), against a baseline measured in the same run on the same server: requests
refused at authentication (401: HTTP, routing and the key check, no parsing, no storage). Then checks
that no request was lost or duplicated: every 201 has a distinct ticket number, the database holds exactly
that many tickets, and replayed requests (same Idempotency-Key, or the same raw email bytes) returned the
original number. A third workload posts N distinct raw emails to /api/tickets.email.

    .venv/bin/python benchmarks/bench_api_load.py            # 10,000 requests, 8 threads
    .venv/bin/python benchmarks/bench_api_load.py --quick    # 600 requests
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payload(i: int) -> bytes:
    return json.dumps(
        {
            "name": f"Load Tester {i}",
            "email": f"load{i}@example.com",
            "subject": f"Load test ticket {i}",
            "message": f"Request number {i} of the load run.",
            "ip": "127.0.0.1",
        }
    ).encode()


def email(i: int) -> bytes:
    return (
        f"From: Load Tester {i} <mail{i}@example.com>\r\nTo: help@example.net\r\nSubject: Load mail {i}\r\n"
        f"Message-ID: <load-{i}@bench.example>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\nMail number {i} of the load run.\r\n"
    ).encode()


def run(
    port: int, jobs: list[tuple[str, bytes, dict[str, str]]], threads: int
) -> tuple[list[float], list[tuple[int, bytes]], float]:
    latencies: list[float] = [0.0] * len(jobs)
    results: list[tuple[int, bytes]] = [(0, b"")] * len(jobs)
    next_job = iter(range(len(jobs)))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(next_job, None)
            if i is None:
                return
            path, body, headers = jobs[i]
            for attempt in range(5):
                start = time.perf_counter()
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    conn.request("POST", path, body, headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    conn.close()
                except OSError:
                    if attempt == 4:
                        raise
                    time.sleep(0.05 * (attempt + 1))  # connection refused under a full backlog: retry (idempotent)
                    continue
                latencies[i] = time.perf_counter() - start
                results[i] = (resp.status, data)
                break

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies, results, time.perf_counter() - start


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (600 requests)")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    n = 600 if args.quick else args.requests
    replays = max(1, n // 20)
    tmp = Path(tempfile.mkdtemp(prefix="tm-bench-api-"))
    db = tmp / "tickets.sqlite3"
    tm = [sys.executable, "-m", "ticketmail"]
    out = subprocess.run(
        [*tm, "apikey", "add", "--db", str(db), "--ip", "127.0.0.1"], capture_output=True, text=True, check=True
    )
    key = out.stdout.splitlines()[-1]
    port = free_port()
    server = subprocess.Popen(
        [*tm, "serve", "--db", str(db), "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "serving ..." once the socket is bound

        base_jobs = [
            ("/api/tickets.json", payload(i), {"X-API-Key": "tm_invalid", "Content-Type": "application/json"})
            for i in range(n)
        ]
        b_lat, b_res, b_wall = run(port, base_jobs, args.threads)
        assert all(status == 401 for status, _ in b_res), "baseline requests must all be 401"

        jobs = [
            (
                "/api/tickets.json",
                payload(i),
                {"X-API-Key": key, "Content-Type": "application/json", "Idempotency-Key": f"load-{i}"},
            )
            for i in range(n)
        ]
        lat, res, wall = run(port, jobs, args.threads)
        replay_jobs = jobs[:replays]
        _, replay_res, _ = run(port, replay_jobs, args.threads)
        mail_jobs = [
            ("/api/tickets.email", email(i), {"X-API-Key": key, "Content-Type": "message/rfc822"}) for i in range(n)
        ]
        m_lat, m_res, m_wall = run(port, mail_jobs, args.threads)
        mail_replays = run(port, mail_jobs[:replays], args.threads)[1]
    finally:
        server.terminate()
        server.wait(timeout=30)

    json_statuses = Counter(status for status, _ in res)
    mail_statuses = Counter(status for status, _ in m_res)
    numbers = [body.decode() for status, body in [*res, *m_res] if status == 201]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from ticketmail.backends.sqlite import SQLiteBackend

    backend = SQLiteBackend(db)
    stored = len(backend.list_tickets())
    backend.close()
    replay_ok = all(r == (201, res[i][1]) for i, r in enumerate(replay_res))
    replay_ok = replay_ok and all(r == (201, m_res[i][1]) for i, r in enumerate(mail_replays))

    b_rps, rps, m_rps = n / b_wall, n / wall, n / m_wall
    print(f"bench_api_load: {n} requests per workload, {args.threads} client threads, serve + SQLite on loopback")
    print(f"{'':24}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'req/s ratio':>13}")
    for label, r, lats in (
        ("baseline: 401", b_rps, b_lat),
        ("tickets.json: 201", rps, lat),
        ("tickets.email: 201", m_rps, m_lat),
    ):
        print(f"{label:24}{r:10.0f}{pct(lats, 50):10.2f}{pct(lats, 99):10.2f}{max(lats) * 1000:10.2f}{r / b_rps:13.2f}")
    print(f"statuses json: {dict(json_statuses)}, email: {dict(mail_statuses)}")
    print(f"distinct ticket numbers: {len(set(numbers))}; tickets stored: {stored} (expected {2 * n})")
    print(f"replays ({replays} per workload): {'original numbers, 201' if replay_ok else 'MISMATCH'}")
    ok = json_statuses == {201: n} and mail_statuses == {201: n}
    ok = ok and len(set(numbers)) == 2 * n and stored == 2 * n and replay_ok
    print("no request lost or duplicated" if ok else "FAILED: requests lost or duplicated")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
