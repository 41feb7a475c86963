"""An ASGI 3 application around `ApiHandler`. No framework.

The handler is synchronous (it talks to SQLite), so it runs in a worker thread
(`asyncio.to_thread()`) and never blocks the event loop. The body is not collected up front: the
handler gets a reader whose `read(n)` pulls `http.request` events from the loop on demand
(`asyncio.run_coroutine_threadsafe()`). So the handler's order of checks holds under ASGI exactly as under
WSGI: route, method, API key and a declared `content-length` are checked before a single body byte is
received, and an undeclared (chunked) body is pulled only up to one byte past the limit.

Routing uses `path` minus `root_path`, so the same app works mounted under a prefix (Starlette's
`Mount`, FastAPI's `app.mount`). `lifespan` events are acknowledged, so servers such as uvicorn start
cleanly with the app alone. A client that disconnects mid-body gets nothing sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ticketmail.api.handler import Request, Response

__all__ = ["make_asgi_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientDisconnected(OSError):
    """The client went away while its body was being read."""


class _BodyReader:
    """`read(n)` for the worker thread, pulling `http.request` events from the event loop."""

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop) -> None:
        self._receive = receive
        self._loop = loop
        self._buffer = bytearray()
        self._more = True
        self.disconnected = False

    async def _next(self) -> Message:
        return await self._receive()

    def read(self, size: int, /) -> bytes:
        while len(self._buffer) < size and self._more:
            message: Message = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self._more = False
                raise ClientDisconnected("the client disconnected before sending the whole body")
            self._buffer += bytes(message.get("body", b""))
            self._more = bool(message.get("more_body", False))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def make_asgi_app(handler: Callable[[Request], Response]) -> ASGIApp:
    """An ASGI 3 application calling `handler` (usually an `ApiHandler`)."""

    async def lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(f"ticketmail's API app only speaks http, not {scope['type']!r}")
        headers = [
            (bytes(k).decode("latin-1").lower(), bytes(v).decode("utf-8", "replace")) for k, v in scope["headers"]
        ]
        method = str(scope.get("method", "GET"))
        path = str(scope.get("path", "/"))
        root = str(scope.get("root_path", "") or "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        client = scope.get("client")
        body = _BodyReader(receive, asyncio.get_running_loop())
        request = Request(
            method=method, path=path, headers=headers, body=body, remote_addr=str(client[0]) if client else ""
        )
        response = await asyncio.to_thread(handler, request)
        if body.disconnected:
            return
        out_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        out_headers.append((b"content-length", str(len(response.body)).encode("ascii")))
        try:
            await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
            await send(
                {
                    "type": "http.response.body",
                    "body": b"" if method.upper() == "HEAD" else response.body,
                    "more_body": False,
                }
            )
        except OSError:  # the server reports a client gone meanwhile (ASGI spec: an OSError subclass)
            return

    return app
