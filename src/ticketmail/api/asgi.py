"""An ASGI 3 application around :class:`~ticketmail.api.handler.ApiHandler`. No framework.

The app receives the body in ``http.request`` events and stops at the handler's limit: a declared
``content-length`` over the limit is answered 413 before any body event is awaited, and an undeclared
(chunked) body is accumulated only up to one byte past the limit. The handler itself is synchronous (it
talks to SQLite), so it runs in a worker thread (:func:`asyncio.to_thread`) and never blocks the event
loop. ``lifespan`` events are acknowledged, so servers such as uvicorn start cleanly with the app alone.

Routing uses ``path`` minus ``root_path``: the same app works mounted under a prefix (Starlette's
``Mount``, FastAPI's ``app.mount``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ticketmail.api.handler import DEFAULT_MAX_BODY, ApiHandler, Request, Response
from ticketmail.errors import PayloadTooLargeError

__all__ = ["make_asgi_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def make_asgi_app(handler: Callable[[Request], Response], *, max_body: int | None = None) -> ASGIApp:
    """An ASGI 3 application calling ``handler`` in a worker thread.

    ``max_body`` defaults to the handler's own limit (``ApiHandler.max_body``), else 10 MiB.
    """
    limit = max_body if max_body is not None else getattr(handler, "max_body", DEFAULT_MAX_BODY)

    async def send_response(send: Send, response: Response, *, head: bool = False) -> None:
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        headers.append((b"content-length", str(len(response.body)).encode("ascii")))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else response.body, "more_body": False})

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
        remote = str(client[0]) if client else ""
        body = b""
        declared = next((v for k, v in headers if k == "content-length"), None)
        too_large = declared is not None and declared.strip().isdigit() and int(declared) > limit
        if method.upper() == "POST" and not too_large:
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = bytes(message.get("body", b""))
                size += len(chunk)
                if size > limit:
                    too_large = True
                    break
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
        request = Request(method=method, path=path, headers=headers, body=body, remote_addr=remote)
        if too_large:
            # Still let the handler check route, method and key first, then answer 413 without the body.
            probe = Request(
                method=method,
                path=path,
                headers=[(k, v) for k, v in headers if k != "content-length"] + [("content-length", str(limit + 1))],
                body=b"",
                remote_addr=remote,
            )
            response = await asyncio.to_thread(handler, probe)
            if response.status < 400:  # pragma: no cover - defensive: the handler always refuses the probe
                error = PayloadTooLargeError(f"request body is larger than the limit of {limit} bytes", field="body")
                response = ApiHandler.error_response(error)
        else:
            response = await asyncio.to_thread(handler, request)
        await send_response(send, response, head=method.upper() == "HEAD")

    return app
