"""osTicket's HTTP ticket API as a pure function from `Request` to `Response`.

No web framework and no socket here (the h11 idea): the WSGI and ASGI adapters and the small server
translate to and from these values, and any application can call `ApiHandler` from its own views.

The contract, as osTicket documents it (`setup/doc/api/tickets.md`):

* `POST /api/tickets.json` and `POST /api/tickets.xml` create a ticket from a JSON or XML payload;
  `POST /api/tickets.email` takes one raw RFC 5322 message. The key goes in `X-API-Key`.
* Success is `201 Created` with the external ticket number as the whole body.
* Failure is "an appropriate HTTP status with the content being the error description". The body is plain
  text, as in osTicket; a client that prefers `application/json` (`Accept`) gets
  `{"error": {"code", "status", "message", "field"}}` instead.

Order of checks, each cheaper than the next, so an anonymous client cannot make us read a body:
route (404) -> method (405 with `Allow`, RFC 9110 section 15.5.6) -> key and address (401) ->
permission (403) -> declared `Content-Length` (413 before reading anything, RFC 9110 section 15.5.14) ->
`Content-Type` (415) -> bounded read (413) -> parse (400/413/415/422) -> pipeline.

Retries are safe: a raw email is processed under provenance `api`/`sha256(body)`, so posting the same
bytes again finds the ledger entry and answers with the same ticket number; JSON and XML requests may carry
an `Idempotency-Key` header (scoped to the API key) for the same effect.

No client input produces a 500: every failure of the caller's bytes is a
`TicketmailError` with a 4xx status, and an unexpected exception inside a parser
is logged as a bug and answered with 400. Storage failures answer 503 with `Retry-After`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from ticketmail.api._http import REASONS, BodyReader, Request, Response
from ticketmail.api.keys import ApiKey, ApiKeyStore, Permission, authenticate, require
from ticketmail.errors import (
    BackendError,
    InputError,
    InvalidValueError,
    NotFoundError,
    PayloadTooLargeError,
    SourceError,
    TicketmailError,
    UnsupportedContentTypeError,
)
from ticketmail.model import MailboxContext, Provenance, TicketRequest
from ticketmail.pipeline import Outcome

__all__ = [
    "DEFAULT_MAX_BODY",
    "ApiHandler",
    "BodyReader",
    "IncompleteBodyError",
    "LengthRequiredError",
    "MethodNotAllowedError",
    "Request",
    "Response",
    "TicketPipeline",
]

log = logging.getLogger("ticketmail.api")

DEFAULT_MAX_BODY = 10 * 1024 * 1024
"""Default request body limit in bytes (10 MiB): room for a message with a few attachments."""

PayloadFormat = Literal["json", "xml"]

# Content types accepted per format. Absent is fine (osTicket decides by the URL's extension, and so do
# we); so are the types legacy clients send without thinking (curl -d, PHP's CURLOPT_POSTFIELDS string).
_LENIENT = frozenset({"", "text/plain", "application/octet-stream", "application/x-www-form-urlencoded"})
_JSON_TYPES = frozenset({"application/json", "text/json"})
_XML_TYPES = frozenset({"application/xml", "text/xml"})
_EMAIL_TYPES = frozenset({"message/rfc822", "application/mbox", "text/rfc822-headers"})
_LENGTH_RE = re.compile(r"[0-9]{1,18}")  # ASCII digits only (str.isdigit takes "٣"), and no 5000-digit ints
_IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")


class MethodNotAllowedError(TicketmailError):
    """The route exists but does not take this method (HTTP 405); `allow` is the `Allow` header value."""

    code = "method_not_allowed"
    allow = "POST"
    status = 405


class LengthRequiredError(InputError):
    """The body is chunked but the server cannot decode it, so its length is unknown (HTTP 411)."""

    code = "length_required"
    status = 411


class IncompleteBodyError(InputError):
    """The body ended before the declared `Content-Length` or could not be read."""

    code = "incomplete_body"


class _CronRun(Protocol):
    """One mailbox of a cron report (`ticketmail.sources.poller.MailboxRun`)."""

    @property
    def name(self) -> str:
        """The mailbox."""

    @property
    def status(self) -> str:
        """`ok`, `busy`, `error` or `disabled`."""


@runtime_checkable
class _CronStatus(Protocol):
    """What a cron callable may return to have a failure answered 502."""

    @property
    def ok(self) -> bool:
        """Whether every mailbox was fetched."""


@runtime_checkable
class _CronReport(_CronStatus, Protocol):
    """A cron result that also names its mailboxes (`ticketmail.sources.poller.PollReport`)."""

    @property
    def runs(self) -> Sequence[_CronRun]:
        """One entry per mailbox."""


@runtime_checkable
class TicketPipeline(Protocol):
    """What the handler needs of `ticketmail.pipeline.Pipeline`."""

    def process_request(
        self, request: TicketRequest, *, context: MailboxContext | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        """Process one API ticket request."""

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        """Process one raw message."""


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _wants_json(accept: str | None) -> bool:
    """Whether `Accept` prefers JSON over plain text (RFC 9110 section 12.5.1, q-values honoured)."""
    if not accept:
        return False
    best_json = best_text = 0.0
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        q = 1.0
        for param in fields[1:]:
            name, _, val = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        if media == "application/json" or media.endswith("+json"):
            best_json = max(best_json, q)
        elif media in ("text/plain", "text/*", "*/*"):
            best_text = max(best_text, q)
    return best_json > 0 and best_json >= best_text


def _default_parser(options: Mapping[str, Any]) -> Callable[[bytes, PayloadFormat], TicketRequest]:
    """`ticketmail.parsing`'s JSON and XML parsers, with `options` (form, limits, ...) passed on."""

    def parse(body: bytes, fmt: PayloadFormat) -> TicketRequest:
        try:
            if fmt == "json":
                from ticketmail.parsing.json import parse_json as func
            else:
                from ticketmail.parsing.xml import parse_xml as func
        except ImportError as exc:  # an installation problem, not the client's
            raise TicketmailError(f"the {fmt.upper()} parser is not available: {exc}") from exc
        return func(body, **options)

    return parse


