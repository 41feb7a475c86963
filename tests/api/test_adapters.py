"""The WSGI and ASGI adapters and the server, around a handler with a fake pipeline (mechanics only;
test_live_http.py runs the real stack)."""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
import shutil
import socket
import subprocess

import pytest

from ticketmail.api.asgi import make_asgi_app
from ticketmail.api.handler import ApiHandler, Request, Response
from ticketmail.api.wsgi import make_wsgi_app, request_from_environ

# -- WSGI, called directly -----------------------------------------------------------------------------


def call_wsgi(app, environ):
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, headers

    body = b"".join(app(environ, start_response))
    return captured["status"], dict(captured["headers"]), body


def environ(method="POST", path="/api/tickets.json", body=b"", **extra):
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "/helpdesk",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
    }
    env.update(extra)
    return env


def test_wsgi_creates_ticket(handler, full_key, kit):
    app = make_wsgi_app(handler)
    env = environ(body=kit.OSTICKET_JSON_VALID, HTTP_X_API_KEY=full_key, CONTENT_TYPE="application/json")
    status, headers, body = call_wsgi(app, env)
    assert status == "201 Created"
    assert headers["Content-Length"] == str(len(body))
    assert body == b"100001"


def test_wsgi_never_reads_past_content_length(handler, full_key, kit):
    stream = io.BytesIO(kit.RAW_EMAIL + b"NEXT REQUEST BYTES")
    env = environ(path="/api/tickets.email", HTTP_X_API_KEY=full_key)
    env["wsgi.input"], env["CONTENT_LENGTH"] = stream, str(len(kit.RAW_EMAIL))
    status, _, _ = call_wsgi(make_wsgi_app(handler), env)
    assert status.startswith("201")
    assert stream.read() == b"NEXT REQUEST BYTES"


def test_wsgi_without_content_length_reads_nothing_unless_terminated(handler, full_key, kit):
    env = environ(path="/api/tickets.email", body=kit.RAW_EMAIL, HTTP_X_API_KEY=full_key)
    del env["CONTENT_LENGTH"]
    status, _, body = call_wsgi(make_wsgi_app(handler), env)
    assert status.startswith("400")
    assert b"empty" in body
    env = environ(path="/api/tickets.email", body=kit.RAW_EMAIL, HTTP_X_API_KEY=full_key)
    del env["CONTENT_LENGTH"]
    env["wsgi.input_terminated"] = True
    assert call_wsgi(make_wsgi_app(handler), env)[0].startswith("201")


@pytest.mark.parametrize("length", ["9" * 5000, "\u0665", "-3"])
def test_wsgi_odd_content_length_is_a_400(handler, full_key, length):
    env = environ(path="/api/tickets.email", body=b"From: a@b.c\r\n\r\nhi", HTTP_X_API_KEY=full_key)
    env["CONTENT_LENGTH"] = length
    status, _, body = call_wsgi(make_wsgi_app(handler), env)
    assert status.startswith("400")
    assert b"Content-Length" in body


def test_wsgi_latin1_path_is_decoded():
    env = environ(path="/api/caf\xc3\xa9")
    assert request_from_environ(env).path == "/api/café"


def test_wsgi_head_has_no_body(handler):
    status, _headers, body = call_wsgi(make_wsgi_app(handler), environ(method="HEAD"))
    assert status.startswith("405")
    assert body == b""


# -- through the threaded server -----------------------------------------------------------------------


@pytest.fixture
def server(handler, kit):
    s = kit.LiveServer(handler)
    yield s
    s.stop()


def test_server_logs_one_line_per_request_without_the_key(server, full_key, kit, caplog):
    with caplog.at_level(logging.INFO, logger="ticketmail.api.access"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/api/tickets.json?key=" + full_key, kit.OSTICKET_JSON_VALID, {"X-API-Key": full_key})
        assert conn.getresponse().status == 201
        conn.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "ticketmail.api.access"]
    assert len(lines) == 1
    method, path, status, duration, remote = lines[0].split(" ")
    assert (method, path, status, remote) == ("POST", "/api/tickets.json", "201", "127.0.0.1")
    assert duration.endswith("ms")
    assert full_key not in caplog.text


def test_server_early_413_reaches_http_client(pipeline, keys, full_key, kit):
    s = kit.LiveServer(ApiHandler(pipeline, keys, max_body=100, parse=kit.fake_parse))
    try:
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
            conn.request("POST", "/api/tickets.email", b"x" * 3_000_000, {"X-API-Key": full_key})
            resp = conn.getresponse()
            assert resp.status == 413
            assert b"100 bytes" in resp.read()
            conn.close()
    finally:
        s.stop()


