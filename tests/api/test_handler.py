"""The handler, called directly: every route, status and error code."""

from __future__ import annotations

import io
import json
import logging

import pytest

from ticketmail.api.handler import ApiHandler, Request, Response
from ticketmail.api.keys import InMemoryKeyStore, issue_key
from ticketmail.errors import BackendError, PolicyRejectedError
from ticketmail.pipeline import Outcome


def body_json(response: Response) -> dict:
    assert response.header("content-type") == "application/json"
    return json.loads(response.body)


# -- success -------------------------------------------------------------------------------------------


def test_json_ticket_created_201_with_number_as_body(handler, full_key, kit, pipeline):
    r = handler(kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key, content_type="application/json"))
    assert r.status == 201
    assert r.reason == "Created"
    assert r.body == b"100001"
    assert r.header("X-Ticketmail-Action") == "created"
    assert len(pipeline.tickets) == 1


def test_xml_ticket_created(handler, full_key, kit):
    r = handler(kit.post("/api/tickets.xml", kit.OSTICKET_XML, full_key, content_type="application/xml"))
    assert (r.status, r.text) == (201, "100001")


@pytest.mark.parametrize(
    "ctype", ["", "text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-8"]
)
def test_json_lenient_content_types(handler, full_key, kit, ctype):
    headers = {"content_type": ctype} if ctype else {}
    r = handler(kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key, **headers))
    assert r.status == 201


def test_email_created_and_retry_is_idempotent(handler, full_key, kit, pipeline):
    first = handler(kit.post("/api/tickets.email", kit.RAW_EMAIL, full_key, content_type="message/rfc822"))
    again = handler(kit.post("/api/tickets.email", kit.RAW_EMAIL, full_key, content_type="message/rfc822"))
    assert first.status == again.status == 201
    assert first.body == again.body
    assert again.header("X-Ticketmail-Action") == "duplicate"
    kind, provenance = pipeline.calls[0]
    assert kind == "email"
    assert (provenance.kind, provenance.key, provenance.mailbox) == ("api", kit.sha256(kit.RAW_EMAIL), "api")
    assert len(pipeline.tickets) == 1


def test_idempotency_key_is_scoped_to_the_api_key(handler, keys, full_key, kit, pipeline):
    other = issue_key(keys, networks=["127.0.0.1"]).secret
    a = handler(kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key, idempotency_key="order-1"))
    b = handler(kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key, idempotency_key="order-1"))
    c = handler(kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, other, idempotency_key="order-1"))
    assert a.body == b.body != c.body
    assert a.status == b.status == c.status == 201
    assert len(pipeline.tickets) == 2


def test_bad_idempotency_key_400(handler, full_key, kit):
    r = handler(kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key, idempotency_key="a b"))
    assert r.status == 400
    assert r.header("X-Ticketmail-Error") == "invalid_value"
    assert "Idempotency-Key" in r.text


def test_ignored_email_202_without_ticket(handler, full_key, kit):
    raw = b"Auto-Submitted: auto-replied\r\n" + kit.RAW_EMAIL
    r = handler(kit.post("/api/tickets.email", raw, full_key))
    assert (r.status, r.body, r.header("X-Ticketmail-Action")) == (202, b"", "ignored")


def test_ignored_email_202_says_why(real_stack, kit):
    """With the real pipeline, the 202 body lists the reasons (code: message) and a header names the last."""
    raw = b"Auto-Submitted: auto-replied\r\n" + kit.RAW_EMAIL
    r = real_stack.handler(kit.post("/api/tickets.email", raw, real_stack.secret))
    assert (r.status, r.header("X-Ticketmail-Action")) == (202, "ignored")
    lines = r.text.splitlines()
    assert lines
    assert any(line.startswith("auto.") for line in lines), lines
    assert r.header("X-Ticketmail-Reason") == lines[-1].split(":", 1)[0]


def test_cron_runs_once_200(handler, full_key, kit, cron_calls):
    r = handler(kit.post("/api/tasks/cron", b"", full_key))
    assert (r.status, r.text) == (200, "Completed")
    assert cron_calls == [1]


