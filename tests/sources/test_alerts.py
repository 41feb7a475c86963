"""Alerts: a real webhook server on loopback, a real command, retries with backoff, never blocking."""

from __future__ import annotations

import datetime as _dt
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ticketmail.alerts import Alerter, AlertSettings, alert_settings_from_table
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.errors import ConfigError, MalformedEmailError, SourceError
from ticketmail.model import InboundEmail, Provenance
from ticketmail.pipeline import Pipeline
from ticketmail.sources.health import HealthStore

NOW = _dt.datetime(2026, 12, 4, 12, 0, tzinfo=_dt.timezone.utc)


class Webhook:
    """A loopback HTTP server that fails the first `failures` requests with 503, then records bodies."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.calls += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if outer.calls <= outer.failures:
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.received.append(json.loads(body))
                outer.headers.append(dict(self.headers))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(failures=2)
    yield hook
    hook.close()


def _wait(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_down_and_recovered_reach_the_webhook_after_retries(
    webhook: Webhook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TM_ALERT_HEADERS", "Authorization: Bearer s3cret")
    alerter = Alerter(AlertSettings(webhook=webhook.url, backoff=0.05, attempts=4, headers_env="TM_ALERT_HEADERS"))
    store = HealthStore(tmp_path / "health.json", listeners=(alerter.health_listener(),))
    store.record_failure("support", at=NOW, error=SourceError("connection refused", stage="connect"))
    store.record_success("support", at=NOW + _dt.timedelta(minutes=5))
    alerter.close()
    assert [a["event"] for a in webhook.received] == ["down", "recovered"]
    down = webhook.received[0]
    assert down["mailbox"] == "support"
    assert down["error"] == {"code": "source_error", "stage": "connect", "message": "connection refused"}
    assert "connect: connection refused" in down["summary"]
    assert webhook.calls == 4  # two refusals, then both alerts
    assert webhook.headers[0]["Authorization"] == "Bearer s3cret"
    assert alerter.sent == 2
    assert alerter.failed == 0


def test_quarantined_message_alert_through_pipeline_hooks(webhook: Webhook) -> None:
    webhook.failures = 0
    alerter = Alerter(AlertSettings(webhook=webhook.url, events=["quarantined"], backoff=0.05))

    def broken(raw: bytes) -> InboundEmail:
        raise MalformedEmailError("cannot read it")

    pipeline = Pipeline(InMemoryBackend(), parser=broken, hooks=alerter.hooks())
    pipeline.process_email(b"Subject: x\r\n\r\nx", provenance=Provenance("support", "imap", "1:9"))
    alerter.close()
    (alert,) = webhook.received
    assert alert["event"] == "quarantined"
    assert alert["quarantine"] == {
        "reason_code": "malformed_email",
        "provenance": {"mailbox": "support", "kind": "imap", "key": "1:9"},
    }


def test_command_receives_the_json(tmp_path: Path) -> None:
    out = tmp_path / "alert.json"
    script = f"import sys; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())"
    alerter = Alerter(AlertSettings(command=[sys.executable, "-c", script]))
    alerter.notify({"event": "down", "mailbox": "support", "summary": "down"})
    alerter.close()
    assert json.loads(out.read_text())["event"] == "down"


def test_notify_never_blocks_and_a_full_queue_drops_the_oldest() -> None:
    release, entered = threading.Event(), threading.Event()
    delivered: list[bytes] = []

    def slow(settings: AlertSettings, body: bytes) -> None:
        entered.set()
        release.wait(10)
        delivered.append(body)

    alerter = Alerter(AlertSettings(webhook="http://127.0.0.1:9/x", queue_size=2), transport=slow)
    alerter.notify({"event": "down", "mailbox": "m0"})
    assert entered.wait(5)  # the worker is stuck delivering m0
    start = time.monotonic()
    for i in range(1, 6):
        alerter.notify({"event": "down", "mailbox": f"m{i}"})
    assert time.monotonic() - start < 0.5
    release.set()
    alerter.close()
    assert [json.loads(b)["mailbox"] for b in delivered][-2:] == ["m4", "m5"]
    assert alerter.dropped == 3


def test_gives_up_after_bounded_attempts() -> None:
    calls: list[int] = []

    def refuse(settings: AlertSettings, body: bytes) -> None:
        calls.append(1)
        raise OSError("connection refused")

    alerter = Alerter(AlertSettings(webhook="http://127.0.0.1:9/x", attempts=3, backoff=0.01), transport=refuse)
    alerter.notify({"event": "recovered", "mailbox": "m"})
    alerter.close()
    assert len(calls) == 3
    assert alerter.failed == 1


def test_alerts_table_is_validated() -> None:
    settings = alert_settings_from_table({"webhook": "https://hooks.example.com/x", "events": ["down"]})
    assert settings.events == ("down",)
    with pytest.raises(ConfigError, match="did you mean 'webhook'"):
        alert_settings_from_table({"webhok": "https://hooks.example.com/x"}, source="ticketmail.toml")
    with pytest.raises(ConfigError, match="unknown alert event"):
        alert_settings_from_table({"events": ["exploded"]})
    with pytest.raises(ConfigError, match="http"):
        alert_settings_from_table({"webhook": "file:///etc/passwd"})
