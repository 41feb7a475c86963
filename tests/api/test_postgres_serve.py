"""``ticketmail serve`` as two processes on one PostgreSQL database keeps the API's idempotency guarantees."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ticketmail.testing.postgres import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ticketmail", *args], capture_output=True, check=True, timeout=60, text=True
    )
    return done.stdout


@pytest.fixture
def two_servers() -> Iterator[tuple[str, str, list[int]]]:
    server = PostgresServer.shared()
    url = server.create_database()
    secret = _cli("apikey", "add", "--db", url, "--ip", "127.0.0.1").strip().splitlines()[-1]
    procs: list[subprocess.Popen[str]] = []
    ports: list[int] = []
    try:
        for _ in range(2):
            port = _port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "ticketmail", "serve", "--db", url, "--port", str(port), "--log-level", "error"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "serving the ticket API" in line, line
            ports.append(port)
        yield url, secret, ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)
        server.drop_database(url)


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def _race(ports: list[int], path: str, body: bytes, headers: dict[str, str], n: int = 12) -> list[Any]:
    results: list[Any] = []
    barrier = threading.Barrier(n)

    def client(i: int) -> None:
        barrier.wait()
        results.append(_post(ports[i % 2], path, body, headers))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _tickets(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM ticketmail.tickets").fetchone()
    assert row is not None
    return int(row[0])


def test_same_idempotency_key_raced_over_two_server_processes(two_servers: tuple[str, str, list[int]]) -> None:
    url, secret, ports = two_servers
    body = json.dumps(
        {"name": "Ada", "email": "ada@example.org", "subject": "Printer on fire", "message": "data:text/plain,help"}
    ).encode()
    headers = {"X-API-Key": secret, "Content-Type": "application/json", "Idempotency-Key": "crm-case-4711"}
    results = _race(ports, "/api/tickets.json", body, headers)
    assert len(results) == 12
    assert {status for status, _, _ in results} == {201}
    assert len({data for _, _, data in results}) == 1  # every client told the same ticket number
    actions = sorted(h["X-Ticketmail-Action"] for _, h, _ in results)
    assert actions.count("created") == 1
    assert _tickets(url) == 1
    time.sleep(0.1)
    again = _post(ports[1], "/api/tickets.json", body, headers)
    assert again[0] == 201
    assert again[1]["X-Ticketmail-Action"] == "duplicate"


def test_same_email_raced_over_two_server_processes(two_servers: tuple[str, str, list[int]]) -> None:
    url, secret, ports = two_servers
    raw = (
        b"From: Bob <bob@example.net>\r\nTo: support@desk.example\r\nSubject: Raced\r\n"
        b"Message-ID: <raced-1@example.net>\r\nDate: Mon, 02 Mar 2026 09:00:00 +0000\r\n\r\nHello\r\n"
    )
    results = _race(ports, "/api/tickets.email", raw, {"X-API-Key": secret})
    assert {status for status, _, _ in results} == {201}
    assert len({data for _, _, data in results}) == 1
    assert _tickets(url) == 1
