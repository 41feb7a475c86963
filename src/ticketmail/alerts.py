"""Alerts for people: a mailbox went down, came back, or a message was quarantined.

`[alerts]` in the configuration sends each event as a JSON `POST` to a webhook (a chat integration, an
incident tool) and/or runs a command with the JSON on its standard input. Delivery happens on a background
thread with a bounded queue: ingestion never waits for an alert, and a webhook that is down is retried with
exponential backoff (bounded attempts) while mail keeps flowing. When the queue is full the oldest pending
alert is dropped and counted, never the mail.

The payload (one JSON object):

```json
{"event": "down", "at": "2026-12-04T18:42:58+00:00", "mailbox": "support",
 "summary": "mailbox support is unreachable (connect: connection refused)",
 "error": {"code": "source_error", "stage": "connect", "message": "connection refused"},
 "quarantine": null}
```

`event` is `down`, `recovered` or `quarantined`; `error` is set for `down` and `quarantined`; `quarantine`
carries `reason_code` and `provenance` (`mailbox`, `kind`, `key`) for `quarantined`.
"""

from __future__ import annotations

import collections
import datetime as _dt
import difflib
import json
import logging
import random
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ticketmail._validators import at_least, positive
from ticketmail.errors import ConfigError
from ticketmail.hooks import HookEvent, Hooks
from ticketmail.sources.health import HealthEvent

__all__ = ["ALERT_EVENTS", "AlertSettings", "Alerter", "alert_settings_from_table"]

log = logging.getLogger("ticketmail.alerts")

ALERT_EVENTS = ("down", "recovered", "quarantined")
"""The events an alert can be sent for."""

_KEYS = ("webhook", "command", "events", "timeout", "attempts", "backoff", "queue_size", "headers_env")


def _events(value: object) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
    for one in values:
        if one not in ALERT_EVENTS:
            raise ConfigError(f"unknown alert event {one!r}; expected {', '.join(ALERT_EVENTS)}", field="events")
    return values


def _command(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)  # type: ignore[attr-defined]


@attrs.frozen
class AlertSettings:
    """Where alerts go and how hard to try.

    Attributes:
        webhook: An `http://` or `https://` URL that receives each alert as a JSON `POST`.
        command: A program and its arguments (no shell) run with the alert JSON on standard input.
        events: Which events to send (default all of `ALERT_EVENTS`).
        timeout: Seconds one webhook request or command run may take.
        attempts: Tries per alert before it is given up (logged).
        backoff: Seconds before the second try; doubled each time (with jitter), at most 5 minutes.
        queue_size: Alerts waiting at most; beyond it the oldest is dropped.
        headers_env: The name of an environment variable holding extra webhook headers, as
            `Name: value` lines (for a bearer token that must not sit in the config file).
    """

    webhook: str | None = None
    command: tuple[str, ...] = attrs.field(default=(), converter=_command)
    events: tuple[str, ...] = attrs.field(default=ALERT_EVENTS, converter=_events)
    timeout: float = attrs.field(default=10.0, validator=positive("alerts"))
    attempts: int = attrs.field(default=5, validator=at_least(1, "alerts"))
    backoff: float = attrs.field(default=2.0, validator=positive("alerts"))
    queue_size: int = attrs.field(default=1000, validator=at_least(1, "alerts"))
    headers_env: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.webhook is not None and not self.webhook.startswith(("http://", "https://")):
            raise ConfigError("alerts webhook must be an http:// or https:// URL", field="webhook")