def test_prefix_can_be_changed(pipeline, keys, full_key, kit):
    h = ApiHandler(pipeline, keys, prefix="/", parse=kit.fake_parse)
    assert h(kit.post("/tickets.json", kit.OSTICKET_JSON_VALID, full_key)).status == 201
    assert h(kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key)).status == 404


# -- 400 -----------------------------------------------------------------------------------------------


def test_malformed_json_400_names_the_problem(handler, full_key, kit):
    r = handler(kit.post("/api/tickets.json", kit.OSTICKET_JSON, full_key))
    assert r.status == 400
    assert r.header("X-Ticketmail-Error") == "malformed_json"
    assert r.header("content-type").startswith("text/plain")
    assert "JSON" in r.text


def test_missing_field_400_json_error_when_accepted(handler, full_key, kit):
    r = handler(kit.post("/api/tickets.json", b"{}", full_key, accept="application/json"))
    assert r.status == 400
    assert body_json(r) == {
        "error": {"code": "missing_field", "status": 400, "message": "required field missing", "field": "email"}
    }


@pytest.mark.parametrize(
    ("accept", "wants_json"),
    [
        ("application/json", True),
        ("text/plain, application/json;q=0.5", False),
        ("application/json;q=0.9, text/plain;q=0.1", True),
        ("*/*", False),
        ("application/problem+json", True),
        ("application/json;q=bogus", False),
        ("", False),
    ],
)
def test_accept_negotiation(handler, full_key, kit, accept, wants_json):
    r = handler(kit.post("/api/tickets.json", b"[", full_key, accept=accept))
    assert r.status == 400
    assert (r.header("content-type") == "application/json") is wants_json


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", " ", "+5", "\u0665", "9" * 5000])
def test_bad_content_length_400(handler, full_key, kit, length):
    r = handler(kit.post("/api/tickets.json", b"{}", full_key, content_length=length))
    assert r.status == 400
    assert "Content-Length" in r.text


def test_body_shorter_than_content_length_400(handler, full_key, kit):
    req = kit.post("/api/tickets.json", b"", full_key, content_length="10")
    req = Request(req.method, req.path, req.headers, io.BytesIO(b"{}"), req.remote_addr)
    r = handler(req)
    assert r.status == 400
    assert r.header("X-Ticketmail-Error") == "incomplete_body"


def test_empty_email_400(handler, full_key, kit):
    r = handler(kit.post("/api/tickets.email", b"  \r\n", full_key))
    assert r.status == 400
    assert "empty" in r.text


def test_parser_bug_is_400_and_logged(pipeline, keys, full_key, kit, caplog):
    def broken(body, fmt):
        raise KeyError("oops")

    h = ApiHandler(pipeline, keys, parse=broken)
    with caplog.at_level(logging.ERROR, logger="ticketmail.api"):
        r = h(kit.post("/api/tickets.json", b"{}", full_key))
    assert r.status == 400
    assert "parser bug" in caplog.text


# -- 401 / 403 -----------------------------------------------------------------------------------------

UNKNOWN = b"Unknown remote host or invalid API key"


@pytest.mark.parametrize(
    "key",
    [None, "", "nonsense", "tm_000000000000_" + "A" * 43, "tm_zzzzzzzzzzzz_" + "A" * 43],
)
def test_missing_or_unknown_key_401(handler, kit, key):
    r = handler(kit.post("/api/tickets.json", b"{}", key))
    assert r.status == 401
    assert r.body == UNKNOWN
    assert r.header("WWW-Authenticate")


def test_right_id_wrong_secret_401(handler, full_key, kit):
    forged = full_key[:-4] + ("AAAA" if not full_key.endswith("AAAA") else "BBBB")
    r = handler(kit.post("/api/tickets.json", b"{}", forged))
    assert (r.status, r.body) == (401, UNKNOWN)


def test_wrong_remote_address_401_same_message(handler, full_key, kit):
    req = kit.post("/api/tickets.json", b"{}", full_key)
    for addr in ("10.0.0.1", "", "not-an-ip", "::2"):
        r = handler(Request(req.method, req.path, req.headers, req.body, addr))
        assert (r.status, r.body) == (401, UNKNOWN)