def test_server_with_curl(server, full_key, kit, tmp_path):
    curl = shutil.which("curl")
    assert curl, "curl must be installed"
    big = tmp_path / "big"
    big.write_bytes(b"x" * 300_000)
    out = subprocess.run(
        [
            curl,
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            f"X-API-Key: {full_key}",
            "--data-binary",
            f"@{big}",
            f"{server.url}/api/tickets.email",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert out.stdout == b"413"


def test_server_survives_garbage(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\x00\xff GARBAGE \r\n\r\n")
        sock.recv(1024)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/api/tickets.json")
    assert conn.getresponse().status == 405


# -- ASGI, with a hand-written client ------------------------------------------------------------------


def asgi_call(app, method, path, body=b"", headers=(), chunks=None, root_path="", client=("127.0.0.1", 5555)):
    """Drive one HTTP request through an ASGI app; return (status, headers, body, bodies_received)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "root_path": root_path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    parts = list(chunks) if chunks is not None else [body]
    events = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    received = []
    sent = []

    async def receive():
        if events:
            received.append(1)
            return events.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, body_msg = sent
    assert start["type"] == "http.response.start"
    assert body_msg["more_body"] is False
    hdrs = {k.decode(): v.decode() for k, v in start["headers"]}
    assert hdrs["content-length"] == str(len(body_msg["body"]))
    return start["status"], hdrs, body_msg["body"], len(received)


def test_asgi_creates_ticket_from_chunks(handler, full_key, kit):
    app = make_asgi_app(handler)
    data = kit.OSTICKET_JSON_VALID
    chunks = [data[:10], data[10:100], data[100:]]
    status, _headers, body, _ = asgi_call(
        app,
        "POST",
        "/api/tickets.json",
        chunks=chunks,
        headers=[("X-API-Key", full_key), ("Content-Type", "application/json")],
    )
    assert (status, body) == (201, b"100001")


def test_asgi_root_path_mount(handler, full_key, kit):
    app = make_asgi_app(handler)
    status, *_ = asgi_call(
        app, "POST", "/api/tickets.email", kit.RAW_EMAIL, [("X-API-Key", full_key)], root_path="/helpdesk"
    )
    assert status == 201


def test_asgi_declared_too_large_is_refused_before_reading(handler, full_key):
    app = make_asgi_app(handler)
    status, _headers, _body, received = asgi_call(
        app,
        "POST",
        "/api/tickets.email",
        b"x",
        [("X-API-Key", full_key), ("Content-Length", str(10**9))],
    )
    assert status == 413
    assert received == 0


def test_asgi_undeclared_too_large_stops_reading(handler, full_key):
    app = make_asgi_app(handler)
    chunks = [b"x" * 32 * 1024] * 100
    status, _, _, received = asgi_call(
        app, "POST", "/api/tickets.email", chunks=chunks, headers=[("X-API-Key", full_key)]
    )
    assert status == 413
    assert received <= 3


def test_asgi_too_large_but_unauthenticated_is_401(handler):
    status, *_ = asgi_call(make_asgi_app(handler), "POST", "/api/tickets.email", b"", [("Content-Length", "999999999")])
    assert status == 401


def test_asgi_errors_and_json(handler, full_key):
    app = make_asgi_app(handler)
    assert asgi_call(app, "GET", "/api/tickets.json")[0] == 405
    assert asgi_call(app, "POST", "/elsewhere")[0] == 404
    status, headers, _body, _ = asgi_call(
        app, "POST", "/api/tickets.json", b"[", [("X-API-Key", full_key), ("Accept", "application/json")]
    )
    assert status == 400
    assert headers["content-type"] == "application/json"


def test_asgi_disconnect_mid_body_sends_nothing(handler, full_key):
    app = make_asgi_app(handler)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/tickets.email",
        "headers": [(b"x-api-key", full_key.encode())],
        "client": ("127.0.0.1", 1),
    }
    events = [{"type": "http.request", "body": b"From: a@b.c\r\n", "more_body": True}, {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return events.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent == []


def test_asgi_unauthenticated_body_is_never_received(handler):
    status, _, _, received = asgi_call(make_asgi_app(handler), "POST", "/api/tickets.email", b"x" * 1000)
    assert status == 401
    assert received == 0


def test_asgi_lifespan():
    app = make_asgi_app(lambda request: Response(200))
    queue = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = []

    async def receive():
        return queue.pop(0)

    async def send(message):
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_asgi_websocket_refused():
    app = make_asgi_app(lambda request: Response(200))
    with pytest.raises(ValueError, match="websocket"):
        asyncio.run(app({"type": "websocket"}, None, None))


def test_asgi_passes_remote_address():
    seen: list[Request] = []

    def record(request):
        seen.append((request, request.body.read(100)))
        return Response(204)

    asgi_call(make_asgi_app(record), "POST", "/x", b"abc", client=("::1", 1))
    request, body = seen[0]
    assert request.remote_addr == "::1"
    assert body == b"abc"
