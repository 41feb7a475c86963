"""osTicket's HTTP ticket API: a framework-free handler, API keys, WSGI/ASGI adapters and a small server.

* `ticketmail.api.handler`: `ApiHandler`, `Request`, `Response`.
* `ticketmail.api.keys`: API keys bound to client networks, with permissions, stored hashed.
* `ticketmail.api.wsgi` / `ticketmail.api.asgi`: adapters to mount in any web framework.
* `ticketmail.api.server`: `ticketmail serve`'s threaded stdlib server.
"""

from __future__ import annotations

from ticketmail.api.asgi import make_asgi_app
from ticketmail.api.handler import (
    DEFAULT_MAX_BODY,
    ApiHandler,
    BodyReader,
    IncompleteBodyError,
    LengthRequiredError,
    MethodNotAllowedError,
    Request,
    Response,
    TicketPipeline,
)
from ticketmail.api.keys import (
    PERMISSIONS,
    ApiKey,
    ApiKeyError,
    ApiKeyStore,
    InMemoryKeyStore,
    IssuedKey,
    PermissionDeniedError,
    SQLiteKeyStore,
    UnknownKeyError,
    authenticate,
    issue_key,
)
from ticketmail.api.server import make_api_server, serve
from ticketmail.api.wsgi import make_wsgi_app

__all__ = [
    "DEFAULT_MAX_BODY",
    "PERMISSIONS",
    "ApiHandler",
    "ApiKey",
    "ApiKeyError",
    "ApiKeyStore",
    "BodyReader",
    "InMemoryKeyStore",
    "IncompleteBodyError",
    "IssuedKey",
    "LengthRequiredError",
    "MethodNotAllowedError",
    "PermissionDeniedError",
    "Request",
    "Response",
    "SQLiteKeyStore",
    "TicketPipeline",
    "UnknownKeyError",
    "authenticate",
    "issue_key",
    "make_api_server",
    "make_asgi_app",
    "make_wsgi_app",
    "serve",
]