def alert_settings_from_table(table: Mapping[str, Any], *, source: str = "<config>") -> AlertSettings:
    """Validate an `[alerts]` table: unknown keys are errors naming the file and a close match."""
    for key in table:
        if key not in _KEYS:
            close = difflib.get_close_matches(key, _KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: [alerts]: unknown key {key!r}{hint}", field=f"alerts.{key}")
    try:
        return AlertSettings(**dict(table))
    except TypeError as exc:
        raise ConfigError(f"{source}: [alerts]: {exc}", field="alerts") from exc


Transport = Callable[[AlertSettings, bytes], None]


def _send(settings: AlertSettings, body: bytes) -> None:
    """Deliver one alert by every configured way; raise on failure (the worker retries)."""
    if settings.webhook:
        import os

        headers = {"Content-Type": "application/json", "User-Agent": "ticketmail-alerts"}
        extra = os.environ.get(settings.headers_env or "", "") if settings.headers_env else ""
        for line in extra.splitlines():
            name, colon, value = line.partition(":")
            if colon and name.strip():
                headers[name.strip()] = value.strip()
        request = urllib.request.Request(settings.webhook, data=body, headers=headers, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=settings.timeout) as response:  # noqa: S310
            response.read(65536)
    if settings.command:
        subprocess.run(  # noqa: S603 - a program the operator configured, without a shell
            list(settings.command), input=body, timeout=settings.timeout, check=True, capture_output=True
        )


class Alerter:
    """Sends alerts in the background; `notify` never blocks.

    Plug it in with `health_listener()` (poller health events) and `hooks()` (quarantined messages). Call
    `close()` at shutdown to deliver what is queued (bounded by `timeout`).
    """

    def __init__(
        self,
        settings: AlertSettings,
        *,
        transport: Transport = _send,
        clock: Callable[[], _dt.datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._transport = transport
        self._clock = clock or (lambda: _dt.datetime.now(_dt.timezone.utc))
        self._sleep = sleep
        self._queue: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="ticketmail-alerts", daemon=True)
        self._thread.start()

    # -- producers --

    def notify(self, payload: Mapping[str, Any]) -> None:
        """Queue one alert (a JSON-ready mapping with an `event`); returns at once."""
        if payload.get("event") not in self.settings.events:
            return
        body = json.dumps(dict(payload), ensure_ascii=False).encode("utf-8")
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self.settings.queue_size:
                self._queue.popleft()
                self.dropped += 1
                log.warning("alerts: queue full, dropped the oldest pending alert")
            self._queue.append(body)
            self._cond.notify()

    def health_listener(self) -> Callable[[HealthEvent], None]:
        """A poller health listener turning `unreachable`/`recovered` into `down`/`recovered` alerts."""

        def listen(event: HealthEvent) -> None:
            error = event.health.last_error
            down = event.kind == "unreachable"
            detail = f" ({error.stage}: {error.message})" if down and error else ""
            self.notify(
                {
                    "event": "down" if down else "recovered",
                    "at": event.at.isoformat(),
                    "mailbox": event.mailbox,
                    "summary": f"mailbox {event.mailbox} is {'unreachable' if down else 'reachable again'}{detail}",
                    "error": None
                    if not down or error is None
                    else {"code": error.code, "stage": error.stage, "message": error.message},
                    "quarantine": None,
                }
            )

        return listen

    def hooks(self) -> Hooks:
        """Pipeline hooks sending a `quarantined` alert for each message that could not be processed."""

        def failed(event: HookEvent) -> None:
            outcome = event.outcome
            prov = outcome.provenance
            error = outcome.error
            mailbox = prov.mailbox if prov else None
            self.notify(
                {
                    "event": "quarantined",
                    "at": self._clock().isoformat(),
                    "mailbox": mailbox,
                    "summary": f"a message from {mailbox or 'an unknown source'} was quarantined"
                    + (f": {error.message}" if error else ""),
                    "error": None if error is None else {"code": error.code, "stage": None, "message": error.message},
                    "quarantine": {
                        "reason_code": error.code if error else None,
                        "provenance": None
                        if prov is None
                        else {"mailbox": prov.mailbox, "kind": prov.kind, "key": prov.key},
                    },
                }
            )

        return Hooks(message_failed=failed)

    # -- the worker --

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                body = self._queue.popleft()
            self._deliver(body)

    def _deliver(self, body: bytes) -> None:
        delay = self.settings.backoff
        for attempt in range(1, self.settings.attempts + 1):
            try:
                self._transport(self.settings, body)
            except (OSError, urllib.error.URLError, subprocess.SubprocessError, ValueError) as exc:
                if attempt == self.settings.attempts:
                    self.failed += 1
                    log.warning("alerts: gave up after %d attempts (%s)", attempt, type(exc).__name__)
                    return
                with self._cond:
                    if self._closing:  # shutting down: one more try at most, no long waits
                        delay = min(delay, 0.5)
                self._sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 300.0)
            else:
                self.sent += 1
                return

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking alerts and deliver the queued ones, waiting at most `timeout` seconds."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
