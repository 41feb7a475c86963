"""The status page: /status (HTML) and /status.json, guarded by a key with view_status."""

from __future__ import annotations

import base64
import datetime as _dt
import json

import pytest

from ticketmail.api.handler import Request, Response
from ticketmail.api.keys import InMemoryKeyStore, issue_key
from ticketmail.api.status import StatusPage, render_status_html, status_document
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.errors import MalformedEmailError, SourceError
from ticketmail.model import InboundEmail, Provenance
from ticketmail.pipeline import Pipeline
from ticketmail.sources.health import ErrorInfo, MailboxHealth

NOW = _dt.datetime(2026, 12, 4, 12, 0, tzinfo=_dt.timezone.utc)
HOSTILE = b"From: Mallory <m@example.net>\r\nSubject: <script>alert(1)</script> & co\r\nMessage-ID: <h@x>\r\n\r\nhi\r\n"


def _inner(request: Request) -> Response:
    return Response(299, (("Content-Type", "text/plain"),), b"inner")


def _broken(raw: bytes) -> InboundEmail:
    raise MalformedEmailError("unreadable")


@pytest.fixture
def setup() -> tuple[StatusPage, str, str]:
    backend = InMemoryBackend()
    Pipeline(backend).process_email(HOSTILE, provenance=Provenance("support", "imap", "1:1"))
    Pipeline(backend, parser=_broken).process_email(HOSTILE, provenance=Provenance("support", "imap", "1:2"))
    keys = InMemoryKeyStore()
    viewer = issue_key(keys, networks=["127.0.0.1"], permissions=["view_status"]).secret
    other = issue_key(keys, networks=["127.0.0.1"], permissions=["create_tickets"]).secret
    health = {
        "support": MailboxHealth(
            "support", reachable=True, last_attempt=NOW, last_success=NOW, waiting=3, last_processed=2
        ),
        "sales": MailboxHealth(
            "sales",
            reachable=False,
            last_attempt=NOW,
            consecutive_failures=4,
            last_error=ErrorInfo.from_error(SourceError("connection refused", stage="connect")),
        ),
    }
    page = StatusPage(_inner, backend=backend, keys=keys, health=lambda: health, mailboxes=["support", "billing"])
    return page, viewer, other


def _get(page: StatusPage, path: str, **headers: str) -> Response:
    return page(Request("GET", path, headers=tuple(headers.items()), remote_addr="127.0.0.1"))


def test_status_json_has_cards_quarantine_and_decisions(setup: tuple[StatusPage, str, str]) -> None:
    page, viewer, _ = setup
    response = _get(page, "/status.json", **{"x-api-key": viewer})
    assert response.status == 200
    doc = json.loads(response.body)
    cards = {card["name"]: card for card in doc["mailboxes"]}
    assert list(cards) == ["support", "billing", "sales"]
    assert cards["support"]["state"] == "ok"
    assert cards["support"]["waiting"] == 3
    assert cards["billing"]["state"] == "unknown"
    assert cards["sales"]["state"] == "unreachable"
    assert cards["sales"]["last_error"] == {"code": "source_error", "stage": "connect", "message": "connection refused"}
    assert cards["sales"]["consecutive_failures"] == 4
    assert doc["quarantine"] == {"count": 1}
    assert [d["outcome"] for d in doc["recent"]] == ["failed", "created"]
    assert doc["recent"][1]["sender"] == "m@example.net"


def test_status_html_is_escaped_and_self_contained(setup: tuple[StatusPage, str, str]) -> None:
    page, viewer, _ = setup
    basic = base64.b64encode(f"ops:{viewer}".encode()).decode()
    response = _get(page, "/status", authorization=f"Basic {basic}")
    assert response.status == 200
    text = response.body.decode()
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert "http://" not in text
    assert "https://" not in text
    assert "src=" not in text
    assert 'name="viewport"' in text
    assert 'data-mailbox="sales"' in text
    assert "connection refused" in text
    assert dict(response.headers)["Content-Security-Policy"].startswith("default-src 'none'")


def test_status_needs_a_key_with_view_status(setup: tuple[StatusPage, str, str]) -> None:
    page, _, other = setup
    unauthenticated = _get(page, "/status")
    assert unauthenticated.status == 401
    assert ("WWW-Authenticate", 'Basic realm="ticketmail status"') in unauthenticated.headers
    assert _get(page, "/status.json").status == 401
    assert _get(page, "/status.json", **{"x-api-key": other}).status == 403
    assert _get(page, "/status.json", authorization="Basic !!!").status == 401


def test_other_paths_reach_the_api(setup: tuple[StatusPage, str, str]) -> None:
    page, _, _ = setup
    assert _get(page, "/api/tickets.json").status == 299
    assert _get(page, "/statusx").status == 299


def test_render_status_with_nothing_yet() -> None:
    doc = status_document(InMemoryBackend(), {}, now=NOW)
    assert doc["mailboxes"] == []
    assert doc["recent"] == []
    assert doc["quarantine"] == {"count": 0}
    assert "No mailbox configured" in render_status_html(doc)
