"""A small threaded HTTP server for the API: ``ticketmail serve``, for people who just want it running.

Built on :mod:`wsgiref` with :class:`socketserver.ThreadingMixIn`: stdlib only, one thread per
connection, a socket timeout so a slow client cannot hold a thread forever. It logs one line per request
(method, path, status, duration, remote address) and never the API key or the query string. For heavy
traffic, mount :func:`~ticketmail.api.wsgi.make_wsgi_app` in gunicorn or uWSGI instead.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ticketmail.api.handler import Request, Response
from ticketmail.api.wsgi import StartResponse, make_wsgi_app

__all__ = ["ApiServer", "make_api_server", "serve"]

log = logging.getLogger("ticketmail.api.access")


class ApiServer(socketserver.ThreadingMixIn, WSGIServer):
    """A WSGI server handling each connection in its own daemon thread."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's request handler with a socket timeout, a lingering close, and no stderr access log."""

    timeout = 30
    linger_seconds = 2.0
    linger_bytes = 64 * 1024 * 1024

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


def make_api_server(
    handler: Callable[[Request], Response],
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    logger: logging.Logger | None = None,
) -> ApiServer:
    """Bind a threaded server for ``handler`` (port 0 picks a free port: see ``server.server_port``)."""
    app = _logged(make_wsgi_app(handler), logger or log)
    server = make_server(host, port, app, server_class=ApiServer, handler_class=_QuietHandler)
    assert isinstance(server, ApiServer)  # noqa: S101 - make_server returns server_class
    return server


def serve(
    handler: Callable[[Request], Response],
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    logger: logging.Logger | None = None,
    ready: Callable[[ApiServer], None] | None = None,
) -> None:
    """Serve ``handler`` until interrupted (``KeyboardInterrupt``/``SystemExit``), then close the socket.

    ``ready`` is called with the bound server before serving starts (e.g. to print the address).
    """
    server = make_api_server(handler, host, port, logger=logger)
    try:
        if ready is not None:
            ready(server)
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
