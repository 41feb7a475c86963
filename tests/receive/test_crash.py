"""SIGKILL the ``ticketmail receive`` process in the middle of a stream of 200 LMTP deliveries.

The client behaves like a mail server: a message whose reply it did not get (the connection died) is sent
again after the receiver is back. At the end every message must be exactly one ticket: nothing lost (a
reply is only sent after the commit) and nothing duplicated (a retried committed message is found in the
ledger).
"""

from __future__ import annotations

import os
import random
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ticketmail.backends.sqlite import SQLiteBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MESSAGES = 200
KILLS = 4


def _config(directory: Path) -> Path:
    path = directory / "ticketmail.toml"
    path.write_text(
        f"""
[storage]
sqlite = "tickets.sqlite3"

[[mailboxes]]
name = "support"
protocol = "lmtp"
address = "support@desk.test"

[receive]
lmtp = "unix:{directory}/lmtp.sock"
"""
    )
    return path


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "ticketmail", "receive", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _ready(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("the receiver did not come up")


def test_sigkill_mid_stream_loses_and_duplicates_nothing(sockdir, lmtp_send, make_message):
    config = _config(sockdir)
    sock = str(sockdir / "lmtp.sock")
    log = sockdir / "receiver.log"
    rng = random.Random(1812)
    messages = [make_message(i, subject=f"crash stream {i:03d}") for i in range(MESSAGES)]
    kill_at = sorted(rng.sample(range(10, MESSAGES - 10), KILLS))
    state = {"proc": _start(config, log), "kills": 0, "done": False}
    lock = threading.Lock()
    _ready(sock)

    def kill_soon(delay: float) -> None:
        # A few milliseconds after the client began to send: mid-data, mid-commit or just before the reply.
        time.sleep(delay)
        with lock:
            if state["done"]:
                return
            proc = state["proc"]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            state["kills"] += 1
            state["proc"] = _start(config, log)

    retries = 0
    redelivered = 0
    index = 0
    client: smtplib.LMTP | None = None
    deadline = time.monotonic() + 90
    try:
        while index < MESSAGES:
            assert time.monotonic() < deadline, f"stuck at message {index}"
            if kill_at and index == kill_at[0]:
                kill_at.pop(0)
                threading.Thread(target=kill_soon, args=(rng.uniform(0.0, 0.006),), daemon=True).start()
            try:
                if client is None:
                    client = smtplib.LMTP(sock, timeout=10)
                    client.ehlo("client.test")
                ((code, text),) = lmtp_send(client, "alice@client.test", ["support@desk.test"], messages[index])
            except (OSError, smtplib.SMTPException):
                client = None  # the receiver died: reconnect and send the same message again
                retries += 1
                time.sleep(0.02)
                continue
            if code == 250:
                redelivered += b"already delivered" in text
                index += 1
            else:
                assert 400 <= code < 500, (code, text)
                retries += 1
        if client is not None:
            client.quit()
    finally:
        with lock:
            state["done"] = True
            state["proc"].send_signal(signal.SIGTERM)
        try:
            state["proc"].wait(15)
        except subprocess.TimeoutExpired:
            state["proc"].kill()
            state["proc"].wait()
    assert state["kills"] == KILLS
    backend = SQLiteBackend(sockdir / "tickets.sqlite3")
    try:
        tickets = backend.list_tickets()
        subjects = sorted(t.subject for t in tickets)
        assert subjects == [f"crash stream {i:03d}" for i in range(MESSAGES)], (
            f"{len(tickets)} tickets for {MESSAGES} messages ({retries} retries, {redelivered} redeliveries)"
        )
        assert all(t.entry_count == 1 for t in tickets)
        assert not os.path.exists(sock)  # SIGTERM: a clean stop removes the socket
    finally:
        backend.close()
