"""A small threaded HTTP server for the API: `ticketmail serve`, for people who just want it running.

Built on `wsgiref` with `socketserver.ThreadingMixIn`: stdlib only, one thread per
connection, one request per connection. It logs one line per request (method, path, status, duration,
remote address) and never the API key or the query string.

Limits, so that a slow or greedy client cannot take the server down:

* **One deadline for reading a request** (`request_timeout`, 30 s by default): the request line, the
  headers and the body must all arrive within it, however the client spreads its bytes (a "slowloris"
  client sending one byte every few seconds is cut off at the deadline, not kept alive by each byte). A
  header read that runs out closes the connection; a body read that runs out is answered 400.
* **A cap on concurrent connections** (`max_connections`, 64 by default): one more is answered
  `503 Service Unavailable` with `Retry-After` at once, without a thread. When the process runs out of
  file descriptors (`EMFILE`), accepting pauses briefly instead of spinning.

For heavy traffic, many slow clients (uploads over slow links), TLS, or more than one process, mount
`make_wsgi_app()` in gunicorn or uWSGI (or `ticketmail.api.asgi` in
uvicorn), behind a reverse proxy such as nginx that buffers request bodies (see `docs/api.md`).
"""

from __future__ import annotations

import errno
import io
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import attrs

from ticketmail._validators import at_least, positive
from ticketmail.api.handler import Request, Response
from ticketmail.api.wsgi import StartResponse, make_wsgi_app

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_REQUEST_TIMEOUT",
    "ApiServer",
    "ServerLimits",
    "make_api_server",
    "serve",
]

log = logging.getLogger("ticketmail.api.access")


DEFAULT_MAX_CONNECTIONS = 64
"""Concurrent connections `make_api_server()` serves by default; one more is answered 503."""
DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds a client has, by default, to send a whole request (request line, headers and body)."""

_BUSY_BODY = (
    b'{"error": {"code": "server_busy", "status": 503, "message": "too many connections; retry later", "field": null}}'
)
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)
_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ApiServer(socketserver.ThreadingMixIn, WSGIServer):
    """A WSGI server handling each connection in its own daemon thread, at most `max_connections` at once.

    Attributes:
        max_connections: Connections served at once; one more is answered 503 without a thread.
        request_timeout: Seconds a client has to send its whole request (headers and body).
        rejected: How many connections were answered 503 since the server started.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    max_connections = DEFAULT_MAX_CONNECTIONS
    request_timeout = DEFAULT_REQUEST_TIMEOUT
    accept_pause = 0.1
    """Seconds accepting pauses when the process is out of file descriptors (instead of spinning)."""

    def server_activate(self) -> None:
        """Listen, and set up the connection counter."""
        super().server_activate()
        self._active = 0
        self._active_lock = threading.Lock()
        self.rejected = 0

    @property
    def active_connections(self) -> int:
        """Connections being served now."""
        return self._active

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection; out of file descriptors, pause a moment so the loop does not spin."""
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in _OUT_OF_FILES:
                log.warning("out of file descriptors (%s); pausing accept for %.1fs", exc.strerror, self.accept_pause)
                time.sleep(self.accept_pause)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread, or answer 503 at once when `max_connections` are busy."""
        with self._active_lock:
            busy = self._active >= self.max_connections
            if not busy:
                self._active += 1
        if busy:
            self.rejected += 1
            _answer_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: give the slot back
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection (in its thread), then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._active_lock:
            self._active -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log an unexpected error of one connection (not a traceback on stderr)."""
        log.exception("error while serving a connection from %s", client_address[0] if client_address else "?")


def _answer_busy(sock: socket.socket) -> None:
    """Send the 503 without blocking the accept loop, and read what already arrived so close sends no reset."""
    try:
        sock.setblocking(False)
        sock.send(_BUSY_RESPONSE)
        sock.shutdown(socket.SHUT_WR)
        for _ in range(4):
            if not sock.recv(65536):
                break
    except OSError:
        pass


class _DeadlineReader(io.RawIOBase):
    """The socket's reading side with one deadline for everything read through it (not one per `recv`)."""

    def __init__(self, sock: socket.socket, deadline: float, idle_timeout: float | None) -> None:
        self._sock = sock
        self._deadline = deadline
        self._idle_timeout = idle_timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request was not received within the server's request deadline")
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self._idle_timeout)  # writes keep the ordinary socket timeout


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's request handler with a request deadline, a lingering close, and no stderr access log."""

    timeout = 30
    linger_seconds = 2.0
    linger_bytes = 64 * 1024 * 1024

    def setup(self) -> None:
        """Read the request through a reader with one deadline for the request line, headers and body."""
        super().setup()
        limit = self.server.request_timeout if isinstance(self.server, ApiServer) else DEFAULT_REQUEST_TIMEOUT
        reader = _DeadlineReader(self.connection, time.monotonic() + limit, self.timeout)
        plain, self.rfile = self.rfile, io.BufferedReader(reader, 65536)
        plain.close()  # releases its reference to the socket (the socket itself stays open)

    def handle(self) -> None:
        """Handle one request; a client too slow to send its request line and headers is just closed."""
        try:
            super().handle()
        except TimeoutError:
            log.info("%s did not send its request in time; connection closed", self.address_string())
            self.close_connection = True
        except (ConnectionError, OSError) as exc:
            log.info("%s: connection failed while reading the request (%s)", self.address_string(), exc)
            self.close_connection = True

    def finish(self) -> None:
        """Send the response, then drain a body the app refused to read before closing.

        When the app answers early (413, 401) without reading the body, closing a socket with unread data
        makes the kernel send a TCP reset, which can destroy the response before the client reads it.
        Like Apache's lingering close, half-close our side and discard what the client still sends, for
        a bounded time and amount, so the client sees the response.
        """
        super().finish()
        sock = self.connection
        try:
            # Not conditional on data being readable now: the rest of the body may still be in flight.
            # A client that read its response closes at once, so this usually ends with an immediate EOF.
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(0.5)
            deadline = time.monotonic() + self.linger_seconds
            drained = 0
            while time.monotonic() < deadline and drained < self.linger_bytes:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Access lines come from the app wrapper (with timing); wsgiref's are dropped."""

    def log_message(self, format: str, *args: Any) -> None:
        """Route wsgiref's messages (bad request lines, timeouts) to logging."""
        log.warning("%s %s", self.address_string(), format % args)


