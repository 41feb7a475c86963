"""A WSGI (PEP 3333) application around `ApiHandler`. Stdlib only.

The body is never read past `CONTENT_LENGTH`: PEP 3333 says a server may block, or hand over the next
request's bytes, when an application reads more than the declared length. Without `CONTENT_LENGTH` the
body is read only when the server sets `wsgi.input_terminated` (it then ends the stream itself), and
then at most one byte past the handler's limit. Either way the handler's size limit is enforced before
the whole body is read.

Routing uses `PATH_INFO`, i.e. paths relative to where the app is mounted (`SCRIPT_NAME`), so the same
app serves `/api/tickets.json` at the root or `/helpdesk/api/tickets.json` under a dispatcher.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import IO, Any

from ticketmail.api.handler import ApiHandler, LengthRequiredError, Request, Response

__all__ = ["make_wsgi_app", "request_from_environ"]

_LENGTH_RE = re.compile(r"[0-9]{1,18}")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _BoundedInput:
    """`wsgi.input` limited to `remaining` bytes (`None`: read until the server ends the stream)."""

    def __init__(self, stream: IO[bytes], remaining: int | None) -> None:
        self._stream = stream
        self._remaining = remaining

    def read(self, size: int, /) -> bytes:
        if self._remaining is not None:
            size = min(size, self._remaining)
            if size <= 0:
                return b""
        data = self._stream.read(size)
        if self._remaining is not None:
            self._remaining -= len(data)
        return data


def _wsgi_str(value: str) -> str:
    """PEP 3333 "bytes-as-str" (latin-1) back to text (UTF-8, invalid bytes replaced)."""
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return value


def request_from_environ(environ: dict[str, Any]) -> Request:
    """Build a `Request` from a WSGI environ (body as a bounded reader, not read yet)."""
    headers: list[tuple[str, str]] = []
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            headers.append((name[5:].replace("_", "-").lower(), str(value)))
    content_type = environ.get("CONTENT_TYPE")
    if content_type:
        headers.append(("content-type", str(content_type)))
    length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
    if length_text:
        headers.append(("content-length", length_text))
    stream = environ.get("wsgi.input")
    remaining: int | None
    if _LENGTH_RE.fullmatch(length_text):
        remaining = int(length_text)
    elif environ.get("wsgi.input_terminated"):
        remaining = None
    else:
        remaining = 0
    body = _BoundedInput(stream, remaining) if stream is not None else b""
    return Request(
        method=str(environ.get("REQUEST_METHOD", "GET")),
        path=_wsgi_str(str(environ.get("PATH_INFO", "") or "/")),
        headers=headers,
        body=body,
        remote_addr=str(environ.get("REMOTE_ADDR", "")),
    )


def make_wsgi_app(handler: Callable[[Request], Response]) -> WSGIApp:
    """A WSGI application calling `handler` (usually an `ApiHandler`).

    Example (Flask, mounting the API under `/helpdesk`)::

        from werkzeug.middleware.dispatcher import DispatcherMiddleware
        app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/helpdesk": make_wsgi_app(api)})
    """

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = request_from_environ(environ)
        chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
        if chunked and not environ.get("CONTENT_LENGTH") and not environ.get("wsgi.input_terminated"):
            # The server hands us a chunked body it did not decode (wsgiref does that): refuse rather than
            # read an unbounded, undelimited stream (RFC 9110 section 15.5.12).
            wants_json = "json" in str(environ.get("HTTP_ACCEPT", ""))
            response = ApiHandler.error_response(
                LengthRequiredError("this server needs a Content-Length; send the body unchunked"), json_body=wants_json
            )
        else:
            response = handler(request)
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        start_response(response.status_line, headers)
        if environ.get("REQUEST_METHOD", "").upper() == "HEAD":
            return [b""]
        return [response.body]

    return app