_Route = Literal["json", "xml", "email", "cron"]
_ROUTE_PERMISSION: dict[_Route, Permission] = {
    "json": "create_tickets",
    "xml": "create_tickets",
    "email": "submit_email",
    "cron": "run_cron",
}


class ApiHandler:
    """osTicket's ticket API over a `ticketmail.pipeline.Pipeline`, with API keys.

    Args:
        pipeline: Processes the parsed requests and raw emails.
        keys: Where API keys are looked up.
        cron: Runs one fetch cycle for `POST /api/tasks/cron` (e.g. `poller.poll_once`); without it
            that route answers 404.
        max_body: Request body limit in bytes, enforced before the body is read.
        context: The `MailboxContext` API messages are processed in (its name is
            the provenance mailbox of raw emails; default `"api"`).
        prefix: Where the routes live, relative to the mount point (default `"/api"`).
        parse: `parse(body, "json" | "xml") -> TicketRequest`; default `ticketmail.parsing`'s
            `parse_json`/`parse_xml`.
        parse_options: Keyword options for the default parsers (`form`, `limits`,
            `ignore_unknown_fields`, ...).
        logger: Where parser bugs and server errors are logged.
    """

    def __init__(
        self,
        pipeline: TicketPipeline,
        keys: ApiKeyStore,
        *,
        cron: Callable[[], object] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        context: MailboxContext | None = None,
        prefix: str = "/api",
        parse: Callable[[bytes, PayloadFormat], TicketRequest] | None = None,
        parse_options: Mapping[str, Any] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_body < 0:
            raise InvalidValueError(f"max_body must be >= 0, got {max_body}", field="max_body")
        self.pipeline = pipeline
        self.keys = keys
        self.cron = cron
        self.max_body = max_body
        self.context = context or MailboxContext(name="api")
        self.parse = parse or _default_parser(dict(parse_options or {}))
        self.log = logger or log
        base = prefix.rstrip("/")
        self._routes: dict[str, _Route] = {
            f"{base}/tickets.json": "json",
            f"{base}/tickets.xml": "xml",
            f"{base}/tickets.email": "email",
            f"{base}/tasks/cron": "cron",
        }

    def __call__(self, request: Request) -> Response:
        """Handle one request. Never raises."""
        return self.handle(request)

    def handle(self, request: Request) -> Response:
        """Handle one request and return the response. Never raises."""
        wants_json = _wants_json(request.header("accept"))
        try:
            return self._handle(request)
        except TicketmailError as exc:
            if exc.status >= 500 and not isinstance(exc, SourceError):
                self.log.error("api: server-side error %s: %s", exc.code, exc.message)
            return self.error_response(exc, json_body=wants_json)
        except Exception:
            self.log.exception("api: unexpected error handling %s %s", request.method, _safe_path(request.path))
            return self.error_response(TicketmailError("unexpected error"), json_body=wants_json)

    def _handle(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        route = self._routes.get(path)
        if route is None or (route == "cron" and self.cron is None):
            raise NotFoundError(f"no such API endpoint: {_safe_path(path)}")
        method = request.method.upper()
        # The cron task also takes GET: osTicket's api/cron.php is triggered by `wget`, which cannot POST.
        allowed = ("GET", "POST") if route == "cron" else ("POST",)
        if method not in allowed:
            error = MethodNotAllowedError(
                f"{_safe_path(path)} accepts only {' or '.join(allowed)}, not {_safe_path(method)[:20]}"
            )
            error.allow = ", ".join(allowed)
            raise error
        key = authenticate(self.keys, request.header("x-api-key"), request.remote_addr)
        require(key, _ROUTE_PERMISSION[route])
        if route == "cron":
            return self._cron()
        self._check_content_type(route, request.header("content-type"))
        body = self._read_body(request)
        if route == "email":
            return self._email(body)
        return self._ticket(route, body, key, request.header("idempotency-key"))

    # -- steps -------------------------------------------------------------------------------------------

    def _check_content_type(self, route: _Route, value: str | None) -> None:
        media = _media_type(value)
        if route == "json":
            ok = media in _JSON_TYPES or media.endswith("+json") or media in _LENIENT
            expected = "application/json"
        elif route == "xml":
            ok = media in _XML_TYPES or media.endswith("+xml") or media in _LENIENT
            expected = "application/xml or text/xml"
        else:
            ok = media in _EMAIL_TYPES or media in _LENIENT
            expected = "message/rfc822"
        if not ok:
            raise UnsupportedContentTypeError(
                f"this endpoint takes {expected}, got Content-Type {_safe_path(media)[:80]!r}", field="Content-Type"
            )

    def _read_body(self, request: Request) -> bytes:
        limit = self.max_body
        too_large = f"request body is larger than the limit of {limit} bytes"
        declared_text = request.header("content-length")
        declared: int | None = None
        if declared_text is not None:
            if not _LENGTH_RE.fullmatch(declared_text.strip()):
                raise InvalidValueError(
                    f"Content-Length must be a non-negative integer, got {declared_text[:40]!r}",
                    field="Content-Length",
                )
            declared = int(declared_text.strip())
            if declared > limit:
                raise PayloadTooLargeError(f"{too_large} (Content-Length: {declared})", field="body")
        body = request.body
        if isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
            if len(data) > limit:
                raise PayloadTooLargeError(too_large, field="body")
            return data
        want = declared if declared is not None else limit + 1
        chunks: list[bytes] = []
        got = 0
        while got < want:
            try:
                chunk = body.read(min(65536, want - got))
            except (OSError, ValueError) as exc:
                raise IncompleteBodyError(f"could not read the request body: {exc}", field="body") from exc
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            raise PayloadTooLargeError(too_large, field="body")
        if declared is not None and got < declared:
            raise IncompleteBodyError(
                f"request body ended after {got} of the {declared} bytes Content-Length announced", field="body"
            )
        return b"".join(chunks)

    def _parse(self, fmt: PayloadFormat, body: bytes) -> TicketRequest:
        try:
            return self.parse(body, fmt)
        except TicketmailError:
            raise
        except Exception as exc:
            # A parser must only raise TicketmailError; anything else is its bug, but the bytes were the
            # client's, so the client gets a 400 and the bug goes to the log.
            self.log.exception("api: the %s parser raised %s (a parser bug)", fmt, type(exc).__name__)
            raise InputError(f"the {fmt.upper()} payload could not be parsed", field="body") from exc

    def _ticket(self, fmt: PayloadFormat, body: bytes, key: ApiKey, idempotency: str | None) -> Response:
        ticket_request = self._parse(fmt, body)
        idem = None
        if idempotency is not None:
            if not _IDEMPOTENCY_RE.match(idempotency):
                raise InvalidValueError(
                    "Idempotency-Key must be 1 to 200 visible ASCII characters", field="Idempotency-Key"
                )
            idem = f"api:{key.key_id}:{idempotency}"
        outcome = self.pipeline.process_request(ticket_request, context=self.context, idempotency_key=idem)
        return self._outcome_response(outcome)

    def _email(self, body: bytes) -> Response:
        if not body.strip():
            raise InputError("the request body is empty; expected a raw RFC 5322 message", field="body")
        provenance = Provenance(mailbox=self.context.name, kind="api", key=hashlib.sha256(body).hexdigest())
        outcome = self.pipeline.process_email(body, provenance=provenance, context=self.context)
        return self._outcome_response(outcome)

    def _cron(self) -> Response:
        """Run one fetch cycle: 200 `Completed`, or 502 `source_error` when any mailbox failed.

        A failure must be visible to the caller (`curl -f`, `wget` exit status, a monitoring probe), so
        it is an error status, naming the failed mailboxes; the details (stage, server reply) are in the
        health state (`ticketmail status`) and the log, not in the response.
        """
        assert self.cron is not None  # noqa: S101 - checked by the router
        result = self.cron()
        if isinstance(result, _CronStatus) and not result.ok:
            runs = result.runs if isinstance(result, _CronReport) else ()
            failed = [run.name for run in runs if run.status == "error"]
            total = len(runs)
            names = ", ".join(failed[:20]) + (", ..." if len(failed) > 20 else "")
            what = f"{len(failed)} of {total} mailboxes failed: {names}" if failed else "a mailbox failed"
            raise SourceError(f"cron completed with errors ({what}); see `ticketmail status`", stage="cron")
        return _text(200, "Completed")

    def _outcome_response(self, outcome: Outcome) -> Response:
        action_header = ("X-Ticketmail-Action", outcome.action)
        if outcome.action in ("created", "appended", "duplicate") and outcome.ticket:
            # A retried POST (duplicate) gets the same 201 and number, so a client's retry loop terminates.
            return _text(201, outcome.ticket, extra=(action_header,))
        if outcome.action in ("ignored", "duplicate"):
            # Accepted and recorded on purpose without a ticket (a filter, an automatic reply, ...); the body
            # says why, one reason per line ("code: message"), so the sender's integration can log it.
            why = "".join(f"{r.code}: {r.message}\n" for r in outcome.reasons)
            extra: list[tuple[str, str]] = [action_header]
            if outcome.reasons:
                extra.append(("X-Ticketmail-Reason", outcome.reasons[-1].code))
            return _text(202, why, extra=tuple(extra))
        if outcome.error is not None:
            raise outcome.error
        raise InputError(f"the message was {outcome.action} and no ticket was created")

    # -- responses ---------------------------------------------------------------------------------------

    @staticmethod
    def error_response(error: TicketmailError, *, json_body: bool = False) -> Response:
        """The response for `error`: its status, plain text or `{"error": {...}}` JSON."""
        status = error.status if error.status in REASONS else (400 if 400 <= error.status < 500 else 500)
        extra: list[tuple[str, str]] = [("X-Ticketmail-Error", error.code)]
        if isinstance(error, MethodNotAllowedError):
            extra.append(("Allow", error.allow))
        if status == 401:
            extra.append(("WWW-Authenticate", 'APIKey header="X-API-Key"'))
        if error.retryable and status in (429, 502, 503):
            extra.append(("Retry-After", "30"))
        if isinstance(error, BackendError) and error.retryable:
            # Storage details (paths, driver messages) are for the log; the client only needs to retry.
            error = BackendError("the ticket store is unavailable; retry later")
        elif status >= 500 and not isinstance(error, SourceError):
            # A server-side failure: the details are in the log, not for the client.
            error = TicketmailError("internal server error; the failure has been logged")
            status = 500
        if json_body:
            data = error.to_dict()
            data["status"] = status
            body = json.dumps({"error": data}, ensure_ascii=False).encode("utf-8")
            return Response(status, (("Content-Type", "application/json"), *extra), body)
        return _text(status, str(error), extra=tuple(extra))


def _text(status: int, text: str, *, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    body = text.encode("utf-8")
    return Response(status, (("Content-Type", "text/plain; charset=utf-8"), *extra), body)


def _safe_path(path: str) -> str:
    """A path fit for a message or a log line: printable, bounded."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in path)
    return cleaned[:200]
