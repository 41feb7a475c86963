"""The HTTP values the API handler works on: `Request` and `Response`, independent of any server.

`ticketmail.api.handler` re-exports both (and `BodyReader`); the WSGI and ASGI adapters and the small
server translate to and from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["REASONS", "BodyReader", "Request", "Response"]

REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@runtime_checkable
class BodyReader(Protocol):
    """A file-like request body: `read(n)` returns at most `n` bytes, `b""` at the end."""

    def read(self, size: int, /) -> bytes:
        """Read at most `size` bytes."""


def _headers(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(k).lower(), str(v)) for k, v in items)


@attrs.frozen
class Request:
    """An HTTP request, as any server or framework can describe it.

    Attributes:
        method: The request method (any case).
        path: The path, relative to where the API is mounted; a query string is ignored.
        headers: Header (name, value) pairs or a mapping; names are lower-cased on construction.
        body: The body as bytes, or a reader the handler reads from (never more than the limit).
        remote_addr: The client's IP address as the server sees it (what API keys are bound to).
    """

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_headers)
    body: bytes | BodyReader = attrs.field(default=b"", repr=False)
    remote_addr: str = ""

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or `None`."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None


@attrs.frozen
class Response:
    """An HTTP response: status, headers (name, value pairs) and body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @property
    def reason(self) -> str:
        """The reason phrase for `status`."""
        return REASONS.get(self.status, "Unknown")

    @property
    def status_line(self) -> str:
        """`"201 Created"`, as WSGI's `start_response` wants it."""
        return f"{self.status} {self.reason}"

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or `None`."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8", "replace")
