"""The built-in server's limits, over real loopback sockets: one request deadline, a connection cap."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ticketmail.api.handler import Request, Response
from ticketmail.api.server import ApiServer, make_api_server
from ticketmail.errors import ConfigError

pytestmark = pytest.mark.integration


class _Blocking:
    """A handler that holds its thread until released (stands for slow work), reading the body first."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.bodies: list[bytes] = []

    def __call__(self, request: Request) -> Response:
        body = request.body if isinstance(request.body, bytes) else request.body.read(1 << 20)
        self.bodies.append(body)
        self.entered.release()
        self.release.wait(10)
        return Response(200, [("Content-Type", "text/plain")], b"done")


def _serve(handler: Any, **kw: Any) -> Iterator[ApiServer]:
    server = make_api_server(handler, "127.0.0.1", 0, **kw)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _connect(server: ApiServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_slow_client_is_cut_off_at_the_request_deadline() -> None:
    """A client dripping one header byte at a time is closed at the deadline, not kept alive by each byte."""
    handler = _Blocking()
    handler.release.set()
    for server in _serve(handler, request_timeout=1.0):
        sock = _connect(server)
        started = time.monotonic()
        sent = 0
        closed = False
        payload = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        for byte in payload:  # one byte every 50 ms: 10 s in all, each gap far below any per-recv timeout
            try:
                sock.send(bytes([byte]))
            except OSError:
                closed = True
                break
            sent += 1
            time.sleep(0.05)
            if time.monotonic() - started > 1.5:
                sock.settimeout(2)
                try:
                    closed = sock.recv(1) == b""
                except ConnectionResetError:
                    closed = True
                break
        sock.close()
        assert closed, "the server kept a dripping client past its request deadline"
        assert sent < len(payload)
        assert handler.bodies == []  # the app never saw the half request


def test_a_slow_body_is_refused_at_the_deadline(handler: Any, full_key: str) -> None:
    """Headers in time, but the body never completes: the real API handler answers 400 at the deadline."""
    for server in _serve(handler, request_timeout=1.0):
        sock = _connect(server)
        started = time.monotonic()
        sock.sendall(
            b"POST /api/tickets.json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-API-Key: " + full_key.encode() + b'\r\nContent-Length: 100\r\n\r\n{"a"'
        )
        sock.settimeout(10)
        data = _read_all(sock)
        sock.close()
        assert data.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), data[:200]
        assert time.monotonic() - started < 8  # the deadline, not the 30 s idle timeout


def test_connections_beyond_the_cap_get_503_at_once() -> None:
    handler = _Blocking()
    for server in _serve(handler, max_connections=2, request_timeout=10.0):
        busy = []
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
            conn.request("POST", "/x", body=b"hi", headers={"Content-Type": "text/plain"})
            busy.append(conn)
        for _ in range(2):
            assert handler.entered.acquire(timeout=5)
        assert server.active_connections == 2
        started = time.monotonic()
        extra = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        extra.request("GET", "/api/health")
        response = extra.getresponse()
        body = response.read()
        extra.close()
        assert time.monotonic() - started < 5  # answered at once, not queued behind the busy ones
        assert response.status == 503
        assert response.getheader("Retry-After") == "1"
        assert json.loads(body)["error"]["code"] == "server_busy"
        assert server.rejected == 1
        handler.release.set()
        for conn in busy:
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == b"done"
            conn.close()
        deadline = time.monotonic() + 5
        while server.active_connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.active_connections == 0  # slots are given back
        again = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        again.request("GET", "/api/health")
        assert again.getresponse().status == 200
        again.close()


@pytest.mark.parametrize("kwargs", [{"max_connections": 0}, {"request_timeout": 0}, {"request_timeout": -1.0}])
def test_bad_limits_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make_api_server(_Blocking(), "127.0.0.1", 0, **kwargs)


_EMFILE_CHILD = r"""
import resource, sys, threading
from ticketmail.api.handler import Response
from ticketmail.api.server import make_api_server

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (48, hard))
gate = threading.Event()
server = make_api_server(lambda request: (gate.wait(30), Response(200))[1], "127.0.0.1", 0, max_connections=500)
print(server.server_port, flush=True)
server.serve_forever(poll_interval=0.05)
"""


def test_out_of_file_descriptors_does_not_spin() -> None:
    """With the process out of descriptors, accepting pauses instead of spinning at 100% CPU."""
    import os
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", _EMFILE_CHILD], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    clients: list[socket.socket] = []
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        for _ in range(80):  # more than the child's 48 descriptors: its accept() fails with EMFILE
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /x HTTP/1.1\r\n")  # hold the handler thread (no end of headers)
            clients.append(sock)
        time.sleep(1.0)  # let it reach the limit

        def cpu() -> float:
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before, started = cpu(), time.monotonic()
        time.sleep(2.0)
        used = (cpu() - before) / (time.monotonic() - started)
        assert child.poll() is None  # still serving
        assert used < 0.15, f"the accept loop used {used:.0%} of a CPU while out of descriptors"
    finally:
        for sock in clients:
            sock.close()
        child.kill()
        child.wait(10)