def test_ipv4_mapped_ipv6_remote_is_matched(handler, full_key, kit):
    req = kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key)
    r = handler(Request(req.method, req.path, req.headers, req.body, "::ffff:127.0.0.1"))
    assert r.status == 201


def test_revoked_key_401(handler, keys, full_key, kit):
    keys.revoke(full_key.split("_")[1])
    r = handler(kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key))
    assert (r.status, r.body) == (401, UNKNOWN)


def test_json_401_does_not_leak(handler, kit):
    r = handler(kit.post("/api/tickets.json", b"{}", "tm_x", accept="application/json"))
    assert body_json(r)["error"] == {
        "code": "invalid_api_key",
        "status": 401,
        "message": "Unknown remote host or invalid API key",
        "field": None,
    }


@pytest.mark.parametrize(
    ("permission", "path"),
    [
        ("submit_email", "/api/tickets.json"),
        ("create_tickets", "/api/tickets.email"),
        ("create_tickets", "/api/tasks/cron"),
    ],
)
def test_missing_permission_403(handler, keys, kit, permission, path):
    secret = issue_key(keys, networks=["127.0.0.1"], permissions=[permission]).secret
    r = handler(kit.post(path, kit.RAW_EMAIL, secret))
    assert r.status == 403
    assert r.header("X-Ticketmail-Error") == "api_permission_denied"


def test_auth_is_checked_before_the_body_is_read(handler, kit):
    class Exploding(io.RawIOBase):
        def read(self, n=-1):
            raise AssertionError("body read before authentication")

    r = handler(Request("POST", "/api/tickets.json", {"content-length": "5"}, Exploding(), "127.0.0.1"))
    assert r.status == 401


# -- 404 / 405 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/tickets", "/api/tickets.yaml", "/api/tickets.json/x", "/api/\x00\u2028"])
def test_unknown_route_404(handler, full_key, kit, path):
    r = handler(kit.post(path, b"", full_key))
    assert r.status == 404
    assert "\x00" not in r.text


def test_cron_without_callable_404(pipeline, keys, full_key, kit):
    h = ApiHandler(pipeline, keys)
    assert h(kit.post("/api/tasks/cron", b"", full_key)).status == 404


def test_query_string_is_ignored(handler, full_key, kit):
    assert handler(kit.post("/api/tickets.json?x=1", kit.OSTICKET_JSON_VALID, full_key)).status == 201


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])
def test_wrong_method_405_with_allow(handler, full_key, kit, method):
    r = handler(Request(method, "/api/tickets.json", {"X-API-Key": full_key}, b"", "127.0.0.1"))
    assert r.status == 405
    assert r.header("Allow") == "POST"


def test_lowercase_post_is_accepted(handler, full_key, kit):
    req = kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key)
    assert handler(Request("post", req.path, req.headers, req.body, req.remote_addr)).status == 201


# -- 413 -----------------------------------------------------------------------------------------------


def test_declared_length_over_limit_413_without_reading(handler, full_key, kit):
    class Counting(io.RawIOBase):
        read_bytes = 0

        def read(self, n=-1):
            Counting.read_bytes += n
            return b"x" * n

    req = kit.post("/api/tickets.json", b"", full_key, content_length=str(10**12))
    r = handler(Request(req.method, req.path, req.headers, Counting(), req.remote_addr))
    assert r.status == 413
    assert r.header("X-Ticketmail-Error") == "payload_too_large"
    assert Counting.read_bytes == 0


def test_undeclared_stream_over_limit_413_reads_at_most_limit_plus_one(handler, full_key, kit):
    stream = io.BytesIO(b"x" * (10 * 64 * 1024))
    req = kit.post("/api/tickets.email", b"", full_key)
    r = handler(Request(req.method, req.path, req.headers, stream, req.remote_addr))
    assert r.status == 413
    assert stream.tell() <= handler.max_body + 1


def test_bytes_body_over_limit_413(handler, full_key, kit):
    r = handler(kit.post("/api/tickets.email", b"x" * (handler.max_body + 1), full_key))
    assert r.status == 413