def _logged(app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]], logger: logging.Logger) -> Any:
    def wrapper(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start = time.perf_counter()
        status: list[str] = ["500"]

        def recording_start(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info) if exc_info else start_response(status_line, headers)

        result = app(environ, recording_start)
        elapsed = (time.perf_counter() - start) * 1000
        path = "".join(c if c.isprintable() else "?" for c in str(environ.get("PATH_INFO", "")))[:200]
        logger.info(
            "%s %s %s %.1fms %s",
            environ.get("REQUEST_METHOD", "-"),
            path,
            status[0],
            elapsed,
            environ.get("REMOTE_ADDR"),
        )
        return result

    return wrapper


@attrs.frozen
class ServerLimits:
    """The limits of the embedded server, checked when it is made.

    Attributes:
        max_connections: Connections served at once (at least 1).
        request_timeout: Seconds a client has to send its whole request (more than 0).
    """

    max_connections: int = attrs.field(default=DEFAULT_MAX_CONNECTIONS, validator=at_least(1))
    request_timeout: float = attrs.field(default=DEFAULT_REQUEST_TIMEOUT, validator=positive())


def make_api_server(
    handler: Callable[[Request], Response],
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    logger: logging.Logger | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> ApiServer:
    """Bind a threaded server for `handler` (port 0 picks a free port: see `server.server_port`).

    Args:
        handler: The API (usually an `ApiHandler`).
        host: The address to listen on.
        port: The port (0: a free one).
        logger: Where access lines go.
        max_connections: Connections served at once; one more is answered 503 at once.
        request_timeout: Seconds a client has to send its whole request (request line, headers, body).
    """
    limits = ServerLimits(max_connections, request_timeout)  # ConfigError naming the limit when out of range
    app = _logged(make_wsgi_app(handler), logger or log)
    server = make_server(host, port, app, server_class=ApiServer, handler_class=_QuietHandler)
    assert isinstance(server, ApiServer)  # noqa: S101 - make_server returns server_class
    server.max_connections = limits.max_connections
    server.request_timeout = limits.request_timeout
    return server


def serve(
    handler: Callable[[Request], Response],
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    logger: logging.Logger | None = None,
    ready: Callable[[ApiServer], None] | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> None:
    """Serve `handler` until interrupted (`KeyboardInterrupt`/`SystemExit`), then close the socket.

    `ready` is called with the bound server before serving starts (e.g. to print the address); the limits
    are those of `make_api_server()`.
    """
    server = make_api_server(
        handler, host, port, logger=logger, max_connections=max_connections, request_timeout=request_timeout
    )
    try:
        if ready is not None:
            ready(server)
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
