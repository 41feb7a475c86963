"""Shared helpers for the API tests: keys, a fake pipeline (until the real one is wired), request builders."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ticketmail.api.handler import ApiHandler, Request
from ticketmail.api.keys import InMemoryKeyStore, issue_key
from ticketmail.errors import MalformedEmailError, MalformedJSONError, MissingFieldError
from ticketmail.model import Address, MailboxContext, MessageBody, Provenance, TicketRequest
from ticketmail.pipeline import Outcome
from ticketmail.testing.osticket import OSTICKET_JSON_VERBATIM as OSTICKET_JSON
from ticketmail.testing.osticket import OSTICKET_XML

OSTICKET_JSON_VALID = b"""{
    "alert": true,
    "autorespond": true,
    "source": "API",
    "name": "Angry User",
    "email": "api@osticket.com",
    "phone": "3185558634X123",
    "subject": "Testing API",
    "ip": "123.211.233.122",
    "message": "MESSAGE HERE",
    "attachments": [
        {"file.txt": "data:text/plain;charset=utf-8,content"},
        {"image.gif": "data:image/gif;base64,R0lGODdhAQABAIAAAP///wAAACwAAAAAAQABAAACAkQBADs="}
    ]
}"""
"""The same example made valid JSON (no trailing comma, complete base64)."""

RAW_EMAIL = (
    b"From: Jane Doe <jane@example.com>\r\n"
    b"To: support@example.net\r\n"
    b"Subject: Printer on fire\r\n"
    b"Message-ID: <abc123@example.com>\r\n"
    b"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"The printer on floor 3 is on fire again.\r\n"
)


class FakePipeline:
    """A stand-in for :class:`ticketmail.pipeline.Pipeline`: counts, numbers and deduplicates."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tickets: dict[str, Any] = {}
        self.ledger: dict[str, str] = {}
        self.calls: list[tuple[str, Any]] = []
        self.next = 100000

    def _new(self, what: Any) -> str:
        self.next += 1
        number = str(self.next)
        self.tickets[number] = what
        return number

    def process_request(
        self, request: TicketRequest, *, context: MailboxContext | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        with self.lock:
            self.calls.append(("request", idempotency_key))
            if idempotency_key and idempotency_key in self.ledger:
                return Outcome("duplicate", ticket=self.ledger[idempotency_key])
            number = self._new(request)
            if idempotency_key:
                self.ledger[idempotency_key] = number
            return Outcome("created", ticket=number)

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        with self.lock:
            self.calls.append(("email", provenance))
            key = f"{provenance.mailbox}/{provenance.kind}/{provenance.key}"
            if key in self.ledger:
                return Outcome("duplicate", ticket=self.ledger[key], already_processed=True, provenance=provenance)
            if b"Auto-Submitted: auto-replied" in raw:
                return Outcome("ignored", provenance=provenance)
            if b"From:" not in raw:
                return Outcome("failed", provenance=provenance, error=MalformedEmailError("no From header"))
            number = self._new(raw)
            self.ledger[key] = number
            return Outcome("created", ticket=number, provenance=provenance)


def fake_parse(body: bytes, fmt: str) -> TicketRequest:
    """A stand-in for the real JSON/XML parsers."""
    if fmt == "json":
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise MalformedJSONError(f"malformed JSON: {exc}") from exc
        if not isinstance(data, dict) or "email" not in data:
            raise MissingFieldError("required field missing", field="email")
        return TicketRequest(
            email=Address(str(data["email"])), subject=str(data.get("subject", "")), message=MessageBody("x")
        )
    return TicketRequest(email=Address("x@example.com"), subject="xml", message=MessageBody("x"))


@pytest.fixture
def keys() -> InMemoryKeyStore:
    return InMemoryKeyStore()


@pytest.fixture
def full_key(keys: InMemoryKeyStore) -> str:
    """A key allowed from loopback with every permission."""
    return issue_key(
        keys, networks=["127.0.0.0/8", "::1"], permissions=["create_tickets", "submit_email", "run_cron"], name="all"
    ).secret


@pytest.fixture
def pipeline() -> FakePipeline:
    return FakePipeline()


@pytest.fixture
def cron_calls() -> list[int]:
    return []


@pytest.fixture
def handler(pipeline: FakePipeline, keys: InMemoryKeyStore, cron_calls: list[int]) -> ApiHandler:
    return ApiHandler(pipeline, keys, cron=lambda: cron_calls.append(1), max_body=64 * 1024, parse=fake_parse)


def post(path: str, body: bytes, key: str | None, **headers: str) -> Request:
    """A POST from 127.0.0.1 with the key and extra headers (underscores become dashes)."""
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    if key is not None:
        hdrs["X-API-Key"] = key
    return Request("POST", path, hdrs, body, "127.0.0.1")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LiveServer:
    """A real threaded server on a loopback port, serving ``handler`` until stopped."""

    def __init__(self, handler: Any) -> None:
        from ticketmail.api.server import make_api_server

        self.server = make_api_server(handler, "127.0.0.1", 0)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def real_stack(tmp_path: Any) -> Iterator[Any]:
    """The real thing: SQLiteBackend + Pipeline + real parsers + SQLiteKeyStore in one SQLite file."""
    from types import SimpleNamespace

    from ticketmail.api.keys import SQLiteKeyStore
    from ticketmail.backends.sqlite import SQLiteBackend
    from ticketmail.pipeline import Pipeline

    db = tmp_path / "tickets.sqlite3"
    backend = SQLiteBackend(db)
    keys = SQLiteKeyStore(db)
    secret = issue_key(
        keys, networks=["127.0.0.1", "::1"], permissions=["create_tickets", "submit_email", "run_cron"]
    ).secret
    pipeline = Pipeline(backend)
    cron_calls: list[int] = []
    handler = ApiHandler(pipeline, keys, cron=lambda: cron_calls.append(1))
    yield SimpleNamespace(db=db, backend=backend, keys=keys, secret=secret, handler=handler, cron_calls=cron_calls)
    keys.close()
    backend.close()


@pytest.fixture
def live(real_stack: Any) -> Iterator[Any]:
    """``real_stack`` served over HTTP on loopback; ``live.url``, ``live.port``, ``live.stack``."""
    server = LiveServer(real_stack.handler)
    server.stack = real_stack  # type: ignore[attr-defined]
    yield server
    server.stop()


class Kit:
    """Samples and helpers, handed to tests through the ``kit`` fixture (test modules cannot import each other)."""

    OSTICKET_JSON = OSTICKET_JSON
    OSTICKET_JSON_VALID = OSTICKET_JSON_VALID
    OSTICKET_XML = OSTICKET_XML
    RAW_EMAIL = RAW_EMAIL
    FakePipeline = FakePipeline
    fake_parse = staticmethod(fake_parse)
    post = staticmethod(post)
    sha256 = staticmethod(sha256)
    LiveServer = LiveServer


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