def test_body_at_the_limit_is_accepted(handler, full_key, kit):
    raw = kit.RAW_EMAIL + b"x" * (handler.max_body - len(kit.RAW_EMAIL))
    assert len(raw) == handler.max_body
    assert handler(kit.post("/api/tickets.email", raw, full_key, content_length=str(len(raw)))).status == 201


# -- 415 / 422 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/api/tickets.json", "application/xml"),
        ("/api/tickets.xml", "application/json"),
        ("/api/tickets.email", "multipart/form-data; boundary=x"),
        ("/api/tickets.json", "image/png"),
    ],
)
def test_wrong_content_type_415(handler, full_key, kit, path, ctype):
    r = handler(kit.post(path, b"{}", full_key, content_type=ctype))
    assert r.status == 415
    assert r.header("X-Ticketmail-Error") == "unsupported_content_type"
    assert "Content-Type" in r.text


def test_failed_email_422_names_the_problem(handler, full_key, kit):
    r = handler(kit.post("/api/tickets.email", b"no headers at all", full_key, accept="application/json"))
    assert r.status == 422
    assert body_json(r)["error"]["code"] == "malformed_email"


class _Scripted:
    def __init__(self, outcome=None, exc=None):
        self.outcome, self.exc = outcome, exc

    def process_request(self, request, *, context=None, idempotency_key=None):
        if self.exc:
            raise self.exc
        return self.outcome

    process_email = None


def test_rejected_422(keys, full_key, kit):
    pipe = _Scripted(Outcome("rejected", error=PolicyRejectedError("banned sender")))
    r = ApiHandler(pipe, keys, parse=kit.fake_parse)(kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key))
    assert (r.status, r.text) == (422, "banned sender")


def test_rejected_without_error_still_4xx(keys, full_key, kit):
    pipe = _Scripted(Outcome("rejected"))
    r = ApiHandler(pipe, keys, parse=kit.fake_parse)(kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key))
    assert r.status == 400


# -- 5xx (server side only) ----------------------------------------------------------------------------


def test_backend_down_503_with_retry_after(keys, full_key, kit):
    pipe = _Scripted(exc=BackendError("database is locked"))
    r = ApiHandler(pipe, keys, parse=kit.fake_parse)(kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key))
    assert r.status == 503
    assert r.header("Retry-After") == "30"
    assert b"locked" not in r.body


def test_pipeline_bug_500_generic_and_logged(keys, full_key, kit, caplog):
    pipe = _Scripted(exc=RuntimeError("secret internals"))
    with caplog.at_level(logging.ERROR, logger="ticketmail.api"):
        r = ApiHandler(pipe, keys, parse=kit.fake_parse)(
            kit.post("/api/tickets.json", kit.OSTICKET_JSON_VALID, full_key)
        )
    assert r.status == 500
    assert b"secret internals" not in r.body
    assert "secret internals" in caplog.text


def test_cron_report_with_errors_is_said(pipeline, keys, full_key, kit):
    class Report:
        ok = False

    r = ApiHandler(pipeline, keys, cron=Report)(kit.post("/api/tasks/cron", b"", full_key))
    assert r.status == 200
    assert r.text.startswith("Completed with errors")


def test_cron_failure_maps_to_its_status(pipeline, keys, full_key, kit):
    from ticketmail.errors import SourceError

    def cron():
        raise SourceError("imap.example.com refused the login", stage="auth")

    r = ApiHandler(pipeline, keys, cron=cron)(kit.post("/api/tasks/cron", b"", full_key))
    assert r.status == 502


def test_negative_limit_refused(pipeline):
    from ticketmail.errors import InvalidValueError

    with pytest.raises(InvalidValueError):
        ApiHandler(pipeline, InMemoryKeyStore(), max_body=-1)


def test_request_and_response_values():
    req = Request("POST", "/x", [("X-Api-Key", "k")], b"secret-body", "1.2.3.4")
    assert req.header("x-api-key") == "k"
    assert "secret-body" not in repr(req)
    resp = Response(599)
    assert resp.reason == "Unknown"
