"""A status page for people: `GET /status` (HTML) and `GET /status.json`, in front of the ticket API.

One card per mailbox (reachable, last sync, waiting messages, last error, failures in a row), the latest
decisions with their reasons, and the number of quarantined messages. The page is rendered on the server
with inline styles and no external assets (no CDN, no script), fits a phone, and refreshes itself every
30 seconds. Both routes need an API key with the `view_status` permission, sent as `X-API-Key` or, so that
a browser can ask for it, as the password of HTTP Basic authentication (any user name).

`StatusPage` wraps any handler (`Request -> Response`, usually an `ApiHandler`) and answers only its two
paths, so it mounts wherever the ticket API does: `ticketmail serve`, WSGI or ASGI.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import html
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ticketmail.api.handler import ApiHandler, Request, Response
from ticketmail.api.keys import ApiKeyError, ApiKeyStore, authenticate, require
from ticketmail.audit import AuditQuery, reasons_in_words, select_audit
from ticketmail.backends.base import AuditRecord, Backend
from ticketmail.errors import NotFoundError, TicketmailError
from ticketmail.sources.health import MailboxHealth

__all__ = ["StatusPage", "status_document"]

log = logging.getLogger("ticketmail.api")

Handler = Callable[[Request], Response]


def _iso(value: _dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _card(name: str, health: MailboxHealth | None) -> dict[str, Any]:
    if health is None:
        return {
            "name": name,
            "state": "unknown",
            "reachable": None,
            "last_sync": None,
            "last_attempt": None,
            "waiting": None,
            "last_error": None,
            "consecutive_failures": 0,
            "last_processed": 0,
            "last_failed": 0,
        }
    error = health.last_error
    return {
        "name": name,
        "state": health.state,
        "reachable": health.reachable,
        "last_sync": _iso(health.last_success),
        "last_attempt": _iso(health.last_attempt),
        "waiting": health.waiting,
        "last_error": None if error is None else {"code": error.code, "stage": error.stage, "message": error.message},
        "consecutive_failures": health.consecutive_failures,
        "last_processed": health.last_processed,
        "last_failed": health.last_failed,
    }


def _decision(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "at": record.at.isoformat(),
        "mailbox": record.provenance.mailbox if record.provenance else None,
        "origin": record.origin,
        "sender": record.sender,
        "subject": record.subject,
        "outcome": record.action,
        "ticket": record.ticket,
        "reasons": [{"code": c, "message": m, "value": v} for c, m, v in record.reasons],
        "in_words": reasons_in_words(record),
    }


def status_document(
    backend: Backend,
    health: Mapping[str, MailboxHealth],
    *,
    mailboxes: Sequence[str] = (),
    recent: int = 20,
    now: _dt.datetime | None = None,
) -> dict[str, Any]:
    """The status as a JSON-ready mapping (what `/status.json` answers; the HTML page shows the same).

    Keys: `generated_at`, `mailboxes` (one card per configured or polled mailbox: `name`, `state` (`ok`,
    `failing`, `unreachable`, `unknown`), `reachable`, `last_sync`, `last_attempt`, `waiting`, `last_error`
    (`code`, `stage`, `message`) and counters), `quarantine` (`count`) and `recent` (the newest decisions).
    """
    names = list(dict.fromkeys([*mailboxes, *sorted(health)]))
    return {
        "generated_at": (now or _dt.datetime.now(_dt.timezone.utc)).isoformat(),
        "mailboxes": [_card(name, health.get(name)) for name in names],
        "quarantine": {"count": len(backend.quarantined())},
        "recent": [_decision(r) for r in select_audit(backend.audit_log(), AuditQuery(limit=recent))],
    }


_STYLE = """
:root{color-scheme:light dark;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mute:#6e7781;--line:#d0d7de}
*{box-sizing:border-box}body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
padding:16px;max-width:1100px;margin-inline:auto}h1{font-size:1.3em;margin:0 0 4px}h2{font-size:1.05em;
margin:24px 0 8px}.sub{color:var(--mute);font-size:.9em}.grid{display:grid;gap:12px;
grid-template-columns:repeat(auto-fill,minmax(250px,1fr))}.card{border:1px solid var(--line);border-radius:8px;
padding:12px}.card h3{margin:0 0 6px;font-size:1em;display:flex;justify-content:space-between;gap:8px}
.badge{font-size:.8em;padding:1px 8px;border-radius:10px;color:#fff;background:var(--mute);white-space:nowrap}
.ok{background:var(--ok)}.unreachable,.failing{background:var(--bad)}.card dl{margin:0;display:grid;
grid-template-columns:auto 1fr;gap:2px 10px;font-size:.9em}.card dt{color:var(--mute)}.card dd{margin:0;
overflow-wrap:anywhere}.err{color:var(--bad)}table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td.why{overflow-wrap:anywhere}@media (max-width:640px){thead{display:none}table,tbody,tr,td{display:block}
tr{border:1px solid var(--line);border-radius:8px;margin-bottom:8px;padding:4px}td{border:0;padding:2px 6px}
td::before{content:attr(data-label) ": ";color:var(--mute)}}
"""


def _e(value: object) -> str:
    return html.escape("-" if value is None or value == "" else str(value))


def _when(value: str | None) -> str:
    if not value:
        return "never"
    return value.replace("T", " ")[:19] + " UTC" if value.endswith("+00:00") else value


def render_status_html(document: Mapping[str, Any]) -> str:
    """The HTML page for a `status_document` (escaped, inline styles, no external assets)."""
    cards = []
    for card in document["mailboxes"]:
        error = card["last_error"]
        reach = {True: "reachable", False: "unreachable", None: "not polled yet"}[card["reachable"]]
        rows = [
            ("status", reach),
            ("last sync", _when(card["last_sync"])),
            ("waiting", "unknown" if card["waiting"] is None else str(card["waiting"])),
            ("failures", str(card["consecutive_failures"])),
        ]
        body = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
        if error:
            body += f'<dt>last error</dt><dd class="err">{_e(error["stage"])}: {_e(error["message"])}</dd>'
        cards.append(
            f'<section class="card" data-mailbox="{_e(card["name"])}"><h3><span>{_e(card["name"])}</span>'
            f'<span class="badge {_e(card["state"])}">{_e(card["state"])}</span></h3><dl>{body}</dl></section>'
        )
    decisions = []
    for row in document["recent"]:
        cells = (
            ("time", _when(row["at"])),
            ("mailbox", row["mailbox"]),
            ("sender", row["sender"]),
            ("subject", row["subject"]),
            ("outcome", row["outcome"]),
            ("ticket", row["ticket"]),
        )
        tds = "".join(f'<td data-label="{k}">{_e(v)}</td>' for k, v in cells)
        decisions.append(f'<tr>{tds}<td class="why" data-label="why">{_e(row["in_words"])}</td></tr>')
    count = document["quarantine"]["count"]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="refresh" content="30"><title>ticketmail status</title>'
        f"<style>{_STYLE}</style></head><body>"
        f'<h1>ticketmail status</h1><div class="sub">generated {_e(_when(document["generated_at"]))}</div>'
        f'<h2>Mailboxes</h2><div class="grid">{"".join(cards) or "<p>No mailbox configured or polled yet.</p>"}'
        "</div>"
        f'<h2>Quarantine</h2><p id="quarantine"><strong>{count}</strong> message(s) could not be processed and are '
        "kept with their raw bytes (<code>ticketmail quarantine list</code>).</p>"
        '<h2>Latest decisions</h2><table id="decisions"><thead><tr><th>time</th><th>mailbox</th><th>sender</th>'
        f"<th>subject</th><th>outcome</th><th>ticket</th><th>why</th></tr></thead><tbody>{''.join(decisions)}"
        "</tbody></table></body></html>"
    )


class StatusPage:
    """`GET /status` and `GET /status.json` in front of `inner`; every other request goes to `inner`.

    Args:
        inner: The handler for everything else (an `ApiHandler`).
        backend: Where decisions and the quarantine are read.
        keys: The API key store (the key needs `view_status`).
        health: Returns the mailboxes' health records (e.g. `lambda: read_health(state_dir / "health.json")`).
        mailboxes: Configured mailbox names, shown even before their first poll.
        recent: How many of the newest decisions to show.
        prefix: Where the two routes live (default: the root, `/status`).
    """

    def __init__(
        self,
        inner: Handler,
        *,
        backend: Backend,
        keys: ApiKeyStore,
        health: Callable[[], Mapping[str, MailboxHealth]] = dict,
        mailboxes: Sequence[str] = (),
        recent: int = 20,
        prefix: str = "",
    ) -> None:
        self.inner = inner
        self.backend = backend
        self.keys = keys
        self.health = health
        self.mailboxes = tuple(mailboxes)
        self.recent = recent
        base = prefix.rstrip("/")
        self._html, self._json = f"{base}/status", f"{base}/status.json"

    def __call__(self, request: Request) -> Response:
        """Answer the status routes, or hand the request to the wrapped handler."""
        path = request.path.split("?", 1)[0]
        if path not in (self._html, self._json):
            return self.inner(request)
        as_json = path == self._json
        try:
            return self._status(request, as_json=as_json)
        except ApiKeyError as exc:
            response = ApiHandler.error_response(exc, json_body=as_json)
            if as_json:
                return response
            headers = tuple(h for h in response.headers if h[0].lower() != "www-authenticate")
            return Response(
                response.status, (*headers, ("WWW-Authenticate", 'Basic realm="ticketmail status"')), response.body
            )
        except TicketmailError as exc:
            return ApiHandler.error_response(exc, json_body=as_json)
        except Exception:
            log.exception("status page: unexpected error")
            return ApiHandler.error_response(TicketmailError("unexpected error"), json_body=as_json)

    def _presented_key(self, request: Request) -> str | None:
        key = request.header("x-api-key")
        if key:
            return key
        auth = request.header("authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None

    def _status(self, request: Request, *, as_json: bool) -> Response:
        if request.method.upper() not in ("GET", "HEAD"):
            raise NotFoundError("the status page answers GET only")
        key = authenticate(self.keys, self._presented_key(request), request.remote_addr)
        require(key, "view_status")
        document = status_document(self.backend, self.health(), mailboxes=self.mailboxes, recent=self.recent)
        if as_json:
            body = json.dumps(document, ensure_ascii=False).encode("utf-8")
            content_type = "application/json"
        else:
            body = render_status_html(document).encode("utf-8")
            content_type = "text/html; charset=utf-8"
        headers: tuple[tuple[str, str], ...] = (
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
        )
        return Response(200, headers, b"" if request.method.upper() == "HEAD" else body)
