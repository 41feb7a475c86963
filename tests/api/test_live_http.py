"""The WSGI app through a real threaded HTTP server on loopback, with http.client and curl.

Everything here is real: the parsers, the pipeline, SQLite (tickets and API keys in one file), the server.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess

import pytest

from ticketmail.api.handler import ApiHandler

pytestmark = pytest.mark.integration

CURL = shutil.which("curl")


def request(live, method, path, body=b"", headers=None, key=None):
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["X-API-Key"] = key
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def curl(live, path, *args, data_file=None, key=None):
    assert CURL, "curl must be installed (scripts/system-deps)"
    cmd = [CURL, "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"]
    if key is not None:
        cmd += ["-H", f"X-API-Key: {key}"]
    if data_file is not None:
        cmd += ["--data-binary", f"@{data_file}"]
    cmd += [*args, f"{live.url}{path}"]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout.decode()
    body, _, code = out.rpartition("\n")
    return int(code), body


def test_osticket_xml_example_with_http_client(live, kit):
    status, headers, body = request(
        live, "POST", "/api/tickets.xml", kit.OSTICKET_XML, {"Content-Type": "application/xml"}, live.stack.secret
    )
    assert status == 201, body
    number = body.decode()
    ticket = live.stack.backend.get_ticket(number)
    assert ticket is not None
    assert ticket.subject == "Testing API"
    assert ticket.requester.email == "api@osticket.com"
    (entry,) = live.stack.backend.entries(number)
    assert "Message content here" in entry.body
    assert len(entry.attachments) == 2
    assert headers["Content-Type"].startswith("text/plain")


def test_osticket_json_example_verbatim_is_a_clear_400(live, kit):
    # The documentation's example has a trailing comma after the last attachment and elided base64:
    # it is not valid JSON, and the answer must say so.
    status, headers, body = request(
        live, "POST", "/api/tickets.json", kit.OSTICKET_JSON, {"Content-Type": "application/json"}, live.stack.secret
    )
    assert status == 400
    assert headers["X-Ticketmail-Error"] == "malformed_json"
    assert body
    assert live.stack.backend.list_tickets() == []


def test_osticket_json_example_corrected_with_curl(live, kit, tmp_path):
    payload = tmp_path / "ticket.json"
    payload.write_bytes(kit.OSTICKET_JSON_VALID)
    code, body = curl(
        live, "/api/tickets.json", "-H", "Content-Type: application/json", data_file=payload, key=live.stack.secret
    )
    assert code == 201, body
    ticket = live.stack.backend.get_ticket(body)
    assert ticket.subject == "Testing API"
    (entry,) = live.stack.backend.entries(body)
    assert len(entry.attachments) == 2


def test_osticket_xml_example_with_curl(live, kit, tmp_path):
    payload = tmp_path / "ticket.xml"
    payload.write_bytes(kit.OSTICKET_XML)
    code, body = curl(
        live, "/api/tickets.xml", "-H", "Content-Type: text/xml", data_file=payload, key=live.stack.secret
    )
    assert code == 201, body
    assert live.stack.backend.get_ticket(body).subject == "Testing API"


def test_raw_email_with_curl_is_idempotent(live, kit, tmp_path):
    raw = tmp_path / "mail.eml"
    raw.write_bytes(kit.RAW_EMAIL)
    args = ("-H", "Content-Type: message/rfc822")
    first = curl(live, "/api/tickets.email", *args, data_file=raw, key=live.stack.secret)
    again = curl(live, "/api/tickets.email", *args, data_file=raw, key=live.stack.secret)
    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    assert len(live.stack.backend.list_tickets()) == 1
    assert live.stack.backend.get_ticket(first[1]).subject == "Printer on fire"


def test_raw_email_with_http_client(live, kit):
    status, headers, _body = request(live, "POST", "/api/tickets.email", kit.RAW_EMAIL, key=live.stack.secret)
    assert status == 201
    assert headers["X-Ticketmail-Action"] == "created"


def test_errors_over_http(live, kit):
    key = live.stack.secret
    assert request(live, "POST", "/api/tickets.json", b"{}", key="tm_bogus")[0] == 401
    status, headers, _ = request(live, "GET", "/api/tickets.json", key=key)
    assert (status, headers["Allow"]) == (405, "POST")
    assert request(live, "POST", "/nope", key=key)[0] == 404
    status, headers, body = request(
        live, "POST", "/api/tickets.json", b"{}", {"Content-Type": "application/xml"}, key=key
    )
    assert status == 415
    status, _, body = request(
        live, "POST", "/api/tickets.json", b'{"name": "x"}', {"Accept": "application/json"}, key=key
    )
    assert status == 400
    assert json.loads(body)["error"]["code"] in {"missing_field", "invalid_email", "invalid_value"}


def test_cron_over_http(live):
    status, _, body = request(live, "POST", "/api/tasks/cron", key=live.stack.secret)
    assert (status, body) == (200, b"Completed")
    assert live.stack.cron_calls == [1]


def test_over_limit_body_413_is_received_by_both_clients(real_stack, kit, tmp_path):
    small = ApiHandler(real_stack.handler.pipeline, real_stack.keys, max_body=1024)
    server = kit.LiveServer(small)
    try:
        big = b"x" * (2 * 1024 * 1024)
        status, _headers, body = request(server, "POST", "/api/tickets.email", big, key=real_stack.secret)
        assert status == 413
        assert b"1024" in body
        path = tmp_path / "big.eml"
        path.write_bytes(big)
        code, body = curl(server, "/api/tickets.email", data_file=path, key=real_stack.secret)
        assert code == 413
        # A chunked upload (no Content-Length): wsgiref does not dechunk, so the body is empty -> refused,
        # never read unbounded.
        code, _ = curl(
            server, "/api/tickets.email", "-H", "Transfer-Encoding: chunked", data_file=path, key=real_stack.secret
        )
        assert code == 411
    finally:
        server.stop()
    assert real_stack.backend.list_tickets() == []


def test_idempotency_key_over_http(live, kit):
    headers = {"Content-Type": "application/json", "Idempotency-Key": "crm-case-4711"}
    first = request(live, "POST", "/api/tickets.json", kit.OSTICKET_JSON_VALID, headers, live.stack.secret)
    again = request(live, "POST", "/api/tickets.json", kit.OSTICKET_JSON_VALID, headers, live.stack.secret)
    assert first[0] == again[0] == 201
    assert first[2] == again[2]
    assert again[1]["X-Ticketmail-Action"] == "duplicate"
    assert len(live.stack.backend.list_tickets()) == 1


def test_concurrent_retries_of_one_email_make_one_ticket(live, kit):
    """Twelve clients post the same message at once: one ticket, every client told its number."""
    import threading

    raw = kit.RAW_EMAIL.replace(b"abc123@", b"concurrent@")
    results = []
    barrier = threading.Barrier(12)

    def client():
        barrier.wait()
        results.append(request(live, "POST", "/api/tickets.email", raw, key=live.stack.secret))

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 12
    assert {status for status, _, _ in results} == {201}
    assert len({body for _, _, body in results}) == 1
    assert sorted(h["X-Ticketmail-Action"] for _, h, _ in results).count("created") == 1
    assert len(live.stack.backend.list_tickets()) == 1
